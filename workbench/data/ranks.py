"""Work split across the ranks of a distributed stage and gathered on the main process, through the stage's launch
folder (shared by every rank, on every node): no collective, so it works whatever set up the processes."""

from __future__ import annotations

import json
import time
from typing import Any

from workbench.api.context import StageContext
from workbench.errors import StageError
from workbench.fsio import write_text_atomic


def my_share(ctx: StageContext, count: int) -> range:
    """The indices of `count` work items this rank takes: every world_size-th from its rank (all on one process)."""
    return range(ctx.rank, count, ctx.world_size)


def gather_on_main(ctx: StageContext, name: str, part: Any, timeout: float = 6 * 3600) -> list[Any] | None:
    """Every rank's JSON-able `part`, in rank order, on the main process; None on the others (their work is done).
    A rank that dies takes the launch down with it, so waiting for its part ends there."""
    if ctx.world_size == 1:
        return [part]
    folder = ctx.tmp_dir / ".launch" / "gather" / name
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / f"{ctx.rank}.json", json.dumps(part))  # key order kept: the output is byte-identical
    if not ctx.is_main:
        return None
    started = time.time()
    paths = [folder / f"{rank}.json" for rank in range(ctx.world_size)]
    while not all(path.is_file() for path in paths):
        if time.time() - started > timeout:
            missing = [path.stem for path in paths if not path.is_file()]
            raise StageError(f"ranks {', '.join(missing)} did not hand in their '{name}' within {timeout:.0f}s")
        time.sleep(0.2)
    return [json.loads(path.read_text(encoding="utf-8")) for path in paths]
