"""Preference optimization: pair loading and validation, the trainer, the reference log-prob cache,
semi-online pair generation and the judges that score sampled responses."""
