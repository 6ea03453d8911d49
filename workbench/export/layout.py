"""Where an export stage puts its file, and how a later stage finds it."""

from __future__ import annotations

from pathlib import Path

from workbench.api import StageInput


def gguf_relative(quantization: str) -> Path:
    """The GGUF file's path inside the export stage's folder."""
    return Path("gguf") / f"model-{quantization}.gguf"


def gguf_file(source: StageInput) -> Path | None:
    """The GGUF file an export stage wrote (recorded in its stage.json), or None when `source` is not an export."""
    relative = source.info.get("details", {}).get("gguf")
    return source.dir / relative if source.info.get("kind") == "export" and relative else None
