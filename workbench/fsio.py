"""Atomic file and folder writes: a reader sees the old version or the new one, never half of one.

A killed process leaves at most a `*.partial` file or a `*.tmp` folder behind; nothing half-written is ever at the
final path, so nothing half-written is ever taken for done.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a sibling `.partial` file, fsync'd, then renamed over `path`."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, value: Any) -> None:
    """Pretty JSON with sorted keys, written atomically."""
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl_atomic(path: Path, rows: Iterable[Any]) -> None:
    """One JSON value per line, written atomically."""
    write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows))


def publish_folder(tmp: Path, final: Path) -> Path:
    """Move a finished temporary folder to `final`. An older `final` is first renamed aside, then removed, so at
    every moment `final` is either the old complete folder or the new one (never missing, never mixed)."""
    tmp, final = Path(tmp), Path(final)
    retired = None
    if final.exists():
        retired = final.with_name(f"{final.name}.old-{int(time.time() * 1000)}")
        os.rename(final, retired)
    os.rename(tmp, final)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)
    return final


def build_folder(final: Path, build: Callable[[Path], None]) -> Path:
    """Create `final` by calling `build(tmp)` on a fresh sibling `<name>.tmp` folder, then publishing it."""
    final = Path(final)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    return publish_folder(tmp, final)
