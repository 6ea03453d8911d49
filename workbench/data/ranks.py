"""Work split across the ranks of a distributed stage and gathered on the main process, through the stage's launch
folder (shared by every rank, on every node): no collective, so it works whatever set up the processes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
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
    paths = [folder / f"{rank}.json" for rank in range(ctx.world_size)]
    wait_until(lambda: all(path.is_file() for path in paths), f"every rank's '{name}'", timeout)
    return [json.loads(path.read_text(encoding="utf-8")) for path in paths]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 24 * 3600) -> None:
    """Poll the shared folder until `condition` holds; one line after `timeout`. Ranks hand work to each other
    through files, so no collective is needed (a rank that dies takes the whole launch down with it)."""
    started = time.time()
    while not condition():
        if time.time() - started > timeout:
            raise StageError(f"waited {timeout:.0f}s for {what}")
        time.sleep(0.2)
