"""kill -9 in the middle of a distill stage (reading a teacher top-K cache): nothing is marked done, the
next run resumes from the last complete checkpoint and finishes every step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import yaml

from tests.conftest import REPO, TINY_ARCH, workbench_cli
from workbench.runner import load_recipe
from workbench.runner.plan import make_plan

pytestmark = pytest.mark.slow


def test_killed_distill_stage_resumes_from_its_checkpoint(tmp_path):
    corpus = (REPO / "datasets/pretrain/corpus.jsonl").read_text().splitlines()[:300]
    (tmp_path / "corpus.jsonl").write_text("\n".join(corpus) + "\n")
    (tmp_path / "arch.yaml").write_text(yaml.safe_dump(TINY_ARCH))
    data = {"corpus": "corpus.jsonl", "seq_len": 64}
    recipe = {
        "name": "kd",
        "tokenizer": {"train": {"files": ["corpus.jsonl"], "vocab_size": 400}},
        "stages": [
            {"name": "teacher", "kind": "pretrain", "architecture": "arch.yaml", "max_steps": 4, **data},
            {"name": "cache", "kind": "teacher_cache", "from": "teacher", "k": 8, **data},
            {"name": "student", "kind": "distill", "architecture": "arch.yaml", "cache": "cache",
             "teacher": "teacher", "loss": {"k": 8}, "max_steps": 30, "save_steps": 2, "batch_size": 4, **data},
        ],
    }  # fmt: skip
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [*workbench_cli(), "run", str(path)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True, env=env,
    )  # fmt: skip
    deadline = time.time() + 300
    pattern = "runs/kd/student/*.tmp/checkpoints/checkpoint-*/trainer_state.json"
    while not list(tmp_path.glob(pattern)):
        assert process.poll() is None, f"run ended before a checkpoint was written:\n{process.stdout.read()}"
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        student = {s.name: s for s in make_plan(load_recipe(path)).stages}["student"]
    finally:
        os.chdir(cwd)
    assert student.status == "resume"
    assert not list(tmp_path.glob("runs/kd/student/*/stage.json")), "a killed stage is not marked done"

    second = subprocess.run([*workbench_cli(), "run", str(path)], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming from checkpoint-" in second.stdout
    (done,) = tmp_path.glob("runs/kd/student/*/stage.json")
    info = json.loads(done.read_text())
    assert info["resumed"] is True and info["metrics"]["train/steps"] == 30.0
