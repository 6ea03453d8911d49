"""Swept training stages: a field written `{sweep: [...]}` makes one candidate per grid point, each hashed exactly as
the stage written with its values; what references to a swept stage may say; what validate and plan show."""

from __future__ import annotations

import textwrap

import pytest
import yaml
from typer.testing import CliRunner

from tests.test_recipe_errors import HEADER, errors_of, stage
from workbench.cli import app
from workbench.runner import load_recipe
from workbench.runner.plan import make_plan

SWEPT_SFT = stage(
    "name: sft", "kind: sft", "from: base", "data: data/chat.jsonl", "learning_rate: {sweep: [0.001, 0.003]}"
)
LR = ("sft@learning_rate=0.001", "sft@learning_rate=0.003")
MERGE_ALL = stage("name: soup", "kind: merge", "method: linear", "models: {candidates_of: sft}")


def hashes(project, text: str, name: str = "r.yaml") -> dict[str, str]:
    path = project / name
    path.write_text(textwrap.dedent(text))
    return {planned.name: planned.hash for planned in make_plan(load_recipe(path, root=project)).stages}


def test_a_candidate_hashes_as_the_stage_written_with_its_value(project):
    swept = hashes(project, HEADER + SWEPT_SFT + stage("name: pick", "kind: sft", "from: sft@learning_rate=0.003",
                                                       "data: data/chat.jsonl"))  # fmt: skip
    assert list(swept) == ["base", *LR, "pick"]
    for value, name in zip(("0.001", "0.003"), LR, strict=True):
        plain = hashes(project, HEADER + SWEPT_SFT.replace("{sweep: [0.001, 0.003]}", value), f"plain{value}.yaml")
        assert swept[name] == plain["sft"], name
        assert swept["base"] == plain["base"], "stages before a sweep keep their hashes"
    assert swept[LR[0]] != swept[LR[1]]
    loaded = load_recipe(project / "r.yaml", root=project)
    assert loaded.dependencies("pick") == [LR[1]], "a stage naming one candidate reads that one"


def test_several_swept_fields_make_their_product_and_a_changed_value_changes_only_its_candidates(project):
    grid = SWEPT_SFT + "    epochs: {sweep: [1, 2]}\n    lora: {r: {sweep: [4, 8]}}\n"
    before = hashes(project, HEADER + grid)
    candidates = [name for name in before if name.startswith("sft@")]
    assert len(candidates) == 8 and len(set(before.values())) == 9
    assert candidates[:2] == ["sft@learning_rate=0.001@epochs=1@lora.r=4", "sft@learning_rate=0.001@epochs=1@lora.r=8"]
    after = hashes(project, HEADER + grid.replace("[0.001, 0.003]", "[0.001, 0.005]"), "changed.yaml")
    kept = {name: h for name, h in after.items() if name in before}
    assert kept == {name: h for name, h in before.items() if "0.003" not in name}
    assert len(after) == 9 and sum("0.005" in name for name in after) == 4


def test_a_merge_reads_every_candidate_and_the_project_lists_them(project):
    path = project / "r.yaml"
    path.write_text(HEADER + SWEPT_SFT + MERGE_ALL)
    loaded = load_recipe(path, root=project)
    assert loaded.order == ["base", *LR, "soup"]
    assert loaded.dependencies("soup") == list(LR)
    assert loaded.project.candidates == {"sft": LR}
    assert loaded.expand({"sft", "base"}) == {"base", *LR}
    assert {name: loaded.stages[name].name for name in LR} == {name: "sft" for name in LR}, "the stage as written"
    assert [loaded.stages[name].learning_rate for name in LR] == [0.001, 0.003]
    plan = {p.name: p for p in make_plan(loaded).stages}
    assert plan["soup"].inputs == {name: plan[name].hash for name in LR}


def test_candidates_share_their_stage_folder_each_under_its_own_hash(tmp_path):
    from workbench.runner.store import StageStore

    store = StageStore(tmp_path)
    assert store.final_dir(LR[0], "ab" * 32) == tmp_path / "sft" / ("ab" * 8)
    assert store.tmp_dir("sft@data=data/a.jsonl", "cd" * 32) == tmp_path / "sft" / ("cd" * 8 + ".tmp")


def test_candidate_names_become_valid_mlflow_keys_and_model_names():
    from workbench.tracking import key_safe, model_name_safe

    assert key_safe("hash.sft@learning_rate=0.001") == "hash.sft_learning_rate_0.001"
    assert model_name_safe("sft@learning_rate=0.001") == "sft@learning_rate=0_001"
    assert key_safe("hash.sft") == "hash.sft"


EVAL_FROM_SFT = stage("name: ev", "kind: evaluate", "from: sft", "suites: [json_schema]")

ERRORS = {
    "a later stage names the swept stage": (
        HEADER + SWEPT_SFT + EVAL_FROM_SFT,
        [
            "r.yaml:16: ev.from: 'sft' is swept into 2 candidates (sft@learning_rate=0.001, sft@learning_rate=0.003): "
            "pick one (`sft@learning_rate=0.001`) or merge them (a merge stage with `models: {candidates_of: sft}`)"
        ],
    ),
    "an unknown candidate": (
        HEADER + SWEPT_SFT + EVAL_FROM_SFT.replace("from: sft", "from: sft@learning_rat=0.001"),
        [
            "r.yaml:16: ev.from: unknown candidate 'sft@learning_rat=0.001' (did you mean 'sft@learning_rate=0.001'?)"
            "; the candidates of 'sft': sft@learning_rate=0.001, sft@learning_rate=0.003"
        ],
    ),
    "a candidate value spelt another way": (
        HEADER + SWEPT_SFT + EVAL_FROM_SFT.replace("from: sft", "from: sft@learning_rate=1.0e-3"),
        [
            "r.yaml:16: ev.from: unknown candidate 'sft@learning_rate=1.0e-3' (written 'sft@learning_rate=0.001')"
            "; the candidates of 'sft': sft@learning_rate=0.001, sft@learning_rate=0.003"
        ],
    ),
    "sweeping from": (
        HEADER + stage("name: sft", "kind: sft", "from: {sweep: [base, other]}", "data: data/chat.jsonl"),
        [
            "r.yaml:11: sft.from: 'from' names the stage's input and cannot be swept: write one stage per input (of a "
            "swept input, name one candidate: `from: stage@field=value`)"
        ],
    ),
    "sweeping the name": (
        HEADER + stage("name: {sweep: [a, b]}", "kind: sft", "from: base", "data: data/chat.jsonl"),
        [
            "r.yaml:9: stages[1].name: 'name' cannot be swept: the candidates are named after the stage (`name@field=value`)"
        ],
    ),
    "sweeping the kind": (
        HEADER + stage("name: sft", "kind: {sweep: [sft, preference]}", "from: base", "data: data/chat.jsonl"),
        ["r.yaml:10: sft.kind: 'kind' cannot be swept: write one stage per kind"],
    ),
    "sweeping a field that does not change the output": (
        HEADER
        + stage("name: sft", "kind: sft", "from: base", "data: data/chat.jsonl", "logging_steps: {sweep: [1, 2]}"),
        [
            "r.yaml:13: sft.logging_steps: 'logging_steps' does not change the stage's output: every candidate would be "
            "the same"
        ],
    ),  # fmt: skip
    "a bad value is reported at its own line": (
        HEADER
        + stage("name: sft", "kind: sft", "from: base", "data: data/chat.jsonl", "learning_rate:", "  sweep:")
        + "        - 0.001\n        - -1\n",
        ["r.yaml:16: sft.learning_rate.sweep[1]: Input should be greater than 0 (got -1)"],
    ),
    "an empty sweep": (
        HEADER + stage("name: sft", "kind: sft", "from: base", "data: data/chat.jsonl", "learning_rate: {sweep: []}"),
        ["r.yaml:13: sft.learning_rate.sweep: `sweep` needs a non-empty list of values"],
    ),
    "a value listed twice": (
        HEADER + SWEPT_SFT.replace("[0.001, 0.003]", "[0.001, 0.001]"),
        ["r.yaml:13: sft.learning_rate.sweep[1]: 0.001 is listed twice"],
    ),
    "two values that validate to one": (
        HEADER + SWEPT_SFT.replace("[0.001, 0.003]", "[1, 1.0]"),
        [
            "r.yaml:13: sft.learning_rate.sweep[1]: sft@learning_rate=1.0 is the same stage as sft@learning_rate=1: "
            "its values validate to the same config"
        ],
    ),
    "a kind whose fields do not sweep": (
        HEADER + stage("name: ev", "kind: evaluate", "from: base", "suites: [json_schema]", "limit: {sweep: [1, 2]}"),
        [
            "r.yaml:13: ev.limit: evaluate stages take no {sweep: [...]} here (kinds whose fields sweep: distill, "
            "preference, pretrain, sft)"
        ],
    ),  # fmt: skip
    "candidates of a stage that is not swept": (
        HEADER + MERGE_ALL.replace("candidates_of: sft", "candidates_of: base"),
        [
            "r.yaml:12: soup.models.candidates_of: 'base' is not swept (no field written {sweep: [...]}): this field "
            "takes a swept stage"
        ],
    ),  # fmt: skip
    "top_k above the number of candidates": (
        HEADER
        + SWEPT_SFT
        + MERGE_ALL.replace(
            "{candidates_of: sft}", "{candidates_of: sft, top_k: 3, by: {metric: eval_loss, data: data/chat.jsonl}}"
        ),
        ["r.yaml:17: soup.models.top_k: top_k 3: 'sft' has 2 candidates"],
    ),  # fmt: skip
    "a tokenizer source that stands for several candidates": (
        HEADER + SWEPT_SFT + MERGE_ALL + "    tokenizer_source: sft\n",
        ["r.yaml:14: soup: tokenizer_source 'sft' stands for several candidates: use union or base"],
    ),
    "top_k without by": (
        HEADER + SWEPT_SFT + MERGE_ALL.replace("{candidates_of: sft}", "{candidates_of: sft, top_k: 1}"),
        ["r.yaml:17: soup.models: give `top_k` and `by` together (without them every candidate is merged)"],
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_sweep_errors_name_file_and_line(project, case):
    text, expected = ERRORS[case]
    assert errors_of(project, text) == expected


def test_validate_and_plan_show_every_candidate(project, monkeypatch):
    from workbench import cli

    monkeypatch.chdir(project)
    monkeypatch.setattr(cli.console, "width", 200)  # one line per table row
    (project / "r.yaml").write_text(HEADER + SWEPT_SFT + MERGE_ALL)
    validated = CliRunner().invoke(app, ["validate", "r.yaml"])
    assert validated.exit_code == 0, validated.output
    assert validated.output.splitlines() == [
        "OK: r.yaml (3 stages: base -> sft -> soup)",
        "sft: 2 candidates over learning_rate: sft@learning_rate=0.001, sft@learning_rate=0.003",
    ]
    planned = CliRunner().invoke(app, ["plan", "r.yaml"])
    assert planned.exit_code == 0, planned.output
    plan = {p.name: p for p in make_plan(load_recipe(project / "r.yaml", root=project)).stages}
    rows = {line.split("│")[1].strip(): line for line in planned.output.splitlines() if line.count("│") >= 5}
    for name in LR:
        assert plan[name].hash[:12] in rows[name] and "will run" in rows[name]
    assert "sft (2 candidates)" in rows["soup"]
    assert "sft: 2 candidates over learning_rate" in planned.output
    monkeypatch.setattr(cli.console, "width", 80)  # a narrow terminal: names and hashes stay whole, inputs wrap
    narrow = CliRunner().invoke(app, ["plan", "r.yaml"]).output.splitlines()
    for name in LR:
        assert any(f"│ {name} " in line and plan[name].hash[:12] in line for line in narrow), narrow


def test_the_shipped_candidates_recipe_validates_and_its_merge_reads_every_candidate():
    """recipes/lfm2-candidates.yaml validates, and its merge reads (and ranks) all candidates of its SFT sweep."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    loaded = load_recipe(repo / "recipes/lfm2-candidates.yaml", root=repo)
    assert loaded.sweeps["sft"].candidates == (
        "sft@learning_rate=0.001", "sft@learning_rate=0.003", "sft@learning_rate=0.006"
    )  # fmt: skip
    assert loaded.dependencies("merged") == ["base", *loaded.sweeps["sft"].candidates]
    assert yaml.safe_load((repo / "recipes/lfm2-candidates.yaml").read_text())["stages"][2]["models"]["top_k"] == 2


def test_a_preference_stage_sweeps_beta_as_any_training_kind_does(project):
    pref = stage("name: pref", "kind: preference", "from: base", "data: data/chat.jsonl", "beta: {sweep: [0.1, 0.5]}")
    swept = hashes(project, HEADER + pref)
    assert [name for name in swept if name != "base"] == ["pref@beta=0.1", "pref@beta=0.5"]
    for value in ("0.1", "0.5"):
        plain = hashes(project, HEADER + pref.replace("{sweep: [0.1, 0.5]}", value), f"beta{value}.yaml")
        assert swept[f"pref@beta={value}"] == plain["pref"]


def test_the_json_schema_lets_a_sweepable_field_take_a_sweep():
    from workbench.recipe.json_schema import recipe_json_schema
    from workbench.runner import default_catalog

    schema = recipe_json_schema(default_catalog())
    learning_rate = schema["$defs"]["SFTStageConfig"]["properties"]["learning_rate"]
    assert learning_rate["description"] == "Peak learning rate."
    assert {"$ref": "#/$defs/Sweep"} in learning_rate["anyOf"]
    for field in ("name", "kind", "from", "logging_steps"):
        assert "Sweep" not in str(schema["$defs"]["SFTStageConfig"]["properties"][field]), field
    assert "Sweep" not in str(schema["$defs"]["EvaluateStageConfig"]["properties"]["limit"])


def test_a_candidate_name_is_spelt_as_candidate_names_spell_values():
    from workbench.api.sweeps import spelled_as_candidate

    assert spelled_as_candidate("sft@learning_rate=1e-3") == "sft@learning_rate=0.001"
    assert spelled_as_candidate("sft@learning_rate=1.0E-3@lora.r=8.0") == "sft@learning_rate=0.001@lora.r=8.0"
    assert spelled_as_candidate("sft@optim=adamw_torch@packing=true") == "sft@optim=adamw_torch@packing=true"
    assert spelled_as_candidate("sft") == "sft" and spelled_as_candidate("sft@broken") == "sft@broken"
