"""workbench: declarative post-training and model merging for small language models."""

__version__ = "0.1.0"
