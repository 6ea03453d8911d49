"""Shared fixtures: an offline environment, a real MLflow server process, a real Argilla server, a tiny project."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.update(
    HF_HUB_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    TOKENIZERS_PARALLELISM="false",
    MLFLOW_DISABLE_TELEMETRY="true",
    DO_NOT_TRACK="true",
    DISABLE_MLFLOW_INTEGRATION="FALSE",
)
os.environ.pop("MLFLOW_TRACKING_URI", None)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # test workers share the machine's cores: one math thread each (inherited by the processes tests start), or
    # OpenMP pools spinning in several workers make training many times slower than one worker alone
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def wait_for_checkpoint(root: Path, process: subprocess.Popen, timeout: float = 300, poll: float = 0.2) -> None:
    """Until the sft stage of recipe `tiny` under `root` has a complete checkpoint (its trainer_state.json)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if list(root.glob("runs/tiny/sft/*.tmp/checkpoints/checkpoint-*/trainer_state.json")):
            return
        if process.poll() is not None:
            raise AssertionError(f"run ended before a checkpoint was written:\n{process.stdout.read()}")
        time.sleep(poll)
    raise AssertionError("no checkpoint appeared")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 with its own SQLite store; yields its URI."""
    yield from running_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))


class MlflowServer:
    """A real `mlflow server` process with its SQLite store and artifacts in `root`, on a port of its own; it can be
    killed and started again on the same port and store (a server that restarts under a running recipe)."""

    def __init__(self, root: Path, port: int | None = None):
        self.root, self.port = root, port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> str:
        mlflow = Path(sys.executable).with_name("mlflow")
        log = (self.root / "server.log").open("a")
        self.process = subprocess.Popen(
            [
                str(mlflow), "server", "--host", "127.0.0.1", "--port", str(self.port),
                "--backend-store-uri", f"sqlite:///{self.root / 'store.db'}",
                "--artifacts-destination", str(self.root / "artifacts"), "--workers", "1",
            ],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return self.uri
            except OSError:
                if self.process.poll() is not None:
                    tail = (self.root / "server.log").read_text()[-2000:]
                    raise RuntimeError(f"mlflow server exited: {tail}") from None
                time.sleep(0.5)
        self.kill()
        raise RuntimeError(f"mlflow server did not become healthy in {timeout:.0f} s")

    def kill(self) -> None:
        """SIGKILL the server and its workers, as a crash or an OOM kill would."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None


def running_mlflow_server(root: Path):
    """Start `mlflow server` with its store in `root`, yield its URI once healthy, stop it afterwards (for a
    fixture: a module that must not share the session's server uses its own)."""
    server = MlflowServer(root)
    yield server.start()
    server.stop()


ARGILLA_WORKSPACE = "preference"
ARGILLA_KEYS = {"owner": "owner-key-0123456789", "alice": "alice-key-0123456789", "bob": "bob-key-0123456789"}
"""API keys of the accounts an `ArgillaServer` creates (the owner pushes and pulls; each password is `<name>-password`)."""


class ArgillaServer:
    """A real argilla-server (its own venv, SQLite under `root/home`) on `port`. A test may kill it and start it again
    on the same data and port, as a restarted server would be."""

    def __init__(self, root: Path, port: int | None = None):
        self.root, self.port = root, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> ArgillaServer:
        from workbench.annotate.client import AnnotationError
        from workbench.annotate.server import Account, start_server, wait_ready

        users = [
            Account(name, "owner" if name == "owner" else "annotator", f"{name}-password", key, generated=False)
            for name, key in ARGILLA_KEYS.items()
        ]
        with (self.root / "server.log").open("a") as log:
            self.process = start_server(self.root / "home", self.port, users, workspace=ARGILLA_WORKSPACE, log=log)
        try:
            wait_ready(self.url, self.process)
        except AnnotationError:
            self.stop()
            raise RuntimeError((self.root / "server.log").read_text()[-3000:]) from None
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the server's process group: no shutdown, no cleanup, as when its machine loses power."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        from workbench.annotate.server import stop_server

        stop_server(self.process)


TINY_ARCH = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "full_attn_idxs": [1],
    "max_position_embeddings": 512,
    "block_auto_adjust_ff_dim": False,
}


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def data_context(root: Path):
    """A bare StageContext over `root` for code that reads data through one (no run, no tracking)."""
    from rich.console import Console

    from workbench.api.context import Project, StageContext
    from workbench.tracking import NullTracker

    project = Project(root, root / "runs", root / "runs", "chats", 0, False)
    return StageContext(
        project, None, "0" * 64, root / "tmp", {}, root / "tokenizer", NullTracker(), Console(quiet=True)
    )


def write_chat_subset(source: Path, target: Path, count: int) -> None:
    lines = source.read_text().splitlines()[:count]
    target.write_text("\n".join(lines) + "\n")


def write_tiny_data(root: Path) -> None:
    """A small slice of the quickstart data and a tiny architecture file under `root`."""
    import yaml

    (root / "data").mkdir(exist_ok=True)
    write_chat_subset(REPO / "datasets/quickstart/sft.jsonl", root / "data/train.jsonl", 96)
    write_chat_subset(REPO / "datasets/quickstart/sft_eval.jsonl", root / "data/eval.jsonl", 16)
    (root / "arch.yaml").write_text(yaml.safe_dump(TINY_ARCH))


def write_tiny_recipe(root: Path, sft: dict | None = None, tracking_uri: str | None = None, name: str = "tiny") -> Path:
    """`root/recipe.yaml`: init -> a 4-step SFT on the tiny data, `sft` overriding its fields; returns the path."""
    import yaml

    stage = {
        "name": "sft", "kind": "sft", "from": "base", "data": "data/train.jsonl",
        "eval_data": "data/eval.jsonl", "max_length": 192, "max_steps": 4, "batch_size": 8,
        "learning_rate": 3e-3, "logging_steps": 1, "save_steps": 2, "sample_count": 1,
    }  # fmt: skip
    recipe = {
        "name": name,
        "tokenizer": {"train": {"files": ["data/train.jsonl"], "vocab_size": 400}},
        "stages": [{"name": "base", "kind": "init", "architecture": "arch.yaml"}, stage | (sft or {})],
    }
    if tracking_uri:
        recipe["tracking"] = {"uri": tracking_uri}
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def write_tiny_project(
    root: Path, sft: dict | None = None, tracking_uri: str | None = None, name: str = "tiny"
) -> Path:
    """Tiny data, architecture and recipe under `root`; returns the recipe path."""
    write_tiny_data(root)
    return write_tiny_recipe(root, sft, tracking_uri, name)


@pytest.fixture
def tiny_project(tmp_path, monkeypatch):
    """A tiny project in `tmp_path` (the working directory; its data is written once, so tests may edit it)
    and a recipe factory `make(sft_overrides, tracking_uri, name)` that rewrites `recipe.yaml`."""
    monkeypatch.chdir(tmp_path)
    write_tiny_data(tmp_path)

    def make(sft: dict | None = None, tracking_uri: str | None = None, name: str = "tiny") -> Path:
        return write_tiny_recipe(tmp_path, sft, tracking_uri, name)

    make.root = tmp_path
    return make


def workbench_cli() -> list[str]:
    return [str(Path(sys.executable).with_name("workbench"))]


@pytest.fixture(scope="session")
def sft_project(tmp_path_factory):
    """A project whose `base -> sft` stages have run once (a TINY_ARCH twice as wide, 200 SFT steps: enough to
    end some replies with eos), shared by the preference and pairs tests. `write(stages, name)` writes
    `recipe.yaml` = base + sft + `stages` and returns its path; keep the name `tiny` so base and sft are cache
    hits. Tests must chdir to `root` to run it."""
    import yaml

    from workbench.runner import load_recipe
    from workbench.runner.executor import run_recipe

    root = tmp_path_factory.mktemp("sft-project")
    (root / "data").mkdir()
    write_chat_subset(REPO / "datasets/quickstart/sft.jsonl", root / "data/train.jsonl", 240)
    write_chat_subset(REPO / "datasets/quickstart/preference.jsonl", root / "data/pairs.jsonl", 160)
    write_chat_subset(REPO / "datasets/quickstart/preference_eval.jsonl", root / "data/pairs_eval.jsonl", 40)
    write_chat_subset(REPO / "datasets/quickstart/sft_eval.jsonl", root / "data/prompts.jsonl", 24)
    wider = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2}
    (root / "arch.yaml").write_text(yaml.safe_dump(TINY_ARCH | wider))
    base_stages = [
        {"name": "base", "kind": "init", "architecture": "arch.yaml"},
        {"name": "sft", "kind": "sft", "from": "base", "data": "data/train.jsonl", "max_length": 256,
         "max_steps": 200, "batch_size": 8, "learning_rate": 3e-3, "logging_steps": 50, "save_steps": 100,
         "sample_count": 0},
    ]  # fmt: skip

    def write(stages: list[dict] = (), name: str = "tiny") -> Path:
        recipe = {
            "name": name,
            "tokenizer": {"train": {"files": ["data/train.jsonl"], "vocab_size": 400}},
            "stages": base_stages + list(stages),
        }
        path = root / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        return path

    cwd = os.getcwd()
    os.chdir(root)
    try:
        run_recipe(load_recipe(write()))
    finally:
        os.chdir(cwd)
    write.root = root
    return write


@pytest.fixture
def project(tmp_path):
    """A project with what the recipes of test_recipe_errors and test_sweeps name: chat data, a corpus, two
    architectures and a merge template."""
    import json

    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "chat.jsonl").write_text(json.dumps(chat) + "\n")
    (tmp_path / "data" / "corpus.jsonl").write_text(json.dumps({"text": "a small corpus"}) + "\n")
    (tmp_path / "arch.yaml").write_text("hidden_size: 64\nnum_hidden_layers: 2\n")
    (tmp_path / "arch_wide.yaml").write_text("hidden_size: 128\nnum_hidden_layers: 2\n")
    (tmp_path / "merges").mkdir()
    (tmp_path / "merges" / "ties.yaml").write_text("merge_method: ties\nparameters:\n  weight: 1.0\n  density: 0.5\n")
    (tmp_path / "runs").mkdir()
    return tmp_path
