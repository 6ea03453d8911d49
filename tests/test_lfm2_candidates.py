"""recipes/lfm2-candidates.yaml end to end through the CLI in a copy of what it reads: SFT candidates on a
learning-rate grid, each its own hash, folder and nested MLflow run; a second run is all cache hits; the merge took
the two candidates the JSON-schema suite scored best. The copy trains each candidate 12 steps instead of the
recipe's 60: the mechanism is under test, not the scores (CI time)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from workbench.runner import load_recipe
from workbench.runner.plan import make_plan

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
RECIPE = "recipes/lfm2-candidates.yaml"
NEEDS = (RECIPE, "datasets/quickstart/sft.jsonl", "pretrain/tiny-lfm2.yaml")


def workbench(root: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m workbench.cli ARGS` in `root`, on this checkout's package."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "workbench.cli", *args]
    done = subprocess.run(command, cwd=root, env=os.environ | {"PYTHONPATH": path}, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_candidates_are_trained_once_cached_tracked_and_merged(tmp_path):
    for relative in NEEDS:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / relative, tmp_path / relative)
    recipe = tmp_path / RECIPE
    text = recipe.read_text()
    assert text.count("max_steps: 60") == 1 and text.count("save_steps: 60") == 1, "the recipe's step counts moved"
    recipe.write_text(text.replace("max_steps: 60", "max_steps: 12").replace("save_steps: 60", "save_steps: 12"))
    started = time.time()
    first = workbench(tmp_path, "run", RECIPE)
    seconds = time.time() - started

    loaded = load_recipe(tmp_path / RECIPE, root=tmp_path)
    candidates = loaded.sweeps["sft"].candidates
    assert candidates == ("sft@learning_rate=0.001", "sft@learning_rate=0.003", "sft@learning_rate=0.006")
    plan = {stage.name: stage for stage in make_plan(loaded).stages}
    hashes = {plan[name].hash for name in candidates}
    assert len(hashes) == 3, "one hash per grid point"
    store = tmp_path / "runs/lfm2-candidates"
    assert sorted(p.name for p in (store / "sft").iterdir() if (p / "stage.json").is_file()) == sorted(
        h[:16] for h in hashes
    ), "one cache entry per grid point, in the stage's folder"
    assert {stage.status for stage in plan.values()} == {"cached"}

    second = workbench(tmp_path, "run", RECIPE)
    done = next(line for line in second.stdout.splitlines() if line.startswith("done: "))
    assert done.count(" cached") == len(plan) and " ran" not in done, done

    merged = json.loads((store / "merged" / plan["merged"].hash[:16] / "stage.json").read_text())
    picked = merged["details"]["inputs_of"]
    assert picked["candidates_of"] == "sft" and [row["candidate"] for row in picked["candidates"]] == list(candidates)
    assert len(picked["kept"]) == 2 and set(picked["kept"]) < set(candidates)
    score = {row["candidate"]: row[picked["by"]] for row in picked["candidates"]}  # the recipe's `by` is mode: max
    assert min(score[name] for name in picked["kept"]) >= max(
        score[name] for name in candidates if name not in picked["kept"]
    ), "the kept candidates are the best two by the recipe's `by` metric"
    assert [row["model"] for row in merged["details"]["inputs"]] == ["base", *picked["kept"]]
    assert set(merged["inputs"]) >= {"base", *candidates}, "every candidate's hash is in the merge's cache key"

    client = MlflowClient(f"sqlite:///{store.parent / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lfm2-candidates").experiment_id
    runs = client.search_runs([experiment])
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert len(parents) == 2
    for parent in parents:
        children = {
            run.info.run_name: run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id
        }
        assert set(candidates) <= set(children), "a nested run per candidate under the recipe's run"
        for name, value in zip(candidates, ("0.001", "0.003", "0.006"), strict=True):
            run = children[name]
            assert run.info.status == "FINISHED"
            assert run.data.tags["workbench.candidate_of"] == "sft"
            assert run.data.tags["workbench.stage_hash"] == plan[name].hash
            assert run.data.params["stage.learning_rate"] == value
    print(f"\nfirst run {seconds:.0f} s; candidates by {picked['by']}:")
    for row in picked["candidates"]:
        print(f"  {row['candidate']}: {row[picked['by']]:.4f}{' (kept)' if row['kept'] else ''}")
    print(first.stdout[-2000:])
