"""Bad recipes and the exact error each must give (file:line: path: message)."""

from __future__ import annotations

import json
import textwrap

import pytest
from typer.testing import CliRunner

from workbench.cli import app
from workbench.errors import RecipeError
from workbench.runner import load_recipe
from workbench.stages.registry import stage_kinds

HEADER = """\
name: demo
tokenizer:
  train:
    files: [data/chat.jsonl]
stages:
  - name: base
    kind: init
    architecture: arch.yaml
"""


@pytest.fixture
def project(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "chat.jsonl").write_text(json.dumps({"messages": [{"role": "assistant", "content": "hi"}]}))
    (tmp_path / "arch.yaml").write_text("hidden_size: 64\n")
    return tmp_path


def errors_of(project, text: str) -> list[str]:
    path = project / "r.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, root=project)
    return [str(p).replace(str(path), "r.yaml") for p in caught.value.problems]


SFT = "  - name: sft\n    kind: sft\n    from: base\n    data: data/chat.jsonl\n"

CASES = {
    "unknown stage reference": (
        HEADER + "  - name: sft\n    kind: sft\n    from: bas\n    data: data/chat.jsonl\n",
        ["r.yaml:11: stages[1].from: unknown stage 'bas' (did you mean 'base'?)"],
    ),
    "unknown stage inside a mapping": (
        HEADER + "  - name: m\n    kind: merge\n    method: linear\n    models: [base, {from: bsae}]\n"
        "    parameters: {weight: 1.0}\n",
        ["r.yaml:12: stages[1].models[1].from: unknown stage 'bsae' (did you mean 'base'?)"],
    ),
    "unknown stage in a nested field": (
        HEADER + "  - name: ev\n    kind: evaluate\n    from: base\n    suites: [json_schema]\n"
        "  - name: m\n    kind: merge\n    method: linear\n    models: [base, base]\n"
        "    parameters: {weight: {sweep: [0.5, 1.0]}}\n"
        "    select: {metric: json_schema/valid_rate, suite: json_schema, mode: max, compare: [e]}\n",
        ["r.yaml:18: stages[2].select.compare[0]: unknown stage 'e' (did you mean 'ev'?)"],
    ),
    "evaluate names both a stage and a model path": (
        HEADER + "  - name: ev\n    kind: evaluate\n    from: base\n    model: some/folder\n    suites: [json_schema]\n",
        ["r.yaml:9: stages[1]: give exactly one of 'from' (an earlier stage) or 'model' (a model folder)"],
    ),
    "unknown field with suggestion": (
        HEADER + SFT + "    learning_rte: 0.1\n",
        ["r.yaml:13: stages[1]: unknown field 'learning_rte' (did you mean 'learning_rate'?)"],
    ),
    "unknown kind": (
        HEADER + "  - name: x\n    kind: stf\n",
        ["r.yaml:10: stages[1].kind: unknown stage kind 'stf' (did you mean 'sft'?); known kinds: {kinds}"],
    ),
    "missing kind": (
        HEADER + "  - name: x\n",
        ["r.yaml:9: stages[1]: missing required field 'kind' (one of: {kinds})"],
    ),
    "missing required field": (
        HEADER + "  - name: sft\n    kind: sft\n    from: base\n",
        ["r.yaml:9: stages[1]: missing required field 'data'"],
    ),
    "duplicate stage name": (
        HEADER + "  - name: base\n    kind: init\n    architecture: arch.yaml\n",
        ["r.yaml:9: stages[1].name: duplicate stage name 'base' (first defined at line 6)"],
    ),
    "self reference": (
        HEADER + "  - name: sft\n    kind: sft\n    from: sft\n    data: data/chat.jsonl\n",
        ["r.yaml:11: stages[1].from: stage 'sft' cannot use its own output"],
    ),
    "cycle": (
        HEADER
        + "  - name: a\n    kind: sft\n    from: b\n    data: data/chat.jsonl\n"
        + "  - name: b\n    kind: sft\n    from: a\n    data: data/chat.jsonl\n",
        ["r.yaml:9: stages[1].name: dependency cycle: a -> b -> a"],
    ),
    "wrong type": (
        HEADER + SFT + "    epochs: many\n",
        [
            "r.yaml:13: stages[1].epochs: Input should be a valid number, unable to parse string as a number (got 'many')"
        ],
    ),
    "out of range": (
        HEADER + SFT + "    batch_size: 0\n",
        ["r.yaml:13: stages[1].batch_size: Input should be greater than or equal to 1 (got 0)"],
    ),
    "both from and model": (
        HEADER + SFT + "    model: org/model\n",
        ["r.yaml:9: stages[1]: give exactly one of 'from' (an earlier stage) or 'model' (a path or hub id)"],
    ),
    "missing data file": (
        HEADER + "  - name: sft\n    kind: sft\n    from: base\n    data: data/missing.jsonl\n",
        ["r.yaml:12: stages[1].data: file not found: 'data/missing.jsonl' (relative to {root})"],
    ),
    "duplicate key": (
        HEADER + SFT + "    data: data/chat.jsonl\n",
        ["r.yaml:13: stages[1]: duplicate key 'data' (first at line 12); YAML would keep only the last"],
    ),
    "bad stage name": (
        HEADER.replace("name: base", "name: 'my stage'"),
        ["r.yaml:6: stages[0].name: String should match pattern '^[A-Za-z][A-Za-z0-9_\\-]*$' (got 'my stage')"],
    ),
    "tokenizer both path and train": (
        HEADER.replace("tokenizer:\n", "tokenizer:\n  path: org/tok\n"),
        ["r.yaml:2: tokenizer: give exactly one of 'path' or 'train'"],
    ),
    "unknown top-level field": (
        "nam: x\n" + HEADER,
        ["r.yaml:1: unknown field 'nam' (did you mean 'name'?)"],
    ),
    "invalid yaml": (
        HEADER + "  - name: [unclosed\n",
        ["r.yaml:10: invalid YAML: expected ',' or ']', but got '<stream end>'"],
    ),
    "not a mapping": (
        "- just\n- a list\n",
        ["r.yaml:1: a recipe must be a mapping with 'name', 'tokenizer' and 'stages'"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_recipe_gives_exact_error(project, case):
    text, expected = CASES[case]
    kinds = ", ".join(sorted(stage_kinds()))
    assert errors_of(project, text) == [e.replace("{root}", str(project)).replace("{kinds}", kinds) for e in expected]


def test_every_problem_is_reported_at_once(project):
    text = HEADER + "  - name: sft\n    kind: sft\n    from: bsae\n    data: nope.jsonl\n    epochs: -1\n"
    found = errors_of(project, text)
    assert [e.split(": ", 2)[1] for e in found] == ["stages[1].from", "stages[1].data", "stages[1].epochs"]


def test_valid_recipe_orders_stages_by_dependency(project):
    head, base_stage = HEADER.split("stages:\n")
    path = project / "r.yaml"
    path.write_text(head + "stages:\n" + SFT + base_stage)  # sft is written before the stage it uses
    loaded = load_recipe(path, root=project)
    assert loaded.order == ["base", "sft"]
    assert loaded.stages["sft"].from_ == "base"


def test_cli_validate_prints_errors_without_traceback(project, monkeypatch):
    monkeypatch.chdir(project)
    (project / "r.yaml").write_text(HEADER + "  - name: x\n    kind: stf\n")
    result = CliRunner().invoke(app, ["validate", "r.yaml"])
    assert result.exit_code == 1
    assert "r.yaml:10: stages[1].kind: unknown stage kind 'stf'" in result.output
    assert "Traceback" not in result.output


def test_cli_validate_ok(project, monkeypatch):
    monkeypatch.chdir(project)
    (project / "r.yaml").write_text(HEADER + SFT)
    result = CliRunner().invoke(app, ["validate", "r.yaml"])
    assert result.exit_code == 0, result.output
    assert "OK: r.yaml (2 stages: base -> sft)" in result.output


def test_schema_lists_every_stage_kind():
    from workbench.recipe.json_schema import recipe_json_schema

    schema = recipe_json_schema()
    kinds = {d["properties"]["kind"]["const"] for d in schema["$defs"].values() if "kind" in d.get("properties", {})}
    assert {"init", "sft"} <= kinds
    assert schema["$defs"]["SFTStageConfig"]["properties"]["learning_rate"]["description"] == "Peak learning rate."
    assert "from" in schema["$defs"]["SFTStageConfig"]["properties"]
