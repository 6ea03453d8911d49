"""Stage output folders. A stage is done only when its temporary folder has been renamed into place."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from workbench.api.sweeps import stage_of
from workbench.fsio import publish_folder, remove_retired
from workbench.hashing import manifest_problems

SHORT_HASH = 16


class StageStore:
    """`<work_dir>/<recipe>/<stage>/<hash>/` holds a finished stage; `<hash>.tmp/` one in progress. A swept stage's
    candidates live in their stage's folder, each under its own hash."""

    def __init__(self, root: Path):
        self.root = root

    def final_dir(self, stage: str, stage_hash: str) -> Path:
        return self.root / stage_of(stage) / stage_hash[:SHORT_HASH]

    def tmp_dir(self, stage: str, stage_hash: str) -> Path:
        return self.root / stage_of(stage) / f"{stage_hash[:SHORT_HASH]}.tmp"

    def is_done(self, stage: str, stage_hash: str) -> bool:
        return (self.final_dir(stage, stage_hash) / "stage.json").is_file()

    def has_checkpoints(self, stage: str, stage_hash: str) -> bool:
        """An interrupted run left trainer checkpoints: the next run resumes from them."""
        return (self.tmp_dir(stage, stage_hash) / "checkpoints").is_dir()

    def damage(self, stage: str, stage_hash: str, full: bool = False, info: dict[str, Any] | None = None) -> list[str]:
        """How a finished stage's files differ from those its `stage.json` (`info`, when the caller has read it)
        recorded (missing, resized, or, when `full` or a file's mtime moved, rewritten); [] when intact or when the
        stage recorded no manifest."""
        info = self.read_info(stage, stage_hash) if info is None else info
        return manifest_problems(self.final_dir(stage, stage_hash), info.get("outputs", {}), full=full)

    def read_info(self, stage: str, stage_hash: str) -> dict[str, Any]:
        return json.loads((self.final_dir(stage, stage_hash) / "stage.json").read_text())

    def prepare(self, stage: str, stage_hash: str, fresh: bool) -> Path:
        """The temporary folder to write into; kept from an interrupted run unless `fresh`."""
        tmp = self.tmp_dir(stage, stage_hash)
        remove_retired(self.final_dir(stage, stage_hash))
        if fresh and tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp

    def commit(self, stage: str, stage_hash: str) -> Path:
        """Atomically publish the temporary folder, replacing an older output of the same hash."""
        tmp = self.tmp_dir(stage, stage_hash)
        shutil.rmtree(tmp / "checkpoints", ignore_errors=True)
        return publish_folder(tmp, self.final_dir(stage, stage_hash))
