"""Preference pairs: accepted formats, validation with line numbers and policies, stage config errors."""

from __future__ import annotations

import json

import pytest
import yaml

from workbench.errors import RecipeError, StageError
from workbench.modeling.chat_template import LFM2_CHAT_TEMPLATE
from workbench.modeling.tokenizer import train_bpe_tokenizer
from workbench.preference.data import load_pairs, normalize_pair
from workbench.runner import load_recipe

PROMPT = [{"role": "user", "content": "Say hi."}]


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["Say hi.", "hi there", "hello", "Return JSON.", "a b c d e f g"] * 20
    return train_bpe_tokenizer(texts, 300, LFM2_CHAT_TEMPLATE)


def test_our_format_and_trl_explicit_and_implicit_formats_agree():
    ours = {"messages": PROMPT, "chosen": "hi", "rejected": "no"}
    explicit = {
        "prompt": PROMPT,
        "chosen": [{"role": "assistant", "content": "hi"}],
        "rejected": [{"role": "assistant", "content": "no"}],
    }
    implicit = {
        "chosen": PROMPT + [{"role": "assistant", "content": "hi"}],
        "rejected": PROMPT + [{"role": "assistant", "content": "no"}],
    }
    standard = {"prompt": "Say hi.", "chosen": "hi", "rejected": "no"}
    pairs = [normalize_pair(1, record)[0] for record in (ours, explicit, implicit, standard)]
    assert all(pair is not None for pair in pairs)
    assert len({json.dumps(pair.example(), sort_keys=True) for pair in pairs}) == 1
    assert pairs[0].example()["chosen"] == [{"role": "assistant", "content": "hi"}]


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"messages": PROMPT, "chosen": "same", "rejected": "same"}, "with chosen identical to rejected"),
        ({"messages": PROMPT, "chosen": "hi", "rejected": "   "}, "with an empty rejected response"),
        ({"messages": PROMPT, "chosen": "hi"}, "with a prompt but no 'rejected' response"),
        ({"chosen": "hi", "rejected": "no"}, "without a prompt ('prompt' or 'messages')"),
        ({"messages": [{"role": "robot", "content": "x"}], "chosen": "a", "rejected": "b"}, "unknown role"),
        # the roles in the wrong places: the pair would train a second assistant turn, or the user's part
        ({"messages": [*PROMPT, {"role": "assistant", "content": "ref"}], "chosen": "a", "rejected": "b"},
         "with a prompt whose last turn is assistant, not user or tool"),
        ({"prompt": PROMPT, "chosen": [{"role": "user", "content": "a"}], "rejected": "b"},
         "with a chosen response that is not the assistant's turns (user)"),
        ({"prompt": PROMPT, "chosen": "a", "rejected": [{"role": "assistant", "content": "b"},
                                                        {"role": "system", "content": "c"}]},
         "with a rejected response that is not the assistant's turns (assistant -> system)"),
        ({"chosen": [*PROMPT, {"role": "assistant", "content": "a"}, {"role": "user", "content": "more?"}],
          "rejected": [*PROMPT, {"role": "assistant", "content": "b"}]},
         "with a chosen response that is not the assistant's turns (assistant -> user)"),  # implicit prompt: the shared turns
    ],
)  # fmt: skip
def test_each_invalid_pair_is_named(record, problem):
    pair, problems = normalize_pair(3, record)
    assert pair is None
    assert any(problem in found for found in problems), problems


def _write(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


def test_problems_are_reported_with_line_numbers_and_policies(tmp_path, tokenizer):
    good = {"messages": PROMPT, "chosen": "hi", "rejected": "no"}
    records = [
        good,
        {"messages": PROMPT, "chosen": "hi", "rejected": "hi"},
        "{not json",
        {"messages": PROMPT, "chosen": "", "rejected": "no"},
        {"messages": PROMPT, "chosen": "hi " * 200, "rejected": "no"},
        good,
    ]
    path = tmp_path / "pairs.jsonl"
    _write(path, records)
    with pytest.raises(StageError) as error:
        load_pairs(path, "pairs.jsonl", tokenizer, 64, invalid="error", overlength="drop")
    message = str(error.value)
    assert "1 record with chosen identical to rejected (line 2)" in message
    assert "unreadable: invalid JSON" in message and "(line 3)" in message
    assert "with a prompt but no 'chosen' response (line 4)" in message
    data = load_pairs(path, "pairs.jsonl", tokenizer, 64, invalid="drop", overlength="drop")
    assert [pair.location for pair in data.pairs] == [1, 6]
    assert data.report.total == 6
    assert data.report.bad_locations() == {2, 3, 4, 5}
    assert any("longer than max_length=64" in line and "(line 5)" in line for line in data.report.lines())
    truncated = load_pairs(path, "pairs.jsonl", tokenizer, 64, invalid="drop", overlength="truncate")
    assert [pair.location for pair in truncated.pairs] == [1, 5, 6]
    with pytest.raises(StageError, match="longer than max_length"):
        load_pairs(path, "pairs.jsonl", tokenizer, 64, invalid="drop", overlength="error")


def test_all_pairs_invalid_is_an_error(tmp_path, tokenizer):
    path = tmp_path / "pairs.jsonl"
    _write(path, [{"messages": PROMPT, "chosen": "x", "rejected": "x"}])
    with pytest.raises(StageError, match="no usable preference pairs"):
        load_pairs(path, "pairs.jsonl", tokenizer, 64, invalid="drop", overlength="drop")


def _recipe(tmp_path, stage: dict):
    (tmp_path / "pairs.jsonl").write_text("")
    recipe = {
        "name": "r",
        "tokenizer": {"path": "tok"},
        "stages": [{"name": "base", "kind": "init", "architecture": "pairs.jsonl"}, stage],
    }
    (tmp_path / "tok").mkdir(exist_ok=True)
    (tmp_path / "tok" / "tokenizer.json").write_text("{}")  # validate wants a tokenizer folder to look like one
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"preset": "orpo"}, "preset"),
        ({"loss_fn": "none", "delta": 0}, "leaves no loss term"),
        ({"beta": -1}, "greater than 0"),
        ({"data": None}, "give 'data'"),
        (
            {"preset": "simpo", "reference_from": "base"},
            r"reference_from 'base' is unused: the loss is reference-free \(preset simpo\)",
        ),
        ({"reference_free": True, "reference_from": "base"}, r"reference-free \(reference_free: true\)"),
    ],
)
def test_bad_loss_settings_fail_at_load_time(tmp_path, extra, message):
    stage = {"name": "pref", "kind": "preference", "from": "base", "data": "pairs.jsonl"} | extra
    with pytest.raises(RecipeError, match=message):
        load_recipe(_recipe(tmp_path, stage), root=tmp_path)


def test_preset_overrides_resolve(tmp_path):
    stage = {"name": "pref", "kind": "preference", "from": "base", "data": "pairs.jsonl", "preset": "ln_dpo",
             "beta": 2.5, "loss_fn": "hinge"}  # fmt: skip
    config = load_recipe(_recipe(tmp_path, stage), root=tmp_path).stages["pref"].loss_config()
    assert (config.beta, config.loss_fn, config.length_normalize, config.delta) == (2.5, "hinge", True, 0.0)
