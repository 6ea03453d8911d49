"""Gate expressions: the grammar, absolute and relative checks, and recipe-time validation."""

from __future__ import annotations

import pytest
import yaml

from workbench.errors import RecipeError
from workbench.evaluation.gates import check_gates, gate_table, parse_gate


def test_absolute_and_relative_gates_parse():
    absolute = parse_gate("tool_use/ast_accuracy >= 0.8")
    assert (absolute.metric, absolute.op, absolute.threshold, absolute.stage) == (
        "tool_use/ast_accuracy",
        ">=",
        0.8,
        None,
    )
    relative = parse_gate("json_schema/valid_rate>=eval_base - 0.02")
    assert (relative.stage, relative.margin, relative.threshold) == ("eval_base", -0.02, None)
    assert parse_gate("a/b < eval-sft + 1").margin == 1.0
    assert parse_gate("a/b == eval_sft").margin == 0.0


@pytest.mark.parametrize(
    "text", ["ast_accuracy >= 0.8", "a/b >= ", "a/b => 1", "a/b >= __import__('os')", "a/b >= 1 + 2", "a/b >= x * 2"]
)
def test_malformed_gates_are_rejected(text):
    with pytest.raises(ValueError, match="cannot parse gate"):
        parse_gate(text)


def test_gate_checks_absolute_relative_and_missing_metrics():
    gates = [parse_gate(g) for g in (
        "t/acc >= 0.8", "t/acc > 0.9", "j/valid >= base - 0.02", "j/valid >= base + 0.5", "t/missing >= 0", "j/only_here >= base",
    )]  # fmt: skip
    results = check_gates(gates, {"t/acc": 0.85, "j/valid": 0.5, "j/only_here": 1.0}, {"base": {"j/valid": 0.51}})
    assert [r.passed for r in results] == [True, False, True, False, False, False]
    assert results[2].bound == pytest.approx(0.49)
    assert results[4].value is None and results[5].bound is None


def test_gate_table_lists_every_gate():
    results = [{"gate": "t/acc >= 0.8", "value": 0.85, "bound": 0.8, "passed": True},
               {"gate": "j/v >= base", "value": None, "bound": 0.5, "passed": False}]  # fmt: skip
    table = gate_table("eval_sft", results)
    assert table.splitlines()[0] == "stage 'eval_sft': 1 of 2 gates failed"
    assert "PASS" in table.splitlines()[2] and "not measured" in table.splitlines()[3] and "FAIL" in table


def _recipe(tmp_path, evaluate: dict):
    from workbench.runner import load_recipe

    (tmp_path / "train.jsonl").write_text("{}\n")
    (tmp_path / "arch.yaml").write_text("hidden_size: 32\n")
    recipe = {
        "name": "r",
        "tokenizer": {"train": {"files": ["train.jsonl"]}},
        "stages": [
            {"name": "base", "kind": "init", "architecture": "arch.yaml"},
            {"name": "eval_base", "kind": "evaluate", "from": "base", "suites": ["json_schema"]},
            {"name": "eval_again", "kind": "evaluate", "from": "base", "suites": ["json_schema", "tool_use"]}
            | evaluate,
        ],
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return load_recipe(path)


def test_a_relative_gate_makes_the_compared_stage_an_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loaded = _recipe(tmp_path, {"compare": ["eval_base"], "gates": ["json_schema/valid_rate >= eval_base - 0.02"]})
    assert loaded.order.index("eval_base") < loaded.order.index("eval_again")
    assert loaded.dependencies("eval_again") == ["base", "eval_base"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"gates": ["json_schema/valid_rate >= eval_base"]}, "list it in 'compare'"),
        ({"gates": ["instruction_following/prompt_strict_acc >= 0.5"]}, "which 'suites' does not list"),
        ({"gates": ["valid_rate >= 1"]}, "cannot parse gate"),
        ({"compare": ["nope"]}, "unknown stage 'nope'"),
    ],
)
def test_bad_gates_fail_at_load_time_with_their_line(tmp_path, monkeypatch, fields, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError) as caught:
        _recipe(tmp_path, fields)
    assert any(message in str(problem) and problem.line for problem in caught.value.problems), caught.value
