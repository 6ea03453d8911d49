"""The quickstart's gates can fail: checked, as `recipes/quickstart.yaml` writes them, against the scores of a
model that learned nothing in place of the gated stage's own (the distilled base's scores, and a model that
answers nothing at all), with the stages it compares against keeping the scores a fresh run recorded
(`tests/data/quickstart_scores.json`). The same recorded scores pass every gate, so the bounds are ones a working
run meets."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import yaml

from workbench.evaluation.gates import check_gates, parse_gate

REPO = Path(__file__).resolve().parents[1]
RECORDED = {
    k: v for k, v in json.loads((REPO / "tests/data/quickstart_scores.json").read_text()).items() if k[0] != "_"
}
NOTHING_ANSWERED = {  # empty answers: no JSON and no call (instruction following is scored in `_learned_nothing`)
    "json_schema/parse_rate": 0.0,
    "json_schema/valid_rate": 0.0,
    "json_schema/field_accuracy": 0.0,
    "tool_use/call_rate": 0.0,
    "tool_use/ast_accuracy": 0.1667,  # the irrelevance items, answered by making no call
    "tool_use/irrelevance_accuracy": 1.0,
}


# one call block whatever it is asked: no JSON, no call withheld, no argument right
ALWAYS_CALLS = NOTHING_ANSWERED | {
    "tool_use/call_rate": 1.0,
    "tool_use/parse_rate": 1.0,
    "tool_use/ast_accuracy": 0.0,
    "tool_use/irrelevance_accuracy": 0.0,
}
A_CALL = '<|tool_call_start|>[get_weather(city="Paris")]<|tool_call_end|>'


@functools.cache  # every stage's gates are checked against the same few replies
def _instruction_score(reply: str) -> float:
    """prompt_loose_acc of `reply` given to every instruction-following item, by lm-eval's own checkers."""
    from workbench.evaluation.ifeval import check_instructions, ensure_punkt_tab

    ensure_punkt_tab()
    items = [json.loads(line) for line in (REPO / "evals/instruction_following/data.jsonl").read_text().splitlines()]
    followed = [
        check_instructions(i["prompt"], reply, i["instruction_id_list"], i["kwargs"])["prompt_loose"] for i in items
    ]
    return sum(followed) / len(items)


def _learned_nothing(nobody: str) -> dict[str, float]:
    if nobody == "the distilled base":
        return RECORDED["eval_base"]
    if nobody == "a model that calls a tool on every request":
        return ALWAYS_CALLS | {"instruction_following/prompt_loose_acc": _instruction_score(A_CALL)}
    return NOTHING_ANSWERED | {"instruction_following/prompt_loose_acc": _instruction_score("")}


# the first two never call a tool, so they ace the irrelevance items; the third never withholds a call
LEARNED_NOTHING = ("the distilled base", "a model that answers nothing", "a model that calls a tool on every request")


def gated_stages() -> dict[str, list[str]]:
    stages = yaml.safe_load((REPO / "recipes/quickstart.yaml").read_text())["stages"]
    return {stage["name"]: stage["gates"] for stage in stages if stage.get("gates")}


def test_the_recorded_run_passes_every_gate():
    for stage, gates in gated_stages().items():
        results = check_gates([parse_gate(g) for g in gates], RECORDED[stage], RECORDED)
        assert all(r.passed for r in results), (stage, [r.gate for r in results if not r.passed])


def _quality_gates(gates: list[str]) -> list:
    return [parse_gate(g) for g in gates if not g.startswith("deploy/")]


def _failing_metrics(gates: list[str], scores: dict[str, float]) -> set[str]:
    """The quality metrics with a gate that fails on `scores` (the other stages keeping their recorded scores)."""
    return {r.gate.split()[0] for r in check_gates(_quality_gates(gates), scores, RECORDED) if not r.passed}


@pytest.mark.parametrize("nobody", LEARNED_NOTHING)
def test_every_gated_stage_stops_a_model_that_learned_nothing(nobody):
    for stage, gates in gated_stages().items():
        assert _failing_metrics(gates, _learned_nothing(nobody)), (
            f"{stage}: every gate passes on the scores of {nobody}"
        )


def test_every_gated_quality_metric_fails_on_a_model_that_learned_nothing():
    """Each quality metric a stage gates on has a gate that fails when the gated stage's scores are those of a
    model that learned nothing of what it measures: the base's and an empty answer's for every metric but
    irrelevance, which a model that never calls aces; a model that calls on every request for irrelevance. (A
    metric gated on both sides, for parity, fails on one side.) Deploy gates are checked below: they gate speed
    and size, which such a model has."""
    never_call, always_call = LEARNED_NOTHING[:2], LEARNED_NOTHING[2:]
    for stage, gates in gated_stages().items():
        failing = {nobody: _failing_metrics(gates, _learned_nothing(nobody)) for nobody in LEARNED_NOTHING}
        for metric in {gate.metric for gate in _quality_gates(gates)}:
            nobodies = always_call if metric == "tool_use/irrelevance_accuracy" else never_call
            passing = [nobody for nobody in nobodies if metric not in failing[nobody]]
            assert not passing, f"{stage}: {metric} passes on the scores of {passing}"


def test_deploy_gates_fail_on_a_slow_or_large_file():
    gates = [parse_gate(g) for g in gated_stages()["eval_device"] if g.startswith("deploy/")]
    assert gates, "the quickstart gates the device"
    device = RECORDED["eval_device"]
    slow = device | {"deploy/decode_tokens_per_s": device["deploy/decode_tokens_per_s"] / 200}
    large = device | {"deploy/peak_rss_mb": device["deploy/peak_rss_mb"] * 20}
    for bad in (slow, large):
        assert not all(r.passed for r in check_gates(gates, bad, RECORDED))
