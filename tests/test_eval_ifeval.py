"""IFEval checking offline: the shipped punkt_tab, and parity with lm-eval's stock `ifeval` scoring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.evaluation.ifeval import PUNKT_DIR, build_punkt_tab, check_instructions, ensure_punkt_tab
from workbench.evaluation.tasks import instruction_level_mean, load_instruction_following, process_instruction_following

REPO = Path(__file__).resolve().parents[1]
IF_DATA = REPO / "evals/instruction_following/data.jsonl"


def test_punkt_tab_rebuilds_byte_for_byte(tmp_path):
    build_punkt_tab(tmp_path)
    for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
        assert (tmp_path / name).read_bytes() == (PUNKT_DIR / name).read_bytes(), name


def test_sentence_splitting_uses_the_project_punkt_tab():
    import nltk

    ensure_punkt_tab()
    assert nltk.data.find("tokenizers/punkt_tab/english/").path.startswith(str(PUNKT_DIR.parents[2]))
    assert nltk.sent_tokenize("Dr. Smith came at 5 p.m. today. He left. Why?") == [
        "Dr. Smith came at 5 p.m. today.",
        "He left.",
        "Why?",
    ]


@pytest.mark.parametrize(
    ("instruction", "kwargs", "right", "wrong"),
    [
        ("change_case:english_capital", {}, "THE RED FOX SEES THE RIVER.", "The red fox sees the river."),
        ("punctuation:no_comma", {}, "Red and blue and green.", "Red, blue and green."),
        ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n* two", "* one\n* two\n* three"),
        ("startend:end_checker", {"end_phrase": "That is all."}, "A fox. That is all.", "That is all. A fox."),
        ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "less than"},
         "Dr. Smith came home.", "One. Two. Three."),
        ("detectable_format:json_format", {}, '{"a": 1}', "a: 1"),
        ("combination:repeat_prompt", {"prompt_to_repeat": "Describe a cat."}, "Describe a cat. It purrs.",
         "A cat purrs."),
    ],
)  # fmt: skip
def test_check_instructions_on_right_and_wrong_responses(instruction, kwargs, right, wrong):
    good = check_instructions("prompt", right, [instruction], [kwargs])
    bad = check_instructions("prompt", wrong, [instruction], [kwargs])
    assert good["prompt_strict"] and good["inst_strict"] == [True]
    assert not bad["prompt_strict"] and bad["inst_strict"] == [False]


def test_loose_scoring_forgives_a_leading_line_and_markdown_stars():
    result = check_instructions("p", "Sure:\nTHE FOX RUNS.", ["change_case:english_capital"], [{}])
    assert result["prompt_loose"] and not result["prompt_strict"]


def test_unknown_instruction_is_an_error():
    with pytest.raises(ValueError, match="unknown IFEval instruction id 'made:up'"):
        check_instructions("p", "r", ["made:up"], [{}])


def test_the_suite_covers_all_25_ifeval_instruction_types():
    from workbench.evaluation.ifeval import instruction_registry

    used = {i for line in IF_DATA.read_text().splitlines() for i in json.loads(line)["instruction_id_list"]}
    assert used == set(instruction_registry().INSTRUCTION_DICT) and len(used) == 25


def _responses(doc: dict) -> list[str]:
    """Hand-made responses of several shapes, right and wrong, for every prompt."""
    kwargs = json.loads(doc["kwargs_json"])[0]
    return [
        "",
        doc["prompt"].upper(),
        doc["prompt"].lower().replace(",", ""),
        f'"{doc["prompt"]}"',
        "<<A Title>>\n* one\n* two\n* three\n\nP.S. bye. " + str(kwargs.get("end_phrase", "")),
        "Intro line\n*** SECTION 1 ***\n*highlighted* [name] " + " ".join(map(str, kwargs.values())),
    ]


def test_parity_with_lm_evals_stock_ifeval_scoring():
    """Every shipped prompt, several responses each: same per-sample and aggregate scores as lm-eval's ifeval."""
    ensure_punkt_tab()
    from lm_eval.tasks.ifeval import utils as stock

    docs = load_instruction_following("data.jsonl")["test"]
    ours, theirs = [], []
    for doc in docs:
        stock_doc = {"key": doc["key"], "prompt": doc["prompt"], "instruction_id_list": doc["instruction_id_list"],
                     "kwargs": json.loads(doc["kwargs_json"])}  # fmt: skip
        for response in _responses(doc):
            ours.append(process_instruction_following(doc, [response]))
            theirs.append(stock.process_results(stock_doc, [response]))
    names = {"prompt_strict_acc": "prompt_level_strict_acc", "inst_strict_acc": "inst_level_strict_acc",
             "prompt_loose_acc": "prompt_level_loose_acc", "inst_loose_acc": "inst_level_loose_acc"}  # fmt: skip
    for mine, stock_name in names.items():
        assert [o[mine] for o in ours] == [t[stock_name] for t in theirs], mine
    assert instruction_level_mean([o["inst_loose_acc"] for o in ours]) == stock.agg_inst_level_acc(
        [t["inst_level_loose_acc"] for t in theirs]
    )
    passed = sum(o["prompt_loose_acc"] for o in ours)
    assert 0 < passed < len(ours)  # the responses exercise both outcomes


def test_original_ifeval_jsonl_loads_unchanged(tmp_path):
    original = tmp_path / "input_data.jsonl"
    records = [
        {"key": 1000, "prompt": "Write a resume. Do not use any commas.", "instruction_id_list": ["punctuation:no_comma"],
         "kwargs": [{}]},
        {"key": 1001, "prompt": "Write a poem with at least 3 highlighted sections.",
         "instruction_id_list": ["detectable_format:number_highlighted_sections", "keywords:existence"],
         "kwargs": [{"num_highlights": 3}, {"keywords": ["sun", "moon"]}]},
        # The Hugging Face copy pads every kwargs dict with nulls; lm-eval ignores them, and so do we.
        {"key": 1002, "prompt": "Answer in lowercase.", "instruction_id_list": ["change_case:english_lowercase"],
         "kwargs": [{"num_highlights": None, "keywords": None, "relation": None}]},
    ]  # fmt: skip
    original.write_text("".join(json.dumps(r) + "\n" for r in records))
    docs = load_instruction_following("data.jsonl", {"instruction_following": str(original)})["test"]
    assert [d["key"] for d in docs] == [1000, 1001, 1002]
    scored = process_instruction_following(docs[2], ["all lowercase here."])
    assert scored["prompt_strict_acc"] is True
