"""Curriculum order (easy to hard) and per-block losses, which also score difficulty with a scorer model."""

from __future__ import annotations

import numpy as np


def curriculum_order(difficulty: np.ndarray, buckets: int, seed: int) -> np.ndarray:
    """Block indices from easy to hard: sorted by difficulty, cut into `buckets` consecutive buckets of equal
    size, each shuffled (seeded). One bucket is a plain shuffle; as many buckets as blocks is a strict sort."""
    order = np.argsort(difficulty, kind="stable")
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.permutation(part) for part in np.array_split(order, min(buckets, len(order)))])


def block_losses(model, blocks: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Mean next-token cross-entropy of `model` on each block (float64, one value per block)."""
    import torch
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    losses = []
    with torch.no_grad():
        for start in range(0, len(blocks), batch_size):
            # the model may sit on an accelerator (the Trainer moves it there)
            ids = torch.from_numpy(np.asarray(blocks[start : start + batch_size], dtype=np.int64)).to(model.device)
            logits = model(input_ids=ids).logits[:, :-1].float()
            token_loss = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
            losses.append(token_loss.mean(dim=1).double().cpu().numpy())
    model.train(was_training)
    return np.concatenate(losses)


def heldout_loss(model, blocks: np.ndarray, batch_size: int = 8) -> float:
    """Mean next-token cross-entropy over held-out blocks (all blocks have the same length)."""
    return float(block_losses(model, blocks, batch_size).mean())
