"""Content hashes: files, tokenizer specs and stages. A stage's hash decides whether it is cached."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

_file_memo: dict[tuple[str, int, int], str] = {}


def digest_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def digest_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's files (names and bytes). Memoised per (path, size, mtime)."""
    if path.is_dir():
        entries = sorted(p for p in path.rglob("*") if p.is_file())
        return digest_json({str(p.relative_to(path)): file_digest(p) for p in entries})
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _file_memo:
        sha = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
        _file_memo[key] = sha.hexdigest()
    return _file_memo[key]


def model_identity(location: str | Path, root: Path | None = None) -> str:
    """A model's identity for hashes and caches keyed by it: a local folder's content (`location` relative to
    `root` when given), or, when nothing local has that name, the hub id's text."""
    path = Path(root) / location if root is not None else Path(location)
    return file_digest(path) if path.exists() else digest_text(str(location))


def env_fingerprint() -> dict[str, str]:
    """Things outside the recipe that change results: our version (and the seed is in the config)."""
    from workbench import __version__

    return {"workbench": __version__, "salt": os.environ.get("WORKBENCH_CACHE_SALT", "")}


def folder_manifest(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """Every file below `folder` (but the top-level names in `skip`): relative path -> size, mtime and sha256."""
    manifest = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder)
        if relative.parts[0] in skip:
            continue
        stat = path.stat()
        manifest[relative.as_posix()] = {
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "sha256": file_digest(path),
        }
    return manifest


def manifest_problems(folder: Path, manifest: dict[str, dict[str, Any]], full: bool = False) -> list[str]:
    """How `folder` differs from its recorded manifest: a missing file, another size, or (when `full`, or when the
    mtime moved) other bytes. Files added since are not problems."""
    problems = []
    for relative, recorded in manifest.items():
        path = folder / relative
        if not path.is_file():
            problems.append(f"{relative} is missing")
            continue
        stat = path.stat()
        if stat.st_size != recorded["size"]:
            problems.append(f"{relative} is {stat.st_size} bytes, was {recorded['size']}")
        elif (full or stat.st_mtime_ns != recorded["mtime_ns"]) and file_digest(path) != recorded["sha256"]:
            problems.append(f"{relative} has changed (sha256 differs)")
    return problems
