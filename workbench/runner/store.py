"""Stage output folders. A stage is done only when its temporary folder has been renamed into place."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

SHORT_HASH = 16


class StageStore:
    """`<work_dir>/<recipe>/<stage>/<hash>/` holds a finished stage; `<hash>.tmp/` one in progress."""

    def __init__(self, root: Path):
        self.root = root

    def final_dir(self, stage: str, stage_hash: str) -> Path:
        return self.root / stage / stage_hash[:SHORT_HASH]

    def tmp_dir(self, stage: str, stage_hash: str) -> Path:
        return self.root / stage / f"{stage_hash[:SHORT_HASH]}.tmp"

    def is_done(self, stage: str, stage_hash: str) -> bool:
        return (self.final_dir(stage, stage_hash) / "stage.json").is_file()

    def has_checkpoints(self, stage: str, stage_hash: str) -> bool:
        """An interrupted run left trainer checkpoints: the next run resumes from them."""
        return (self.tmp_dir(stage, stage_hash) / "checkpoints").is_dir()

    def read_info(self, stage: str, stage_hash: str) -> dict[str, Any]:
        return json.loads((self.final_dir(stage, stage_hash) / "stage.json").read_text())

    def prepare(self, stage: str, stage_hash: str, fresh: bool) -> Path:
        """The temporary folder to write into; kept from an interrupted run unless `fresh`."""
        tmp = self.tmp_dir(stage, stage_hash)
        if fresh and tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp

    def commit(self, stage: str, stage_hash: str) -> Path:
        """Atomically publish the temporary folder (rename), replacing an older output of the same hash."""
        tmp, final = self.tmp_dir(stage, stage_hash), self.final_dir(stage, stage_hash)
        shutil.rmtree(tmp / "checkpoints", ignore_errors=True)
        retired = None
        if final.exists():
            retired = final.with_name(f"{final.name}.old-{int(time.time() * 1000)}")
            os.rename(final, retired)
        os.rename(tmp, final)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
        return final


def write_json_atomic(path: Path, value: Any) -> None:
    """Write JSON through a temporary file and a rename, so readers never see half a file."""
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def write_jsonl_atomic(path: Path, rows: list[Any]) -> None:
    """One JSON value per line, written through a temporary file and a rename like `write_json_atomic`."""
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text("".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows), encoding="utf-8")
    os.replace(tmp, path)
