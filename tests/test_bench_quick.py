"""Every benchmark in bench/ still runs end to end: `bench/<name>.py --quick` (tiny models, few steps, one
repeat) exits 0 and prints its figure as a finite, positive number. The figures are not checked against
their goals: quick sizes measure start-up, not steady state (see the README's Benchmarks section).

Each bench runs as a subprocess from the repo root, offline, without MLFLOW_TRACKING_URI, with its temporary
folders under the test's tmp_path (TMPDIR) and one torch thread (the figures are not judged, and a second
thread on a busy 2-core machine makes small-model generation many times slower).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_bench(name: str, tmp_path: Path, timeout: float, *options: str) -> str:
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "TMPDIR": str(tmp_path),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        [sys.executable, f"bench/{name}.py", "--quick", *options],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"bench/{name}.py --quick exited {done.returncode}:\n{output[-4000:]}"
    assert "not judged" in done.stdout, f"quick run not marked as such:\n{done.stdout[-2000:]}"
    # torch's compile cache (torchinductor_<user>) is torch's, created on import; anything else is the bench's
    leftovers = [p.name for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("torchinductor_")]
    assert not leftovers, f"bench/{name}.py left temporary folders behind: {leftovers}"
    return done.stdout


def figure(output: str, label: str) -> float:
    """The number printed right after `label` (a regex; units x and s dropped), checked finite and positive."""
    match = re.search(label + r"\s*(\S+)", output)
    assert match, f"no figure {label!r} in output:\n{output[-2000:]}"
    value = float(match.group(1).rstrip("xs").replace(",", ""))
    assert math.isfinite(value) and value > 0, f"{label!r}: {match.group(1)}"
    return value


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft", "preference"])
def test_overhead_quick(tmp_path, stage):
    output = run_bench("overhead", tmp_path, 240, "--stage", stage)
    figure(output, rf"overhead ratio \(workbench / plain trl, \d+ {stage} steps\):")


@pytest.mark.slow
def test_merge_quick(tmp_path):
    # one method mergekit-yaml runs and one it fails on: both of the bench's report paths (each method costs two
    # merge processes, and the four share their code)
    output = run_bench("merge", tmp_path, 240, "--methods", "ties", "della")
    for method in ("ties", "della"):
        figure(output, rf"\b{method}: workbench [\d.]+s \(merge [\d.]+s\), peak RSS \d+ MiB =")
    figure(output, r"\bties: .* workbench / mergekit-yaml: time")
    # mergekit's own DELLA fails on LFM2's depthwise conv weights
    assert re.search(r"\bdella: .* mergekit-yaml failed: .*p_in", output), output[-3000:]
    figure(output, r"worst workbench peak:")
    figure(output, r"eager reference \(transformers, both models loaded\): [\d.]+s, peak RSS \d+ MiB =")


@pytest.mark.slow
def test_distill_cache_size_quick(tmp_path):
    output = run_bench("distill_cache_size", tmp_path, timeout=120)
    assert figure(output, r"\nexact") == 128.0  # uint16 ids + fp16 log-probs at K = 32
    assert figure(output, r"\ncompressed") <= 81  # 64 positions: one block's offsets and Golomb parameter weigh more
    figure(output, r"compressed KD loss relative difference from exact:")


@pytest.mark.slow
def test_distill_throughput_quick(tmp_path):
    output = run_bench("distill_throughput", tmp_path, timeout=120)
    for form in ("exact", "compressed"):
        figure(output, rf"cached teacher, {form}:")
    figure(output, r"online teacher:")
    figure(output, r"ratio cached / online:")
    figure(output, r"ratio compressed / exact:")


@pytest.mark.slow
def test_eval_quick(tmp_path):
    output = run_bench("eval", tmp_path, timeout=180)
    figure(output, r"batched / batch size 1 =")


@pytest.mark.slow
def test_preference_quick(tmp_path):
    output = run_bench("preference", tmp_path, timeout=180)
    figure(output, r"cold cache \(precompute runs\):")
    figure(output, r"warm cache \(precompute read\):")
    figure(output, r"cold / warm:")
    figure(output, r"no precompute / warm:")


@pytest.mark.slow
def test_export_quick(tmp_path):
    output = run_bench("export", tmp_path, timeout=240)
    figure(output, r"decode speed-up of llama.cpp \w+ over transformers float32:")


@pytest.mark.slow
def test_distributed_quick(tmp_path):
    output = run_bench("distributed", tmp_path, timeout=300)
    figure(output, r"wall-time ratio 2 / 1 processes:")
    figure(output, r"bench wall time")


@pytest.mark.slow
def test_gpu_quick(tmp_path):
    output = run_bench("gpu", tmp_path, timeout=300)
    figure(output, r"workbench / plain trl tokens/s:")


def test_export_bench_refuses_a_folder_without_a_model_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "bench/export.py", "--model", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert (
        done.stderr.strip().splitlines()[-1]
        == f"export.py: error: --model {tmp_path}: no model folder there (config.json missing)"
    )
