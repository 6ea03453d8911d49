"""Orchestration overhead: the SFT stage through `workbench run` against the same training as a plain
trl script (bench/plain_sft.py), same model, data and settings, run one after the other in one process
tree. Prints each wall time and the ratio workbench / plain. Goal: <= 1.05.

The workbench side does everything a user gets (recipe validation, content hashing, data validation,
MLflow parent/child runs with live metrics, atomic output); sample generations and held-out eval are
switched off so both sides do the same training work.

    .venv/bin/python bench/overhead.py [--steps 60] [--repeats 2]
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


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"command failed: {' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    settings = {"max_steps": args.steps, "batch_size": 16, "learning_rate": 3e-3, "max_length": 256}
    work = Path(tempfile.mkdtemp(prefix="wb-overhead-"))
    try:
        shutil.copytree(REPO / "datasets", work / "datasets")
        shutil.copytree(REPO / "pretrain", work / "pretrain")
        recipe = yaml.safe_load((REPO / "recipes/quickstart.yaml").read_text())
        sft = next(s for s in recipe["stages"] if s["kind"] == "sft")
        sft.pop("eval_data", None)
        sft.pop("epochs", None)
        sft.update(settings | {"sample_count": 0, "save_steps": 10_000, "logging_steps": 10, "warmup": 0.0})
        recipe["stages"] = [s for s in recipe["stages"] if s["name"] in (sft["from"], sft["name"])]
        (work / "bench.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        workbench = [str(BIN / "workbench"), "run", "bench.yaml"]
        timed(workbench + ["--only", sft["from"]], work)  # tokenizer and base model, not timed
        (base_dir,) = (work / "runs" / recipe["name"] / sft["from"]).glob("*/model")
        plain = [sys.executable, str(REPO / "bench/plain_sft.py"), str(base_dir), sft["data"], str(work / "plain-out")]
        plain.append(json.dumps(settings))
        times: dict[str, list[float]] = {"plain trl": [], "workbench": []}
        for _ in range(args.repeats):
            times["plain trl"].append(timed(plain, work))
            times["workbench"].append(timed(workbench + ["--force", sft["name"]], work))
        for name, values in times.items():
            print(
                f"{name:>10}: "
                + ", ".join(f"{v:.1f}s" for v in values)
                + f"  (median {statistics.median(values):.1f}s)"
            )
        ratio = statistics.median(times["workbench"]) / statistics.median(times["plain trl"])
        print(f"overhead ratio (workbench / plain trl, {args.steps} SFT steps): {ratio:.3f}  goal <= 1.05")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
