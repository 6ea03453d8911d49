"""Stages on several processes and machines, for real: torchrun with the gloo backend on this CPU, the HF Trainer's
DDP, a real MLflow server, workers killed with SIGKILL, and two `workbench run` "nodes" on one machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TINY_ARCH, workbench_cli

from workbench.errors import RecipeError

pytestmark = pytest.mark.slow

SFT = {
    "kind": "sft", "from": "base", "data": "data/train.jsonl", "max_length": 192, "max_steps": 6,
    "learning_rate": 3e-3, "warmup": 0, "lr_scheduler": "constant", "logging_steps": 1, "save_steps": 100,
    "sample_count": 1,
}  # fmt: skip


def _write(
    root: Path, stages: list[dict], tracking_uri: str | None = None, experiment: str | None = None, **top
) -> Path:
    recipe = {
        "name": "tiny",
        "tokenizer": {"train": {"files": ["data/train.jsonl"], "vocab_size": 400}},
        "stages": [{"name": "base", "kind": "init", "architecture": "arch.yaml"}, *stages],
        **top,
    }
    if tracking_uri:
        recipe["tracking"] = {"uri": tracking_uri, "experiment": experiment}
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _env() -> dict[str, str]:
    return os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _run_cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*workbench_cli(), *args], cwd=cwd, capture_output=True, text=True, env=_env(),
                          timeout=timeout)  # fmt: skip


def _info(root: Path, stage: str) -> dict:
    done = [p for p in (root / "runs" / "tiny" / stage).iterdir() if (p / "stage.json").is_file()]
    assert len(done) == 1, done
    return json.loads((done[0] / "stage.json").read_text()) | {"dir": str(done[0])}


def test_sft_on_two_processes_follows_one_process_and_logs_once(tiny_project, mlflow_server):
    from mlflow.tracking import MlflowClient

    root = tiny_project.root
    # the same global batch: 8 examples per step on one process, 4 on each of two
    recipe = _write(root, [{"name": "one", **SFT, "batch_size": 8},
                           {"name": "two", **SFT, "batch_size": 4, "resources": {"processes": 2}}], mlflow_server,
                    experiment="distributed")  # fmt: skip
    done = _run_cli("run", str(recipe), cwd=root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "launching 2 processes (ddp) with torchrun" in done.stdout

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("distributed")  # its own: the session's server serves other tests
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]  # no stray run from any rank
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
    assert set(children) == {"base", "one", "two"} and len(runs) == 4
    curves = {}
    for name in ("one", "two"):
        history = client.get_metric_history(children[name].info.run_id, "loss")
        steps = [m.step for m in history]
        assert len(steps) == len(set(steps)) == 6, steps  # each step logged once, by rank 0 alone
        curves[name] = [m.value for m in sorted(history, key=lambda m: m.step)]
    # DDP averages the two halves' gradients; the batches differ (each rank draws its own shard), so the curves
    # agree within 2% per step, not bit for bit.
    for one, two in zip(curves["one"], curves["two"], strict=True):
        assert abs(one - two) <= 0.02 * one, (curves["one"], curves["two"])
    assert children["two"].data.tags.get("workbench.stage") == "two"

    # The model folder from two processes loads and generates.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(_info(root, "two")["dir"]) / "model"
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)  # fmt: skip
    out = model.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] == ids["input_ids"].shape[1] + 4 and torch.isfinite(model.lm_head.weight).all()
    assert not list(Path(_info(root, "two")["dir"]).glob(".launch"))  # launch files never reach a done folder


def test_a_killed_worker_fails_the_stage_and_the_next_run_resumes(tiny_project):
    root = tiny_project.root
    stage = {"name": "sft", **SFT, "batch_size": 4, "max_steps": 100, "save_steps": 10, "logging_steps": 50,
             "resources": {"processes": 2}}  # fmt: skip
    recipe = _write(root, [stage])
    import psutil

    command = [*workbench_cli(), "run", str(recipe)]
    process = subprocess.Popen(command, cwd=root, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoints = root / "runs" / "tiny" / "sft"
    deadline = time.time() + 300
    victim = None
    while time.time() < deadline and victim is None:
        if list(checkpoints.glob("*.tmp/checkpoints/checkpoint-*/trainer_state.json")):
            for child in psutil.Process(process.pid).children(recursive=True):
                try:
                    if child.environ().get("RANK") == "1":
                        victim = child
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
        time.sleep(0.2)
    assert victim is not None, "no checkpoint and rank-1 worker seen in time"
    victim.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    assert "stage 'sft': rank 1 was killed by SIGKILL" in errors[0] and "nothing was marked done" in errors[0]
    assert not [p for p in checkpoints.iterdir() if not p.name.endswith(".tmp")]  # nothing marked done

    again = _run_cli("run", str(recipe), cwd=root)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming from checkpoint-" in again.stdout
    info = _info(root, "sft")
    assert info["resumed"] is True and info["metrics"]["train/steps"] == 100


def test_preference_teacher_cache_and_distill_on_two_processes(sft_project, monkeypatch, tmp_path):
    from workbench.runner import load_recipe
    from workbench.runner.executor import run_recipe

    monkeypatch.chdir(sft_project.root)
    # max_length 224: a reference-cache key of its own (the shared project's cache serves other tests' stages)
    pref = {"name": "pref2", "kind": "preference", "from": "sft", "data": "data/pairs.jsonl",
            "eval_data": "data/pairs_eval.jsonl", "preset": "lfm2", "max_length": 224, "max_steps": 4,
            "batch_size": 4, "learning_rate": 2e-3, "logging_steps": 1, "sample_count": 1,
            "resources": {"processes": 2}}  # fmt: skip
    outcomes = {o.name: o for o in run_recipe(load_recipe(sft_project([pref])))}
    info = json.loads((outcomes["pref2"].dir / "stage.json").read_text())
    assert info["metrics"]["train/steps"] == 4 and "eval/loss" in info["metrics"]
    # the reference log-probs were computed once (data-parallel) and cached for both splits
    cache = info["details"]["ref_cache"]
    assert set(cache["misses"]) | set(cache["hits"]) == {"train", "eval"}

    monkeypatch.chdir(tmp_path)
    for name in ("corpus.jsonl", "corpus_eval.jsonl"):
        lines = (REPO / "datasets/pretrain" / name).read_text().splitlines()[:60]
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    (tmp_path / "arch.yaml").write_text(yaml.safe_dump(TINY_ARCH))
    data = {"corpus": "corpus.jsonl", "seq_len": 32, "logging_steps": 1, "save_steps": 100}
    recipe = {
        "name": "kd",
        "tokenizer": {"train": {"files": ["corpus.jsonl"], "vocab_size": 400}},
        "stages": [
            {"name": "teacher", "kind": "pretrain", "architecture": "arch.yaml", "max_steps": 4, "batch_size": 8,
             **data},
            {"name": "cache", "kind": "teacher_cache", "from": "teacher", "k": 4, "corpus": "corpus.jsonl",
             "seq_len": 32, "shard_blocks": 8},
            {"name": "cache_one", "kind": "teacher_cache", "from": "teacher", "k": 4, "corpus": "corpus.jsonl",
             "seq_len": 32, "shard_blocks": 8, "resources": {"processes": 1}},
            {"name": "student", "kind": "distill", "architecture": "arch.yaml", "cache": "cache", "teacher": "teacher",
             "loss": {"k": 4}, "max_steps": 4, "batch_size": 4, "eval_corpus": "corpus_eval.jsonl", **data},
        ],
        "resources": {"processes": 2},  # the recipe's default: pretrain and distill run on two processes
    }  # fmt: skip
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    outcomes = {o.name: o for o in run_recipe(load_recipe(tmp_path / "recipe.yaml"))}
    for name in ("teacher", "student"):
        info = json.loads((outcomes[name].dir / "stage.json").read_text())
        assert info["metrics"]["train/steps"] == 4, name
        assert (outcomes[name].dir / "model" / "model.safetensors").is_file()
    # the top-K cache built by two ranks (shards split between them) is byte for byte the one-process cache
    shards = sorted(p.name for p in (outcomes["cache"].dir / "cache").glob("shard-*.npy"))
    assert len(shards) >= 4 and shards == sorted(p.name for p in (outcomes["cache_one"].dir / "cache").glob("shard-*"))
    for name in shards:
        assert (outcomes["cache"].dir / "cache" / name).read_bytes() == (
            outcomes["cache_one"].dir / "cache" / name
        ).read_bytes()
    student = json.loads((outcomes["student"].dir / "stage.json").read_text())["metrics"]
    assert student["eval/loss"] < student["eval/loss_before"]  # it learned from the cached top-K targets


def test_two_nodes_on_one_machine_train_together_and_only_node_0_writes(tiny_project):
    root = tiny_project.root
    recipe = _write(root, [{"name": "sft", **SFT, "batch_size": 4, "resources": {"processes": 1, "nodes": 2}}])
    port = str(29700 + os.getpid() % 200)
    common = ["run", str(recipe), "--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", port]
    node1 = subprocess.Popen([*workbench_cli(), *common, "--node-rank", "1"], cwd=root, env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    node0 = _run_cli(*common, "--node-rank", "0", cwd=root)
    out1, err1 = node1.communicate(timeout=300)
    assert node0.returncode == 0, node0.stdout[-3000:] + node0.stderr[-3000:]
    assert node1.returncode == 0, out1[-3000:] + err1[-3000:]
    assert "launching 1 processes on each of 2 nodes" in node0.stdout
    assert "joined sft" in out1 and "MLflow run" not in out1
    info = _info(root, "sft")
    assert info["metrics"]["train/steps"] == 6
    # node 1 wrote nothing but its logs: no store of its own, no MLflow store, no stage folder
    assert not (root / "mlflow.db").exists() and not (root / "mlruns").exists()
    assert sorted(p.name for p in (root / "runs").iterdir()) == ["mlartifacts", "mlflow.db", "tiny"]


def test_recipe_errors_for_resources(tiny_project):
    from workbench.runner import load_recipe

    root = tiny_project.root
    recipe = _write(
        root,
        [{"name": "sft", **SFT, "resources": {"processes": 2, "strategy": "deepspeed"}},
         {"name": "ex", "kind": "export", "from": "sft", "resources": {"processes": 2}},
         {"name": "sft2", **SFT, "resources": {"procs": 2}}],
        resources={"strategy": "fsdp", "processes": 0},
    )  # fmt: skip
    with pytest.raises(RecipeError) as raised:
        load_recipe(recipe)
    text = str(raised.value)
    assert "resources.processes: Input should be greater than or equal to 1" in text
    assert (
        "sft.resources.strategy: strategy 'deepspeed' needs the deepspeed package, which is not installed: "
        "pip install deepspeed" in text
    )
    assert (
        "ex.resources: export stages run in one process; more than one process (2 here) is for the kinds that run "
        "distributed: distill, evaluate, pairs, preference, pretrain, sft, teacher_cache"
    ) in text
    assert "sft2.resources: unknown field 'procs' (did you mean 'processes'?)" in text
    assert all(line.startswith(f"{recipe}:") for line in text.splitlines()), text


def test_fsdp_on_a_cpu_machine_is_one_clear_line(tiny_project):
    root = tiny_project.root
    recipe = _write(root, [{"name": "sft", **SFT, "batch_size": 4, "resources": {"processes": 2, "strategy": "fsdp"}}])
    done = _run_cli("run", str(recipe), cwd=root)
    assert done.returncode == 1
    assert "error: stage 'sft': strategy 'fsdp' needs CUDA GPUs" in done.stderr and "Traceback" not in done.stderr


def test_slurm_environment_sets_the_cluster():
    from workbench.runner.launch import Cluster, expand_hostlist

    assert expand_hostlist("gpu[01-03,07],login1") == ["gpu01", "gpu02", "gpu03", "gpu07", "login1"]
    env = {"SLURM_JOB_ID": "4242", "SLURM_NNODES": "4", "SLURM_NODEID": "2", "SLURM_JOB_NODELIST": "node[10-13]"}
    assert Cluster.from_slurm(env) == Cluster(4, 2, "node10", 20000 + 4242)
    assert Cluster.from_slurm({}) is None


def test_evaluate_and_pairs_on_two_processes_match_one(sft_project, monkeypatch):
    from workbench.runner import load_recipe
    from workbench.runner.executor import run_recipe

    monkeypatch.chdir(sft_project.root)
    suites = ["instruction_following", "json_schema", "tool_use"]
    evaluate = {"kind": "evaluate", "from": "sft", "suites": suites, "limit": 6, "batch_size": 1}
    pairs = {"kind": "pairs", "from": "sft", "data": "data/prompts.jsonl", "max_prompts": 12, "samples": 3,
             "max_new_tokens": 24, "batch_size": 2, "judge": "verifier"}  # fmt: skip
    two = {"resources": {"processes": 2}}
    stages = [{"name": "ev1", **evaluate}, {"name": "ev2", **evaluate, **two},
              {"name": "pairs1", **pairs}, {"name": "pairs2", **pairs, **two}]  # fmt: skip
    outcomes = {o.name: o for o in run_recipe(load_recipe(sft_project(stages)))}

    def info(name: str) -> dict:
        return json.loads((outcomes[name].dir / "stage.json").read_text())

    one_metrics, two_metrics = info("ev1")["metrics"], info("ev2")["metrics"]
    scores = {k: v for k, v in one_metrics.items() if not k.startswith("eval/")}
    assert scores and {k: two_metrics[k] for k in scores} == pytest.approx(scores, rel=1e-12, abs=1e-12)
    for suite in suites:
        rows = {}
        for name in ("ev1", "ev2"):
            lines = (outcomes[name].dir / "eval" / f"samples_{suite}.jsonl").read_text().splitlines()
            rows[name] = sorted((json.loads(line) for line in lines), key=lambda r: (r["task"], r["doc_id"]))
        assert [(r["prompt"], r["output"]) for r in rows["ev1"]] == [(r["prompt"], r["output"]) for r in rows["ev2"]]

    written = {name: (outcomes[name].dir / "pairs.jsonl").read_text() for name in ("pairs1", "pairs2")}
    assert written["pairs1"] == written["pairs2"] and written["pairs1"].strip()
    one_pairs, two_pairs = info("pairs1")["metrics"], info("pairs2")["metrics"]
    assert two_pairs == pytest.approx(one_pairs, rel=1e-12)


def test_a_worker_that_fails_leaves_its_reason_and_a_non_zero_exit_without_finalization(tmp_path):
    # The worker leaves through os._exit (gloo's thread tear-down at interpreter exit can abort a finished rank):
    # a failing rank must still write its one-line reason for the parent, print its traceback and exit non-zero.
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"kind": "no_such_kind"}))
    env = _env() | {"RANK": "1", "WORLD_SIZE": "2"}
    done = subprocess.run([sys.executable, "-m", "workbench.runner.worker", str(spec)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    assert (tmp_path / "rank1.error").read_text() == "KeyError: 'no_such_kind'"
    assert "Traceback" in done.stderr and "KeyError" in done.stderr
    assert not (tmp_path / "result.json").exists()
