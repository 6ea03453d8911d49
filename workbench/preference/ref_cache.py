"""On-disk cache of reference-model log-probs, keyed by (reference model, tokenized dataset).

The reference model is frozen, so its per-pair log-probs depend only on its weights, the tokenized pairs
and how the collator truncates them. The cache lives in the recipe's work folder outside any stage's hash
folder, so a re-run, a resumed run or a sweep over beta (or any other loss setting) finds it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from workbench.fsio import atomic_path
from workbench.hashing import digest_json

TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")


def dataset_digest(dataset) -> str:
    """sha256 of the tokenized pairs, in order (the columns trl's collator reads)."""
    sha = hashlib.sha256()
    for start in range(0, len(dataset), 1024):
        batch = dataset.select_columns(list(TOKEN_COLUMNS))[start : start + 1024]
        sha.update(json.dumps([batch[c] for c in TOKEN_COLUMNS], separators=(",", ":")).encode())
    return sha.hexdigest()


@dataclass
class RefLogpCache:
    """`<root>/<key>.pt` holding the chosen and rejected reference log-probs of one dataset."""

    root: Path
    reference: str
    """Identity of the reference model: the digest of its folder (or its hub id)."""
    hits: list[str] = field(default_factory=list)
    """Names of the splits ('train', 'eval') found in the cache during this run."""
    misses: list[str] = field(default_factory=list)

    def key(self, dataset, settings: dict) -> str:
        """Cache key of a tokenized dataset under the collator / precision `settings` that change log-probs."""
        return digest_json({"reference": self.reference, "data": dataset_digest(dataset), **settings})[:32]

    def load(self, key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        path = self.root / f"{key}.pt"
        if not path.is_file():
            return None
        saved = torch.load(path, weights_only=True)
        return saved["chosen"], saved["rejected"]

    def save(self, key: str, chosen: torch.Tensor, rejected: torch.Tensor) -> Path:
        """Write atomically (a per-process temporary file, then a rename), so a killed run never leaves half an
        entry and two runs filling the same entry at once never mix theirs."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{key}.pt"
        with atomic_path(path, per_process=True) as partial:
            torch.save({"chosen": chosen.float().cpu(), "rejected": rejected.float().cpu()}, partial)
        return path
