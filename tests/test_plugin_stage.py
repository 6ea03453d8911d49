"""A stage kind from outside the package (tests/plugins/workbench_wordcount), found through a real entry point.

The plug-in is not installed into the venv: each test lays out what `pip install` would (a `*.dist-info` folder
with METADATA and entry_points.txt, and the module beside it) in a folder put on PYTHONPATH, and runs the
`workbench` command line as a subprocess, so discovery goes through `importlib.metadata` exactly as for an
installed package. The generic machinery must then work for the kind as for a built-in: marker checks at
validate, hashing, caching, the stage folder, and a halt from the kind's review.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import workbench_cli, write_tiny_data

PLUGIN = Path(__file__).resolve().parent / "plugins" / "workbench_wordcount"

pytestmark = pytest.mark.slow


def install_plugin(site: Path) -> None:
    """What `pip install tests/plugins/workbench_wordcount` would leave in site-packages, written by hand: the
    module, and a dist-info whose entry points are the ones the plug-in's pyproject.toml declares."""
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    entries = project["entry-points"]["workbench.stages"]
    assert entries == {"word_stats": "workbench_wordcount:KIND"}
    info = site / f"workbench_wordcount-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entries.items())
    (info / "entry_points.txt").write_text(f"[workbench.stages]\n{lines}")
    shutil.copy(PLUGIN / "workbench_wordcount.py", site / "workbench_wordcount.py")


def stats_stage(**fields) -> dict:
    return {"name": "stats", "kind": "word_stats", "data": "data/train.jsonl", "score_with": "base",
            "score_lines": 8} | fields  # fmt: skip


def write_recipe(root: Path, *stages: dict) -> Path:
    """`root/recipe.yaml`: the tiny init stage, then `stages`. No tracking URI: MLflow's default local store."""
    recipe = {
        "name": "tiny",
        "tokenizer": {"train": {"files": ["data/train.jsonl"], "vocab_size": 400}},
        "stages": [{"name": "base", "kind": "init", "architecture": "arch.yaml"}, *stages],
    }
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.fixture
def project(tmp_path):
    """(project root, site folder): the plug-in laid out in `tmp_path/site`, a tiny project in `tmp_path/project`."""
    site, root = tmp_path / "site", tmp_path / "project"
    install_plugin(site)
    root.mkdir()
    write_tiny_data(root)
    return root, site


def workbench(root: Path, *args: str, site: Path | None) -> subprocess.CompletedProcess:
    """`workbench ARGS` in `root`, with the plug-in's folder on PYTHONPATH (none when `site` is None)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PYTHONPATH")}
    env |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "200"}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return subprocess.run([*workbench_cli(), *args], cwd=root, env=env, capture_output=True, text=True, timeout=600)


def line_of(path: Path, text: str) -> int:
    return next(number for number, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_the_entry_point_registers_the_kind_and_the_generic_checks_apply(project):
    root, site = project
    write_recipe(root, stats_stage())

    # Without the plug-in's folder on the path there is no such kind: the entry point is what registers it.
    missing = workbench(root, "validate", "recipe.yaml", site=None)
    assert missing.returncode == 1 and "unknown stage kind 'word_stats'" in missing.stderr, missing.stderr

    valid = workbench(root, "validate", "recipe.yaml", site=site)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert "OK: recipe.yaml (2 stages: base -> stats)" in valid.stdout

    # The loader's checks come from the plug-in's markers and schema, and its check_recipe runs, all at once.
    recipe = write_recipe(
        root,
        stats_stage(data="data/trian.jsonl"),
        stats_stage(name="bounded", max_words=0),
        stats_stage(name="scored", score_with="bsae"),
        stats_stage(name="held_out", data="data/eval.jsonl", max_words=1000),
        stats_stage(name="copy", data="data/eval.jsonl"),
    )
    invalid = workbench(root, "validate", "recipe.yaml", site=site)
    assert invalid.returncode == 1, invalid.stdout + invalid.stderr
    errors = invalid.stderr.splitlines()
    typo, bound, ref = line_of(recipe, "trian"), line_of(recipe, "max_words: 0"), line_of(recipe, "bsae")
    assert f"error: recipe.yaml:{typo}: stats.data: file not found: 'data/trian.jsonl' (relative to {root})" in errors
    assert (
        f"error: recipe.yaml:{bound}: bounded.max_words: Input should be greater than or equal to 1 (got 0)" in errors
    )
    assert f"error: recipe.yaml:{ref}: scored.score_with: unknown stage 'bsae' (did you mean 'base'?)" in errors
    # `copy` differs from `held_out` only in an unhashed field: the kind's check_recipe reports it.
    copy = line_of(recipe, "name: copy") + 2  # its `data:` line
    assert (
        f"error: recipe.yaml:{copy}: copy.data: counts the same as stage 'held_out' (same data and settings)" in errors
    )
    assert len(errors) == 4, invalid.stderr

    write_recipe(root, stats_stage())
    plan = workbench(root, "plan", "recipe.yaml", site=site)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    row = next(line for line in plan.stdout.splitlines() if "word_stats" in line)
    assert row.split("│")[1].strip() == "stats" and "base" in row and "will run" in row, plan.stdout


def test_the_stage_runs_caches_and_its_review_halts_the_recipe(project):
    root, site = project
    write_recipe(root, stats_stage())
    first = workbench(root, "run", "recipe.yaml", site=site)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "done: base ran, stats ran" in first.stdout
    (folder,) = [p for p in (root / "runs/tiny/stats").iterdir() if not p.name.startswith(".")]
    info = json.loads((folder / "stage.json").read_text())
    stats = json.loads((folder / "stats.json").read_text())
    lines = (root / "data/train.jsonl").read_text().splitlines()
    assert info["kind"] == "word_stats" and list(info["inputs"]) == ["base"]
    assert stats["lines"] == len(lines) == info["metrics"]["lines"] == 96
    assert stats["words"] == info["metrics"]["words"] > stats["lines"]
    assert stats["tokens"] == info["metrics"]["tokens"] > 0 and len(stats["top_words"]) == 10
    assert info["metrics"]["loss"] > 0, "the random base model scored the text"
    assert (root / "runs/mlflow.db").is_file(), "MLflow's default local store, in the project"

    second = workbench(root, "run", "recipe.yaml", site=site)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "done: base cached, stats cached" in second.stdout

    # max_words is unhashed: the stage stays cached, but the review re-checks the recorded count and halts.
    words = stats["words"]
    write_recipe(root, stats_stage(max_words=words - 1))
    halted = workbench(root, "run", "recipe.yaml", site=site)
    assert halted.returncode == 1, halted.stdout + halted.stderr
    assert "stats (word_stats) cached" in halted.stdout and "running" not in halted.stdout
    reason = f"stage 'stats': data/train.jsonl has {words} words, more than max_words {words - 1}"
    assert f"error: {reason}" in halted.stderr.splitlines(), halted.stderr
    assert [p.name for p in (root / "runs/tiny/stats").iterdir() if not p.name.startswith(".")] == [folder.name]

    write_recipe(root, stats_stage(max_words=words))
    within = workbench(root, "run", "recipe.yaml", site=site)
    assert within.returncode == 0, within.stdout + within.stderr
    assert f"{words} words, within max_words {words}" in within.stdout
