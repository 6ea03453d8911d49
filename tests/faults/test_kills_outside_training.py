"""SIGKILL during merge (mid-sweep), evaluate, pairs and teacher_cache: nothing is marked done, the next start marks
the killed MLflow runs KILLED (merge candidates included), and the next run finishes the stage."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, workbench_cli

pytestmark = pytest.mark.slow

SUITES = ["instruction_following", "json_schema", "tool_use"]
STAGES = {
    "k_eval": ({"kind": "evaluate", "from": "sft", "suites": SUITES, "batch_size": 1}, None),
    "k_pairs": ({"kind": "pairs", "from": "sft", "data": "data/prompts.jsonl", "max_prompts": 24, "samples": 4,
                 "max_new_tokens": 48, "batch_size": 2}, None),
    "k_cache": ({"kind": "teacher_cache", "from": "sft", "corpus": "data/corpus.jsonl", "seq_len": 16, "k": 8,
                 "shard_blocks": 1, "batch_size": 1}, "cache/shard-00002.ids.npy"),
    "k_merge": ({"kind": "merge", "method": "slerp", "base": "base", "models": ["base", "sft"],
                 "parameters": {"t": {"sweep": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]}},
                 "select": {"metric": "eval_loss", "data": "data/prompts.jsonl", "max_length": 192}},
                "candidates/001"),
}  # fmt: skip
"""Each stage, and what inside its `.tmp` folder shows it is under way (None: the folder itself). For the merge,
candidate 1's folder: its nested run is open while mergekit writes it and the candidate is scored."""


def _wait_until_under_way(root: Path, stage: str, marker: str | None, process, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for tmp in (root / "runs" / "tiny" / stage).glob("*.tmp"):
            if marker is None:
                time.sleep(0.5)  # well inside the stage, not at its first line
                return
            if (tmp / marker).exists():
                return
        if process.poll() is not None:
            raise AssertionError(f"the run ended before '{stage}' got under way:\n{process.stdout.read()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"'{stage}' never got under way")


def _wait_for_candidate_run(root: Path, timeout: float = 60) -> None:
    """Until a candidate's nested run is in the tracking store: the run is recorded by the tracking outbox's
    writer, which on a loaded machine can trail the candidate's folder by seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with sqlite3.connect(f"file:{root}/runs/mlflow.db?mode=ro", uri=True, timeout=1) as db:
                if db.execute("SELECT 1 FROM runs WHERE name LIKE 'k_merge/candidate-%'").fetchone():
                    return
        except sqlite3.Error:
            pass  # not created yet, or being written
        time.sleep(0.1)
    raise AssertionError("no merge candidate's run was recorded")


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_kill_outside_training_leaves_nothing_done_and_the_next_run_finishes(stage, sft_project):
    root = sft_project.root
    corpus = root / "data" / "corpus.jsonl"
    if not corpus.is_file():
        lines = (REPO / "datasets/pretrain/corpus.jsonl").read_text().splitlines()[:400]
        corpus.write_text("\n".join(lines) + "\n")
    config, marker = STAGES[stage]
    recipe = sft_project([{"name": stage, **config}])
    env = os.environ | {"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    process = subprocess.Popen([*workbench_cli(), "run", str(recipe)], cwd=root, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env)  # fmt: skip
    _wait_until_under_way(root, stage, marker, process)
    if stage == "k_merge":
        _wait_for_candidate_run(root)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not list((root / "runs" / "tiny" / stage).glob("*/stage.json")), "a killed stage is never marked done"

    again = subprocess.run([*workbench_cli(), "run", str(recipe)], cwd=root, capture_output=True, text=True, env=env,
                           timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "KILLED: its process is gone" in again.stdout
    assert len(list((root / "runs" / "tiny" / stage).glob("*/stage.json"))) == 1

    client = MlflowClient(f"sqlite:///{root}/runs/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], max_results=5000)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    killed = [r.info.run_name for r in runs if r.info.status == "KILLED"]
    assert stage in killed
    if stage == "k_merge":
        assert any(name.startswith("k_merge/candidate-") for name in killed), killed
