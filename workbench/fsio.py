"""Atomic file and folder writes: a reader sees the old version or the new one, never half of one.

A killed process leaves at most a `*.partial` file or a `*.tmp` folder behind; nothing half-written is ever at the
final path, so nothing half-written is ever taken for done.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: Path, per_process: bool = False) -> Iterator[Path]:
    """A sibling temporary path to write `path`'s new content to (by any writer: `torch.save`, `np.save`, a
    memory map); renamed over `path` when the block ends normally, removed when it raises.

    The temporary is `<name>.partial`, or `<name>.<pid>.partial` with `per_process` (when several processes may
    write the same file at once: the last rename wins, and each rename is of a whole file).
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.partial" if per_process else f"{path.name}.partial")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a sibling `.partial` file, fsync'd, then renamed over `path`."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, value: Any) -> None:
    """Pretty JSON with sorted keys, written atomically."""
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl_atomic(path: Path, rows: Iterable[Any]) -> None:
    """One JSON value per line, written atomically."""
    write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows))


def publish_folder(tmp: Path, final: Path) -> Path:
    """Move a finished temporary folder to `final`. An older `final` is first renamed aside, then removed, so
    `final` is never a mix of the two: it is the old complete folder, the new one, or (between the two renames)
    absent, which readers take as "not done". A kill in that moment leaves `<name>.old-*` beside it, which
    `remove_retired` clears."""
    tmp, final = Path(tmp), Path(final)
    retired = None
    if final.exists():
        retired = final.with_name(f"{final.name}.old-{int(time.time() * 1000)}")
        os.rename(final, retired)
    os.rename(tmp, final)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)
    return final


def remove_retired(final: Path) -> None:
    """Remove the `<name>.old-*` folders a killed `publish_folder` left beside `final`."""
    final = Path(final)
    for retired in final.parent.glob(f"{final.name}.old-*"):
        shutil.rmtree(retired, ignore_errors=True)


def publish_new_folder(tmp: Path, final: Path) -> bool:
    """Move a finished temporary folder to `final` unless `final` already exists: first writer wins. When another
    writer published `final` first, `tmp` is removed and False is returned; `final` is never replaced."""
    tmp, final = Path(tmp), Path(final)
    if not final.exists():
        try:
            os.rename(tmp, final)  # onto an existing non-empty folder this fails: never a mix of two writers
            return True
        except OSError:
            if not final.exists():
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    shutil.rmtree(tmp, ignore_errors=True)
    return False


def build_folder(final: Path, build: Callable[[Path], None]) -> Path:
    """Create `final` by calling `build(tmp)` on a fresh sibling `<name>.tmp` folder, then publishing it over any
    older `final`. When `build` raises, the temporary folder is removed and `final` is left as it was."""
    final = Path(final)
    tmp = final.with_name(final.name + ".tmp")
    _build_into(tmp, build)
    return publish_folder(tmp, final)


def build_new_folder(final: Path, build: Callable[[Path], None]) -> bool:
    """Create `final` with `build(tmp)` unless another writer creates it first (see `publish_new_folder`); the
    temporary folder is per process, so concurrent writers never share one. True when this call published."""
    final = Path(final)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    _build_into(tmp, build)
    return publish_new_folder(tmp, final)


def _build_into(tmp: Path, build: Callable[[Path], None]) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        build(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
