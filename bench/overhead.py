"""Orchestration overhead: a training stage through `workbench run` against the same training as a plain trl
script, same model, data and settings, alternating in one run. `--stage sft` (default): the SFT stage against
bench/plain_sft.py, goal <= 1.05 at 40 steps (<= 1.02 at the quickstart's length, `--steps 150`); `--stage
preference`: the preference stage with `preset: dpo` (trl's sigmoid loss, a reference forward every step) against
bench/plain_dpo.py, goal <= 1.05. Prints each wall time and the ratio workbench / plain.

The recipe is the quickstart's tokenizer and SFT stage on a randomly initialised base model (an `init` stage
with the quickstart's architecture, pretrain/tiny-lfm2.yaml), so the bench depends on no other stage. The
workbench side does everything a user gets (recipe validation, content hashing, data validation, MLflow
parent/child runs with live metrics, atomic output); sample generations and held-out eval are switched off so
both sides do the same training work.

`--quick` checks that the bench still runs end to end in seconds (2 steps of batch 4 on 64 conversations, one
repeat); its ratio is dominated by process start-up and is not judged against the goal.

    .venv/bin/python bench/overhead.py [--stage sft|preference] [--steps 40] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEFAULT_ARCHITECTURE = "pretrain/tiny-lfm2.yaml"


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"command failed: {' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return elapsed


PREFERENCE_DATA = "datasets/quickstart/preference.jsonl"
QUICKSTART_SFT_STEPS, QUICKSTART_GOAL = 150, 1.02  # one quickstart SFT epoch (2,400 records, batch 16)
PLAIN = {"sft": "bench/plain_sft.py", "preference": "bench/plain_dpo.py"}


def bench_recipe(quickstart: dict, settings: dict, kind: str = "sft") -> tuple[dict, dict]:
    """The quickstart's tokenizer and its `kind` stage (the SFT stage, or a `preset: dpo` preference stage on the
    quickstart pairs), its base an `init` stage with the architecture of the quickstart SFT's base."""
    stages = {s["name"]: s for s in quickstart["stages"]}
    sft = dict(next(s for s in quickstart["stages"] if s["kind"] == "sft"))
    architecture = stages.get(sft.get("from"), {}).get("architecture", DEFAULT_ARCHITECTURE)
    base = {"name": "base", "kind": "init", "architecture": architecture}
    if kind == "sft":
        stage = {key: value for key, value in sft.items() if key not in ("eval_data", "epochs", "from")}
    else:
        stage = {"name": "preference", "kind": "preference", "data": PREFERENCE_DATA, "preset": "dpo",
                 "precompute_ref_log_probs": False}  # fmt: skip
    stage.update(
        settings | {"from": "base", "sample_count": 0, "save_steps": 10_000, "logging_steps": 10, "warmup": 0.0}
    )
    recipe = {k: v for k, v in quickstart.items() if k != "stages"} | {"stages": [base, stage]}
    return recipe, stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=sorted(PLAIN), default="sft")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--records", type=int, help="train on the first N SFT records (default: all)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds: checks the bench runs")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats, args.batch_size, args.records = 2, 1, 4, 64
    os.environ.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    settings = {"max_steps": args.steps, "batch_size": args.batch_size, "learning_rate": 3e-3, "max_length": 256}
    work = Path(tempfile.mkdtemp(prefix="wb-overhead-"))
    try:
        shutil.copytree(REPO / "datasets", work / "datasets")
        shutil.copytree(REPO / "pretrain", work / "pretrain")
        quickstart = yaml.safe_load((REPO / "recipes/quickstart.yaml").read_text())
        recipe, stage = bench_recipe(quickstart, settings, args.stage)
        if args.records:  # the tokenizer trains on the SFT file, so it shrinks with it
            for data in {work / stage["data"], work / bench_recipe(quickstart, settings)[1]["data"]}:
                data.write_text("".join(data.read_text().splitlines(keepends=True)[: args.records]))
        (work / "bench.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        workbench = [str(BIN / "workbench"), "run", "bench.yaml"]
        timed(workbench + ["--only", "base"], work)  # tokenizer and base model, not timed
        (base_dir,) = (work / "runs" / recipe["name"] / "base").glob("*/model")
        plain = [sys.executable, str(REPO / PLAIN[args.stage]), str(base_dir), stage["data"], str(work / "plain-out")]
        plain.append(json.dumps(settings))
        times: dict[str, list[float]] = {"plain trl": [], "workbench": []}
        for _ in range(args.repeats):  # alternating, so drift in the machine's speed hits both sides
            times["plain trl"].append(timed(plain, work))
            times["workbench"].append(timed(workbench + ["--force", stage["name"]], work))
        for name, values in times.items():
            print(
                f"{name:>10}: "
                + ", ".join(f"{v:.1f}s" for v in values)
                + f"  (median {statistics.median(values):.1f}s)"
            )
        ratio = statistics.median(times["workbench"]) / statistics.median(times["plain trl"])
        goal = QUICKSTART_GOAL if args.stage == "sft" and args.steps >= QUICKSTART_SFT_STEPS else 1.05
        verdict = "quick run, goal not judged" if args.quick else f"goal <= {goal}"
        print(f"overhead ratio (workbench / plain trl, {args.steps} {args.stage} steps): {ratio:.3f}  {verdict}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
