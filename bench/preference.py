"""Preference stage wall time with the reference log-prob cache cold vs warm, in one run.

Builds the quickstart tokenizer and tiny base model, then, `--repeats` times in one process, runs the same
`preference` stage (lfm2 preset, one epoch over the quickstart pairs, held-out pairs evaluated before and after)
three ways: cold (an empty cache: trl's reference precompute runs and fills it), warm (the same stage again, its
reference log-probs read from the cache) and with `precompute_ref_log_probs: false` (a reference forward every
step). Prints each time, the ratios cold / warm and no-precompute / warm per repeat, and their median and spread.
Goals: both >= 1.3x, steadily across repeats.

`--quick` checks that the bench still runs end to end in seconds: 8 pairs + 4 held out, batch size 4 (two
steps a run); the ratio is not judged against the goal.

    .venv/bin/python bench/preference.py [--pairs 256] [--batch-size 8] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _subset(source: Path, target: Path, count: int) -> None:
    target.write_text("\n".join(source.read_text().splitlines()[:count]) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--eval-pairs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="few pairs, seconds: checks the bench runs")
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.eval_pairs, args.batch_size, args.repeats = 8, 4, 4, 1
    os.environ.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", TQDM_DISABLE="1")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from rich.console import Console

    from workbench.runner import load_recipe
    from workbench.runner.executor import run_recipe

    work = Path(tempfile.mkdtemp(prefix="wb-preference-"))
    cwd = os.getcwd()
    try:
        os.chdir(work)
        (work / "data").mkdir()
        _subset(REPO / "datasets/quickstart/preference.jsonl", work / "data/pairs.jsonl", args.pairs)
        _subset(REPO / "datasets/quickstart/preference_eval.jsonl", work / "data/eval.jsonl", args.eval_pairs)
        pref = {
            "name": "pref", "kind": "preference", "from": "base", "data": "data/pairs.jsonl",
            "eval_data": "data/eval.jsonl", "preset": "lfm2", "max_length": 256, "epochs": 1,
            "batch_size": args.batch_size, "learning_rate": 1e-4, "sample_count": 0, "save_steps": 10_000,
        }  # fmt: skip
        recipe = {
            "name": "bench",
            "tokenizer": {"train": {"files": [str(REPO / "datasets/quickstart/sft.jsonl")], "vocab_size": 2048}},
            "stages": [
                {"name": "base", "kind": "init", "architecture": str(REPO / "pretrain/tiny-lfm2.yaml")},
                pref,
                pref | {"name": "pref_no_precompute", "precompute_ref_log_probs": False},
            ],
        }
        (work / "bench.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        quiet = Console(quiet=True)

        def stage_seconds(name: str, force: bool) -> float:
            outcomes = run_recipe(
                load_recipe(work / "bench.yaml"), only={name}, force={name} if force else set(), console=quiet
            )
            return outcomes[-1].seconds

        run_recipe(load_recipe(work / "bench.yaml"), only={"base"}, console=quiet)  # not timed
        # one-time imports (trl, datasets: seconds) happen here, so cold vs warm differs by the cache alone
        import datasets  # noqa: F401
        import workbench.preference.trainer  # noqa: F401

        print(f"preference stage, lfm2 preset, {args.pairs} pairs + {args.eval_pairs} held out, tiny-lfm2 base, CPU")
        ratios: dict[str, list[float]] = {"cold / warm": [], "no precompute / warm": []}
        for repeat in range(args.repeats):
            shutil.rmtree(work / "runs" / "bench" / "_ref_logps", ignore_errors=True)  # cold again
            cold = stage_seconds("pref", force=True)
            warm = stage_seconds("pref", force=True)
            per_step = stage_seconds("pref_no_precompute", force=True)
            print(
                f"  repeat {repeat + 1}: cold cache (precompute runs): {cold:.1f}s | warm cache (precompute read): "
                f"{warm:.1f}s | no precompute (ref each step): {per_step:.1f}s"
            )
            ratios["cold / warm"].append(cold / warm)
            ratios["no precompute / warm"].append(per_step / warm)
        verdict = "quick run, goal not judged" if args.quick else "goal >= 1.3x"
        for name, values in ratios.items():
            spread = f" (spread {min(values):.2f}-{max(values):.2f} over {len(values)} repeats)"
            print(f"{name}: {statistics.median(values):.2f}x{spread}  {verdict}")
    finally:
        os.chdir(cwd)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
