"""A tracking server that is not running is one line naming its URI, within seconds, before any stage starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

NOTHING_LISTENS = "http://127.0.0.1:9"


def test_run_with_an_unreachable_tracking_server_fails_fast_before_any_stage(tmp_path):
    (tmp_path / "chat.jsonl").write_text(
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}) + "\n"
    )
    (tmp_path / "arch.yaml").write_text("hidden_size: 32\n")
    (tmp_path / "r.yaml").write_text(
        f"name: r\ntokenizer: {{train: {{files: [chat.jsonl], vocab_size: 300}}}}\ntracking: {{uri: '{NOTHING_LISTENS}'}}\n"
        "stages:\n  - {name: base, kind: init, architecture: arch.yaml}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"HF_HUB_OFFLINE": "1"}
    workbench = str(Path(sys.executable).with_name("workbench"))
    started = time.monotonic()
    result = subprocess.run([workbench, "run", "r.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(
        f"error: MLflow tracking server {NOTHING_LISTENS} is not reachable"
    )
    assert "Traceback" not in result.stderr and seconds < 30
    assert not (tmp_path / "runs" / "r" / "base").exists(), "no stage may start"
    # validate and plan never talk to the tracking server
    for command in ("validate", "plan"):
        assert (
            subprocess.run([workbench, command, "r.yaml"], cwd=tmp_path, env=env, capture_output=True).returncode == 0
        )
