"""A full disk while a stage writes: one line naming the folder, the space left and the space the stage needs.

Writers report a full disk in their own words: `OSError` errno 28 (Python, datasets), "file write failed"
(torch's zip writer), "StorageFull" (safetensors' Rust writer). Whichever it is, the stage's temporary folder is
left as it is (nothing is committed, so nothing is marked done) and the next run resumes from its last complete
checkpoint once space is freed.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from workbench.errors import WorkbenchError

_FULL_DISK_WORDS = ("no space left on device", "storagefull", "disk quota exceeded", "database or disk is full")
# torch's zip writer says only this; it is a full disk when the file system has (next to) nothing left
_WRITE_FAILED = "file write failed"
_NEARLY_FULL = 16 * 2**20
_WEIGHTS = (".safetensors", ".bin", ".pt", ".gguf")


class reported_disk_full:  # noqa: N801 (used as a context manager, several times per stage)
    """`with reported_disk_full(folder, model_dirs):` turns a full-disk error inside into `disk_full_error`'s line."""

    def __init__(self, folder: Path, model_dirs: list[Path]):
        self.folder, self.model_dirs = folder, model_dirs

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, traceback) -> bool:
        if isinstance(error, Exception):
            full = disk_full_error(error, self.folder, self.model_dirs)
            if full is not None:
                raise full from None
        return False


def disk_full_error(error: BaseException, folder: Path, model_dirs: list[Path]) -> WorkbenchError | None:
    """The one-line error for `error` when it comes from a full disk under `folder` (the stage's temporary folder),
    else None. `model_dirs` are the models the stage reads, for the estimate of what it needs."""
    path = _full_disk_path(error, folder)
    if path is None:
        return None
    free = shutil.disk_usage(_existing(folder)).free
    needed = needed_bytes(folder, model_dirs)
    need = f"; the stage needs about {_size(needed)} for its model and checkpoints" if needed else ""
    return WorkbenchError(
        f"no space left on the file system of {path} ({_size(free)} free{need}): free some space and run again "
        "(nothing was marked done; the stage resumes from its last complete checkpoint)"
    )


def needed_bytes(folder: Path, model_dirs: list[Path]) -> int:
    """Roughly what a training stage keeps at its peak: its model, and two checkpoints (the Trainer keeps two) of
    the weights and the optimizer's state. A complete checkpoint already written measures one; else one is taken
    as three copies of the input weights (fp32 weights and Adam's two moments)."""
    model = max((_weights_bytes(path) for path in model_dirs), default=0)
    written = [_folder_bytes(path) for path in sorted((folder / "checkpoints").glob("checkpoint-*"))]
    checkpoint = max(written, default=3 * model)
    return model + 2 * checkpoint


def _full_disk_path(error: BaseException, folder: Path) -> Path | None:
    """The path a full disk stopped, or `folder` when the writer did not say; None when `error` is not that."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return Path(current.filename) if current.filename else folder
        text = str(current).lower()
        if any(words in text for words in _FULL_DISK_WORDS):
            return folder
        if _WRITE_FAILED in text and shutil.disk_usage(_existing(folder)).free < _NEARLY_FULL:
            return folder
        current = current.__cause__ or current.__context__
    return None


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _weights_bytes(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    return sum(path.stat().st_size for path in folder.rglob("*") if path.suffix in _WEIGHTS and path.is_file())


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _size(count: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"
