"""Every recipe shipped in `recipes/` validates and plans on a machine without a GPU or the hub (hub ids are
planned, not downloaded), so a recipe the docs point at cannot rot unnoticed."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.runner import load_recipe
from workbench.runner.plan import make_plan

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("recipe", sorted(p.name for p in (REPO / "recipes").glob("*.yaml")))
def test_shipped_recipe_validates_and_plans(recipe, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    plan = make_plan(load_recipe(REPO / "recipes" / recipe, root=REPO))
    assert plan.stages and all(len(stage.hash) == 64 for stage in plan.stages)
