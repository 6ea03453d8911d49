"""JSON-output scorer: extraction order, strict vs lenient, schema validity, field accuracy."""

import pytest

from workbench.evaluation.scorers.json_output import extract_json, score_json

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "address": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
    "required": ["name", "age"],
}


def test_strict_accepts_the_whole_output_as_one_value():
    strict = extract_json('  {"a": 1}\n', strict=True)
    assert (strict.ok, strict.value, strict.method) == (True, {"a": 1}, "strict")
    assert extract_json("42", strict=True).value == 42


def test_strict_rejects_surrounding_prose_that_lenient_accepts():
    text = 'Sure! Here it is: {"name": "Ada", "age": 36} Hope that helps.'
    strict = extract_json(text, strict=True)
    assert not strict.ok and strict.error.startswith("invalid JSON")
    lenient = extract_json(text)
    assert (lenient.ok, lenient.value, lenient.method) == (True, {"name": "Ada", "age": 36}, "embedded")


def test_fenced_block_wins_over_earlier_embedded_json():
    text = 'Draft {"draft": true}\n```json\n{"final": true}\n```'
    result = extract_json(text)
    assert (result.value, result.method) == ({"final": True}, "fenced")


def test_bare_fence_is_used_but_other_languages_are_not():
    assert extract_json("```\n[1, 2]\n```").method == "fenced"
    python = extract_json('```python\nx = {"a": 1}\n```')
    assert (python.value, python.method) == ({"a": 1}, "embedded")


def test_unparsable_fence_falls_back_to_embedded_scan():
    text = '```json\n{"a": }\n```\nCorrected: {"a": 2}'
    assert extract_json(text).value == {"a": 2}


def test_embedded_scan_skips_braces_that_are_not_json():
    text = 'Use f(x) {like this} or [see note] then [1, {"k": null}] end'
    assert extract_json(text).value == [1, {"k": None}]


def test_malformed_json_fails_in_both_modes():
    assert not extract_json('{"a": 1,,}').ok
    assert extract_json("no json here").error == "no JSON value found"


def test_valid_output_with_full_gold_scores_one():
    score = score_json('{"name": "Ada", "age": 36}', PERSON, gold={"name": "Ada", "age": 36})
    assert (score.parsed, score.valid, score.field_accuracy, score.errors) == (True, True, 1.0, [])


def test_schema_invalid_value_is_reported_with_its_path():
    score = score_json('{"name": "Ada", "age": "thirty"}', PERSON)
    assert score.parsed and not score.valid
    assert score.errors == ["$.age: 'thirty' is not of type 'integer'"]
    assert score.field_accuracy is None


def test_missing_required_property_is_invalid():
    score = score_json('{"name": "Ada"}', PERSON)
    assert not score.valid and "'age' is a required property" in score.errors[0]


def test_partial_field_accuracy_over_nested_gold_leaves():
    gold = {"name": "Ada", "age": 36, "address": {"city": "London", "zip": "N1"}}
    output = '{"name": "Ada", "age": 37, "address": {"city": "London"}}'
    score = score_json(output, PERSON, gold=gold)
    assert score.valid and score.field_accuracy == 0.5
    assert score.errors == ["field $.age: expected 36, got 37", "field $.address.zip: missing"]


def test_field_equality_is_json_equality():
    gold = {"n": 1, "flag": True, "tags": ["a", "b"]}
    score = score_json('{"n": 1.0, "flag": 1, "tags": ["b", "a"]}', {}, gold=gold)
    assert score.field_accuracy == pytest.approx(1 / 3)


def test_unparsed_output_scores_zero_against_gold():
    score = score_json("I cannot answer that.", PERSON, gold={"name": "Ada"})
    assert (score.parsed, score.valid, score.field_accuracy) == (False, False, 0.0)
    assert score.errors == ["no JSON value found"]


def test_strict_scoring_refuses_prose():
    assert not score_json('Answer: {"name": "Ada", "age": 1}', PERSON, strict=True).parsed


def test_invalid_schema_is_a_clear_error():
    with pytest.raises(ValueError, match="invalid JSON schema"):
        score_json("{}", {"type": "no-such-type"})


def test_each_schema_is_checked_against_the_meta_schema_once(monkeypatch):
    """A validator per schema, kept by the schema's JSON text: scoring many outputs checks the schema once; a
    different schema (or one changed in place) gets its own; an invalid one is refused every time."""
    import copy
    import uuid

    from jsonschema import Draft202012Validator

    checks, check = [], Draft202012Validator.check_schema
    monkeypatch.setattr(Draft202012Validator, "check_schema",
                        classmethod(lambda cls, schema, **kw: checks.append(schema) or check(schema, **kw)))  # fmt: skip
    schema = copy.deepcopy(PERSON) | {"title": uuid.uuid4().hex}  # a schema no earlier test checked
    for output in ('{"name": "Ada", "age": 36}', '{"name": "Ada"}', "no json", '```json\n{"age": -1}\n```'):
        assert score_json(output, schema).valid == score_json(output, copy.deepcopy(schema), strict=True).valid
    assert len(checks) == 1
    schema["required"].append("address")  # changed in place: another schema, with its own validator
    assert not score_json('{"name": "Ada", "age": 36}', schema).valid and len(checks) == 2
    schema["required"].pop()
    assert score_json('{"name": "Ada", "age": 36}', schema).valid and len(checks) == 2
    for _ in range(2):
        with pytest.raises(ValueError, match="invalid JSON schema"):
            score_json("{}", {"type": "nope", "title": schema["title"]})
    assert len(checks) == 4
