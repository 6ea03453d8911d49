"""Data loading and validation."""
