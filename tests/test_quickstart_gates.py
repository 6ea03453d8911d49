"""The quickstart's gates can fail: checked, as `recipes/quickstart.yaml` writes them, against the scores of a
model that learned nothing in place of the gated stage's own (the distilled base's scores, and a model that
answers nothing at all), with the stages it compares against keeping the scores a fresh run recorded
(`tests/data/quickstart_scores.json`). The same recorded scores pass every gate, so the bounds are ones a working
run meets."""

from __future__ import annotations

import json
from collections import defaultdict
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


def _empty_reply_instruction_score() -> float:
    """prompt_loose_acc of an empty reply to every instruction-following item, by lm-eval's own checkers."""
    from workbench.evaluation.ifeval import check_instructions, ensure_punkt_tab

    ensure_punkt_tab()
    items = [json.loads(line) for line in (REPO / "evals/instruction_following/data.jsonl").read_text().splitlines()]
    followed = [
        check_instructions(i["prompt"], "", i["instruction_id_list"], i["kwargs"])["prompt_loose"] for i in items
    ]
    return sum(followed) / len(items)


def _learned_nothing(nobody: str) -> dict[str, float]:
    if nobody == "the distilled base":
        return RECORDED["eval_base"]
    return NOTHING_ANSWERED | {"instruction_following/prompt_loose_acc": _empty_reply_instruction_score()}


LEARNED_NOTHING = ("the distilled base", "a model that answers nothing")


def gated_stages() -> dict[str, list[str]]:
    stages = yaml.safe_load((REPO / "recipes/quickstart.yaml").read_text())["stages"]
    return {stage["name"]: stage["gates"] for stage in stages if stage.get("gates")}


def test_the_recorded_run_passes_every_gate():
    for stage, gates in gated_stages().items():
        results = check_gates([parse_gate(g) for g in gates], RECORDED[stage], RECORDED)
        assert all(r.passed for r in results), (stage, [r.gate for r in results if not r.passed])


@pytest.mark.parametrize("nobody", LEARNED_NOTHING)
def test_every_gated_quality_metric_fails_on_a_model_that_learned_nothing(nobody):
    """Each quality metric a stage gates on has a gate that fails when the gated stage's scores are those of a
    model that learned nothing. (A metric gated on both sides, for parity, fails on one side.) Deploy gates are
    checked below: they gate speed and size, which such a model has."""
    scores = _learned_nothing(nobody)
    for stage, gates in gated_stages().items():
        quality = [parse_gate(g) for g in gates if not g.startswith("deploy/")]
        failed_by_metric = defaultdict(list)
        for result in check_gates(quality, scores, RECORDED):
            failed_by_metric[result.gate.split()[0]].append(not result.passed)
        passing = [metric for metric, failed in failed_by_metric.items() if not any(failed)]
        assert not passing, f"{stage}: {passing} pass on the scores of {nobody}"


def test_deploy_gates_fail_on_a_slow_or_large_file():
    gates = [parse_gate(g) for g in gated_stages()["eval_device"] if g.startswith("deploy/")]
    assert gates, "the quickstart gates the device"
    device = RECORDED["eval_device"]
    slow = device | {"deploy/decode_tokens_per_s": device["deploy/decode_tokens_per_s"] / 200}
    large = device | {"deploy/peak_rss_mb": device["deploy/peak_rss_mb"] * 20}
    for bad in (slow, large):
        assert not all(r.passed for r in check_gates(gates, bad, RECORDED))
