"""Pieces shared by the training stages: checkpoints, samples, chat datasets."""
