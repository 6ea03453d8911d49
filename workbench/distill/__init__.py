"""Pretraining and distillation pieces: tokenized corpus blocks, curriculum order, the teacher top-K cache, trainers."""
