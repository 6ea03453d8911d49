"""Execute a recipe's stage graph with caching, atomic outputs and MLflow tracking."""
