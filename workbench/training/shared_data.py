"""Datasets every rank of a distributed stage reads from one folder.

A dataset built in memory has no cache files, so `datasets` names each map result with a random fingerprint in a
per-process temporary folder. trl computes some results on the main process and has the other ranks open them by
the name *they* compute (DPO's precomputed reference log-probs), which only matches when the dataset lives in a
folder every rank sees. One process: the in-memory dataset, as before.
"""

from __future__ import annotations

from typing import Any

from workbench.api.context import StageContext
from workbench.data.ranks import wait_until


def stage_dataset(ctx: StageContext, rows: list[dict[str, Any]], name: str, timeout: float = 600.0):
    """`rows` as a `datasets.Dataset`: in memory on one process; saved once by the main process into the stage's
    launch folder and opened from there by every rank when the stage runs distributed."""
    from datasets import Dataset, load_from_disk

    if ctx.world_size == 1:
        return Dataset.from_list(rows)
    folder = ctx.tmp_dir / ".launch" / "datasets" / name
    if ctx.is_main:
        partial = folder.with_name(folder.name + ".partial")
        Dataset.from_list(rows).save_to_disk(str(partial))
        partial.rename(folder)
    else:
        wait_until(folder.is_dir, f"the main process to write dataset '{name}'", timeout)
    return load_from_disk(str(folder))
