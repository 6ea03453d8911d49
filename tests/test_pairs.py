"""Semi-online pairs: judges on known responses, pair selection, and the `pairs` stage end to end."""

from __future__ import annotations

import json

import pytest

from workbench.preference.judges import Candidate, RewardModelJudge, VerifierJudge
from workbench.preference.pairs import PairStats, Thresholds, judge_batch, prompt_item, select_pair
from workbench.runner import load_recipe
from workbench.runner.executor import run_recipe

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
TOOLS = [{"name": "get_time", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]


def _candidate(record: dict, response: str) -> Candidate:
    item = prompt_item(1, record)
    return Candidate(record, item.prompt, item.tools, response)


def _chat(user: str, reply: str, **fields) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]} | fields


def test_verifier_judge_scores_each_task_with_the_evaluation_checkers():
    judge = VerifierJudge()
    lowercase = _chat("Answer in lowercase.", "ok", instruction_id_list=["change_case:english_lowercase"], kwargs=[{}])
    as_json = _chat("Give JSON.", "{}", json_schema=SCHEMA)
    tool = _chat("Time in Oslo?", "", tools=TOOLS, tool_calls=[{"name": "get_time", "arguments": {"city": "Oslo"}}])
    plain = _chat("Hi", "Hello")
    candidates = [
        _candidate(lowercase, "the cat sleeps on the warm mat all day long."),
        _candidate(lowercase, "THE CAT SLEEPS ON THE WARM MAT ALL DAY LONG."),
        _candidate(as_json, '{"name": "Ada"}'),
        _candidate(as_json, '{"age": 3}'),
        _candidate(as_json, "no json here"),
        _candidate(tool, '<|tool_call_start|>[get_time(city="Oslo")]<|tool_call_end|>'),
        _candidate(tool, '<|tool_call_start|>[get_time(city="Rome")]<|tool_call_end|>'),
        _candidate(tool, "It is noon."),
        _candidate(plain, "Hello"),
    ]
    assert judge.score(candidates) == [1.0, 0.0, 1.0, 0.5, 0.0, 1.0, 0.5, 0.0, None]
    assert judge.unjudgeable == {"no_verifier": 1}
    # after the tool's result the reply is an answer, which the gold calls do not describe: no verifier applies
    answered = Candidate(tool, [*candidates[5].prompt, {"role": "tool", "content": "12:00"}], TOOLS, "It is noon.")
    assert judge.score([answered]) == [None] and judge.unjudgeable == {"no_verifier": 2}


def test_the_tool_call_verifier_parses_a_response_once(monkeypatch):
    from workbench.evaluation.scorers import tool_calls
    from workbench.preference import judges

    parsed, parse = [], tool_calls.parse_tool_calls
    counted = lambda text: parsed.append(text) or parse(text)  # noqa: E731
    monkeypatch.setattr(judges, "parse_tool_calls", counted)
    monkeypatch.setattr(tool_calls, "parse_tool_calls", counted)
    tool = _chat("Time in Oslo?", "", tools=TOOLS, tool_calls=[{"name": "get_time", "arguments": {"city": "Oslo"}}])
    responses = ['<|tool_call_start|>[get_time(city="Oslo")]<|tool_call_end|>', "It is noon."]
    assert [judges.tool_call_score(_candidate(tool, response)) for response in responses] == [1.0, 0.0]
    assert parsed == responses


def test_selection_drops_ties_small_gaps_and_pairs_outside_the_score_thresholds():
    assert select_pair([0.5, 1.0, 0.0, 1.0], Thresholds()) == (1, 2)
    assert select_pair([1.0, 1.0], Thresholds()) == "tie"
    assert select_pair([0.5, 0.75], Thresholds(min_gap=0.5)) == "under_gap"
    assert select_pair([2.0, 6.0], Thresholds(min_score=7)) == "under_min_score"
    assert select_pair([4.0, 9.0], Thresholds(min_score=7, max_rejected_score=3)) == "over_max_rejected_score"
    assert select_pair([3.0, 9.0], Thresholds(min_gap=2, min_score=7, max_rejected_score=3)) == (1, 0)
    # the first reason that applies, in OUTCOMES order; `reversed` only when chosen is given, not picked
    assert Thresholds(min_gap=5, min_score=7).verdict(6.0, 4.0) == "under_gap"
    assert Thresholds().verdict(4.0, 6.0) == "reversed"


def test_reference_reply_joins_the_pool_and_outcomes_are_counted():
    record = _chat("Give JSON.", '{"name": "Ada"}', json_schema=SCHEMA, task="json_schema")
    item, stats = prompt_item(7, record), PairStats()
    pair, tie = judge_batch([item, item], [["nope", '{"x": 1}'], ["nope", "nope"]], VerifierJudge(), True,
                            Thresholds(), stats)  # fmt: skip
    assert pair["chosen"] == '{"name": "Ada"}' and pair["rejected"] == "nope" and pair["chosen_is_reference"]
    assert pair["messages"] == record["messages"][:1] and pair["source_line"] == 7 and pair["task"] == "json_schema"
    assert pair["origin"] == "semi_online" and tie is not None  # the reference beats "nope" here too
    assert judge_batch([item], [["nope", "nope"]], VerifierJudge(), False, Thresholds(), stats) == [None]
    assert stats.outcomes == {"paired": 2, "tie": 1} and stats.chosen_is_reference == 2


def test_an_empty_sample_is_never_judged_nor_a_side_of_a_pair():
    # a request no tool fits: the verifier passes an empty reply (it makes no call), so an empty sample would be
    # the chosen side against a call, and a preference stage refuses an empty side
    record = _chat("Tell me a joke.", "I can only tell the time.", tools=TOOLS, tool_calls=[])
    call = '<|tool_call_start|>[get_time(city="Oslo")]<|tool_call_end|>'
    assert VerifierJudge().score([_candidate(record, ""), _candidate(record, call)]) == [1.0, 0.0]
    item, stats = prompt_item(3, record), PairStats()
    alone, pair, blank = judge_batch(
        [item, item, item], [["", call], ["", call, "No tool for jokes.", " \n"], ["", " "]], VerifierJudge(),
        False, Thresholds(), stats,
    )  # fmt: skip
    assert alone is None and blank is None  # under two non-empty answers each: nothing to compare
    assert pair["chosen"] == "No tool for jokes." and pair["rejected"] == call and not pair["chosen_is_reference"]
    assert stats.outcomes == {"too_few_answers": 2, "paired": 1} and stats.empty_samples == 5
    assert stats.sample_scores == [0.0, 1.0] and PairStats.from_json(stats.to_json()) == stats

    stats = PairStats()
    (pair,) = judge_batch([item], [["", call]], VerifierJudge(), True, Thresholds(), stats)
    assert pair["chosen"] == "I can only tell the time." and pair["chosen_is_reference"] and pair["rejected"] == call
    assert stats.chosen_is_reference == 1 and stats.sample_scores == [0.0] and stats.reference_scores == [1.0]


def test_offline_pairs_are_scored_by_the_judge_and_counted_per_reason():
    from workbench.preference.data import normalize_pair
    from workbench.preference.pairs import judge_offline

    def offline(chosen: str, rejected: str, **fields) -> dict:
        return {
            "messages": [{"role": "user", "content": "Give JSON."}],
            "chosen": chosen,
            "rejected": rejected,
        } | fields

    records = [
        offline('{"name": "Ada"}', "no json", json_schema=SCHEMA),  # 1 vs 0: kept
        offline("no json", '{"name": "Ada"}', json_schema=SCHEMA),  # the judge prefers the rejected: reversed
        offline('{"age": 1}', '{"age": 2}', json_schema=SCHEMA),  # 0.5 vs 0.5: tie
        offline('{"age": 1}', "no json", json_schema=SCHEMA),  # 0.5 vs 0: under min_score 0.75
        offline("Hello", "Bye"),  # no scoring field: unjudgeable
    ]
    pairs = [normalize_pair(line, record)[0] for line, record in enumerate(records, 1)]
    stats, judge = PairStats(), VerifierJudge()
    kept = judge_offline(pairs, records, judge, Thresholds(min_score=0.75), stats)
    assert [pair is not None for pair in kept] == [True, False, False, False, False]
    assert kept[0]["origin"] == "offline" and kept[0]["chosen_score"] == 1.0 and kept[0]["source_line"] == 1
    assert kept[0]["chosen"] == [{"role": "assistant", "content": '{"name": "Ada"}'}]
    assert kept[0]["json_schema"] == SCHEMA
    assert stats.outcomes == {"paired": 1, "reversed": 1, "tie": 1, "under_min_score": 1, "unjudgeable": 1}
    assert judge.unjudgeable == {"no_verifier": 2}  # both sides of the last pair


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory):
    """A tiny randomly initialised sequence-classification model with the quickstart-style tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from workbench.modeling.chat_template import LFM2_CHAT_TEMPLATE
    from workbench.modeling.tokenizer import train_bpe_tokenizer

    folder = tmp_path_factory.mktemp("reward-model")
    tokenizer = train_bpe_tokenizer(["good answer", "bad answer", "question"] * 20, 300, LFM2_CHAT_TEMPLATE)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, num_labels=1, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_reward_model_judge_scores_batched_like_one_by_one(reward_model_dir):
    record = _chat("question", "good answer")
    candidates = [_candidate(record, text) for text in ("good answer", "bad answer and more words", "x")]
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(reward_model_dir)
    judge = RewardModelJudge(model, reward_model_dir, batch_size=3)
    together = judge.score(candidates)
    alone = [judge.score([c])[0] for c in candidates]
    assert together == pytest.approx(alone, abs=1e-5)
    assert len(set(together)) == 3


@pytest.mark.slow
def test_pairs_stage_feeds_a_preference_stage(sft_project, monkeypatch, reward_model_dir):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(sft_project.root)
    pairs = {"name": "pairs", "kind": "pairs", "from": "sft", "data": "data/prompts.jsonl", "samples": 3,
             "max_new_tokens": 24, "batch_size": 8}  # fmt: skip
    rm_pairs = pairs | {"name": "rm_pairs", "max_prompts": 6, "include_reference": False,
                        "judge": "reward_model", "reward_model": str(reward_model_dir)}  # fmt: skip
    pref = {"name": "online_pref", "kind": "preference", "from": "sft", "pairs_from": "pairs", "preset": "lfm2",
            "max_length": 256, "max_steps": 4, "batch_size": 4, "learning_rate": 1e-3, "sample_count": 0}  # fmt: skip
    outcomes = {o.name: o for o in run_recipe(load_recipe(sft_project([pairs, rm_pairs, pref])))}
    info = json.loads((outcomes["pairs"].dir / "stage.json").read_text())
    metrics = info["metrics"]
    written = [json.loads(line) for line in (outcomes["pairs"].dir / "pairs.jsonl").read_text().splitlines()]
    print("\npairs stage:", {k: v for k, v in metrics.items()})
    dropped = sum(metrics[f"pairs/dropped_{why}"] for why in ("too_few_answers", "tie", "under_gap", "unjudgeable"))
    assert metrics["pairs/prompts"] == 24 and metrics["pairs/written"] == len(written) > 0
    assert metrics["pairs/written"] + dropped == 24
    assert all(p["chosen_score"] > p["rejected_score"] and p["chosen"] != p["rejected"] for p in written)
    assert all(p["chosen"].strip() and p["rejected"].strip() for p in written)
    assert metrics["generation/samples"] == 72
    rm_metrics = json.loads((outcomes["rm_pairs"].dir / "stage.json").read_text())["metrics"]
    assert (
        rm_metrics["pairs/written"] + rm_metrics["pairs/dropped_tie"] + rm_metrics["pairs/dropped_too_few_answers"] == 6
    )
    assert rm_metrics["pairs/chosen_is_reference"] == 0
    trained = json.loads((outcomes["online_pref"].dir / "stage.json").read_text())
    assert trained["metrics"]["data/train/chosen_tokens_mean"] > 0 and trained["metrics"]["train/steps"] == 4
    client = MlflowClient(f"sqlite:///{sft_project.root / 'runs' / 'mlflow.db'}")
    artifacts = [a.path for a in client.list_artifacts(info["mlflow_run_id"], "pairs")]
    assert artifacts == ["pairs/pairs.jsonl"]


def test_shipped_pairs_agree_with_the_verifiers():
    from tests.conftest import REPO

    lines = (REPO / "datasets/quickstart/preference_eval.jsonl").read_text().splitlines()
    judge, better = VerifierJudge(), 0
    for line in lines:
        pair = json.loads(line)
        record = {"messages": pair["messages"] + [{"role": "assistant", "content": pair["chosen"]}]} | pair
        chosen, rejected = judge.score([_candidate(record, pair["chosen"]), _candidate(record, pair["rejected"])])
        if chosen is None:  # a tool answer after a tool result: no verifier applies
            continue
        assert chosen >= rejected, pair
        better += chosen > rejected
    assert better >= 0.8 * len(lines)


def test_scoring_fields_a_judge_cannot_read_are_named_before_anything_is_sampled():
    from workbench.preference.judges import scoring_field_problems

    good = {
        "instruction_id_list": ["punctuation:no_comma"],
        "kwargs": [{}],
        "json_schema": {"type": "object"},
        "tool_calls": [{"name": "f", "arguments": {"x": 1}}],
    }
    assert scoring_field_problems(good) == [] and scoring_field_problems({}) == []
    assert scoring_field_problems({"instruction_id_list": ["punctuation:no_comma"]}) == [
        "kwargs needs one mapping per instruction id (1)"
    ]
    assert scoring_field_problems({"instruction_id_list": "punctuation:no_comma", "kwargs": [{}]}) == [
        "instruction_id_list is not a list of instruction ids"
    ]
    assert scoring_field_problems({"json_schema": "object", "tool_calls": [{"arguments": {}}]}) == [
        "json_schema is not a mapping",
        "tool_calls is not a list of {name, arguments} mappings",
    ]


def test_one_sample_without_the_reference_is_a_config_error():
    from pydantic import ValidationError

    from workbench.stages.pairs import PairsStageConfig

    config = {"name": "p", "kind": "pairs", "from": "sft", "data": "d.jsonl", "samples": 1}
    assert PairsStageConfig.model_validate(config).include_reference  # one sample against the reference pairs
    with pytest.raises(ValidationError, match="samples 1 without include_reference gives one candidate per prompt"):
        PairsStageConfig.model_validate(config | {"include_reference": False})
