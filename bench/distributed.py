"""SFT on 2 processes (torchrun, DDP, gloo) against 1 process with the same global batch, measured in one run:
the wall-time ratio of the stage, and the launch overhead (a 1-step stage on 2 processes minus the same on 1).

On a 2-core CPU no speed-up is expected (two processes share the cores the one process already used); the figures
are for the record, and the same bench on a GPU node measures the real scaling. Builds a tiny project (the
quickstart's architecture at random init, the quickstart's SFT data) in a temporary folder and runs it through
`workbench run`, so the figures include everything a user waits for.

`--quick` checks the bench runs end to end: 2 steps, one repeat; the figures are not judged.

    .venv/bin/python bench/distributed.py [--steps 40] [--batch-size 8] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def write_project(root: Path, steps: int, batch: int) -> Path:
    (root / "data").mkdir()
    lines = (REPO / "datasets/quickstart/sft.jsonl").read_text(encoding="utf-8").splitlines()[:256]
    (root / "data/train.jsonl").write_text("\n".join(lines) + "\n")
    sft = {"kind": "sft", "from": "base", "data": "data/train.jsonl", "max_length": 256, "max_steps": steps,
           "learning_rate": 1e-3, "logging_steps": max(steps // 4, 1), "save_steps": 10_000, "sample_count": 0}  # fmt: skip
    recipe = {
        "name": "bench",
        "tokenizer": {"train": {"files": ["data/train.jsonl"], "vocab_size": 1024}},
        "stages": [
            {"name": "base", "kind": "init", "architecture": str(REPO / "pretrain/tiny-lfm2.yaml")},
            {"name": "one", **sft, "batch_size": batch},
            {"name": "two", **sft, "batch_size": batch // 2, "resources": {"processes": 2}},
        ],
    }
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def stage_seconds(root: Path, stage: str) -> float:
    folder = next(p for p in (root / "runs/bench" / stage).iterdir() if (p / "stage.json").is_file())
    return json.loads((folder / "stage.json").read_text())["seconds"]


def run(recipe: Path, *extra: str) -> None:
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    workbench = str(Path(sys.executable).with_name("workbench"))
    done = subprocess.run([workbench, "run", str(recipe), *extra], cwd=recipe.parent, env=env, capture_output=True,
                          text=True)  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"workbench run failed:\n{done.stderr[-3000:]}")


def measure(steps: int, batch: int, repeats: int) -> tuple[float, float]:
    """Median seconds of the 1-process and the 2-process stage."""
    ones, twos = [], []
    with tempfile.TemporaryDirectory() as tmp:
        recipe = write_project(Path(tmp), steps, batch)
        run(recipe)  # builds the tokenizer and base, and warms the caches
        ones.append(stage_seconds(Path(tmp), "one"))
        twos.append(stage_seconds(Path(tmp), "two"))
        for _ in range(repeats - 1):
            run(recipe, "--force", "one", "--force", "two")
            ones.append(stage_seconds(Path(tmp), "one"))
            twos.append(stage_seconds(Path(tmp), "two"))
    return sorted(ones)[len(ones) // 2], sorted(twos)[len(twos) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8, help="global batch (each of 2 processes takes half)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 steps, one repeat: checks the bench runs")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats = 2, 1
    started = time.time()
    one, two = measure(args.steps, args.batch_size, args.repeats)
    one_step, two_step = measure(1, args.batch_size, 1) if not args.quick else (one, two)
    verdict = "quick run, not judged" if args.quick else "2 CPU cores: no speed-up expected, for the record"
    print(
        f"sft stage, {args.steps} steps, global batch {args.batch_size}: 1 process {one:.1f} s, 2 processes {two:.1f} s"
    )
    print(f"wall-time ratio 2 / 1 processes: {two / one:.2f}x ({verdict})")
    print(f"launch overhead (1-step stage, 2 processes minus 1): {max(two_step - one_step, 0.0):.1f} s")
    print(f"bench wall time {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
