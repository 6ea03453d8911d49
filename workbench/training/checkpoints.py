"""Find the newest trainer checkpoint that was completely written."""

from __future__ import annotations

import json
import re
from pathlib import Path


def last_complete_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The Trainer writes `trainer_state.json` last, so a checkpoint is complete only if it parses."""
    if not checkpoint_dir.is_dir():
        return None
    found = []
    for child in checkpoint_dir.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    for _, child in sorted(found, reverse=True):
        try:
            json.loads((child / "trainer_state.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        return child
    return None
