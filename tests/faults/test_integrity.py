"""A finished stage's files are recorded in its stage.json (size, mtime, sha256); a damaged output is never handed
downstream: `plan` notices it cheaply, `run` runs the stage again, `workbench verify` checks every byte. And a
halt a stage asked for when it ran holds for its cached output too."""

from __future__ import annotations

import json
import os
from typing import Literal

import pytest
import yaml

from tests.conftest import REPO, TINY_ARCH, workbench_cli, write_chat_subset  # noqa: F401
from workbench.api import StageConfig, StageContext, StageKind, StageResult
from workbench.errors import StageHalted
from workbench.recipe.loader import load_recipe
from workbench.runner.executor import run_recipe
from workbench.runner.plan import make_plan
from workbench.stages import builtin_catalog


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write_chat_subset(REPO / "datasets/quickstart/sft.jsonl", tmp_path / "chat.jsonl", 40)
    (tmp_path / "arch.yaml").write_text(yaml.safe_dump(TINY_ARCH))
    return tmp_path


def write_recipe(root, stages: list[dict]) -> None:
    recipe = {"name": "r", "tokenizer": {"train": {"files": ["chat.jsonl"], "vocab_size": 300}}, "stages": stages}
    (root / "r.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))


class HaltConfig(StageConfig):
    """A stage that finishes and asks the recipe to stop."""

    kind: Literal["halter"]
    """Stage kind."""


def _halt(ctx: StageContext) -> StageResult:
    (ctx.tmp_dir / "note.txt").write_text("done")
    return StageResult(metrics={"x": 1.0}, halt=f"stage '{ctx.config.name}' says stop")


HALTER = StageKind(name="halter", config=HaltConfig, run=_halt, summary="halts", makes_model=False)


def test_damaged_outputs_are_noticed_rerun_and_verified(project):
    import subprocess

    write_recipe(project, [{"name": "base", "kind": "init", "architecture": "arch.yaml"}])
    catalog = builtin_catalog()
    run_recipe(load_recipe("r.yaml", catalog))
    plan = make_plan(load_recipe("r.yaml", catalog))
    [base] = plan.stages
    folder = plan.store.final_dir("base", base.hash)
    info = json.loads((folder / "stage.json").read_text())
    assert {"model/config.json", "model/model.safetensors"} <= set(info["outputs"])
    weights = folder / "model" / "model.safetensors"
    assert info["outputs"]["model/model.safetensors"]["size"] == weights.stat().st_size
    verify = subprocess.run([*workbench_cli(), "verify", "r.yaml"], capture_output=True, text=True)
    assert verify.returncode == 0 and "base: intact" in verify.stdout, verify.stdout + verify.stderr

    # Same size, other bytes, old mtime: the cheap check cannot see it; verify does.
    stat = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert make_plan(load_recipe("r.yaml", catalog)).stages[0].status == "cached"
    verify = subprocess.run([*workbench_cli(), "verify", "r.yaml"], capture_output=True, text=True)
    assert verify.returncode == 1
    assert "model/model.safetensors has changed (sha256 differs)" in verify.stdout
    assert verify.stderr.count("error:") == 1

    # Truncated: plan sees it without reading the bytes, and run makes the stage again.
    weights.write_bytes(bytes(data[:100]))
    damaged = make_plan(load_recipe("r.yaml", catalog)).stages[0]
    assert damaged.status == "damaged" and damaged.damage == [
        f"model/model.safetensors is 100 bytes, was {info['outputs']['model/model.safetensors']['size']}"
    ]
    [outcome] = run_recipe(load_recipe("r.yaml", catalog))
    assert outcome.status == "ran"
    assert make_plan(load_recipe("r.yaml", catalog)).stages[0].status == "cached"
    assert weights.stat().st_size == info["outputs"]["model/model.safetensors"]["size"]

    # Deleted: the same.
    (folder / "model" / "config.json").unlink()
    assert make_plan(load_recipe("r.yaml", catalog)).stages[0].damage == ["model/config.json is missing"]


def test_a_halt_holds_for_the_cached_stage(project):
    catalog = builtin_catalog()
    catalog.add(HALTER)
    write_recipe(
        project,
        [{"name": "stop", "kind": "halter"}, {"name": "base", "kind": "init", "architecture": "arch.yaml"}],
    )
    for _ in range(2):  # fresh, then cached: the stage's own halt stops the recipe both times
        with pytest.raises(StageHalted, match="stage 'stop' says stop"):
            run_recipe(load_recipe("r.yaml", catalog))
        assert make_plan(load_recipe("r.yaml", catalog)).by_name()["base"].status == "run"
