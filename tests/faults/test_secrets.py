"""Secrets come only from the environment and are never written down: with a canary in every credential variable
workbench or its libraries read, no param, tag, metric, artifact, log or stage file of a run contains one. And
model code from the hub never runs unless the recipe says so."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO, TINY_ARCH, write_chat_subset

CANARIES = {
    "MLFLOW_TRACKING_TOKEN": "canary-mlflow-token-5e1f",
    "MLFLOW_TRACKING_PASSWORD": "canary-mlflow-password-77aa",
    "ARGILLA_API_KEY": "canary-argilla-key-91c3",
    "HF_TOKEN": "canary-hf-token-2d4b",
    "HUGGING_FACE_HUB_TOKEN": "canary-hf-hub-token-c0de",
    "OPENAI_API_KEY": "canary-openai-key-be11",
}


def test_no_credential_reaches_the_store_or_the_logs(tmp_path):
    write_chat_subset(REPO / "datasets/quickstart/sft.jsonl", tmp_path / "chat.jsonl", 24)
    (tmp_path / "arch.yaml").write_text(yaml.safe_dump(TINY_ARCH))
    recipe = {
        "name": "s",
        "description": "visible-marker-4f2a",  # recorded on purpose: proves the scan reads where a leak would land
        "tokenizer": {"train": {"files": ["chat.jsonl"], "vocab_size": 300}},
        "stages": [
            {"name": "base", "kind": "init", "architecture": "arch.yaml"},
            {"name": "sft", "kind": "sft", "from": "base", "data": "chat.jsonl", "max_steps": 2, "batch_size": 4,
             "max_length": 512, "eval_data": "chat.jsonl", "sample_count": 1},
        ],
    }  # fmt: skip
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | CANARIES | {"HF_HUB_OFFLINE": "1"}
    workbench = str(Path(sys.executable).with_name("workbench"))
    result = subprocess.run([workbench, "run", "r.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    logs = result.stdout + result.stderr
    store = tmp_path / "runs"
    assert (store / "mlflow.db").is_file() and any(store.rglob("stage.json"))
    texts = {"console": logs}
    for path in store.rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("utf-8", errors="replace")
    with sqlite3.connect(store / "mlflow.db") as db:  # params, tags and metrics, read as the server would
        for table in ("params", "tags", "latest_metrics"):
            texts[f"mlflow.db:{table}"] = " ".join(map(str, db.execute(f"select * from {table}").fetchall()))
    assert any("visible-marker-4f2a" in text for where, text in texts.items() if where != "console")
    leaks = [(name, where) for where, text in texts.items() for name, canary in CANARIES.items() if canary in text]
    assert not leaks, leaks


def test_remote_code_is_off_unless_the_recipe_asks():
    """Every from_pretrained call in the package passes the recipe's setting or False, never True."""
    calls = []
    for path in (REPO / "workbench").rglob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if "trust_remote_code=" in line:
                calls.append((path.relative_to(REPO).as_posix(), number, line.split("trust_remote_code=")[1]))
    assert calls, "the scan must see the loaders"
    allowed = (
        "False",
        "self.project.trust_remote_code",
        "loaded.recipe.trust_remote_code",
        "self.recipe.trust_remote_code",
    )
    assert all(value.startswith(allowed) for _, _, value in calls), calls
