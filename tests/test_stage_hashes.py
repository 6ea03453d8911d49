"""Stage hashes decide what is cached: they must stay put when nothing that changes an output changed.

The expected values were computed by the planner before the stage API was rebuilt on field markers; the stages
up to preference kept them. Evaluate stages changed on purpose: gates, `compare` and registration left their hash
(a new threshold re-checks the recorded metrics instead of re-evaluating), and their suite definitions are keyed
by `evals/<suite>` rather than an absolute path, so a checkout's location no longer changes them. The quickstart's
teacher cache and every stage after it changed when the cache's default form became `compressed` (a different
output); with `format: exact` they keep the hashes below.

The quickstart's data changed on 2026-11-30 (parallel and no-call tool records in `datasets/quickstart/sft.jsonl`,
which also trains the tokenizer): an input change, so every pin below was
recomputed by the planner then. On 2026-12-01 the shipped data was rebuilt by its generators (the SFT data and
the suites exclude each other's prompts, and the committed files had drifted from that fixed point): an input
change again, checked to be the only one (the code before it gave the old pins on the old data, the code after it
gives these on the new). Later that day the quickstart's SFT went from one epoch to two and its preference
learning rate from 2e-5 to 1e-4: recipe changes, so `sft`, `pairs` and `preference` were recomputed (with the old
values the code gives the previous pins). They guard the code from that point on: a change to hashing that is not
a change to a stage's output must leave them as they are.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from workbench.runner import load_recipe
from workbench.runner.plan import make_plan

REPO = Path(__file__).resolve().parents[1]

BEFORE_THE_STAGE_API = {
    "recipes/quickstart.yaml": {
        "teacher": "160b307d0b4eb08646948fbd6475931782095a01e0357026a728ccc03d16155e",
        "teacher_topk": "a85e78e7a93b4014bee05bb6f9b7ec2ed8606ad7918b58ddb828de31da376f3e",
        "base": "90762cb977bdde919fd5abc3c9795843a69df7ae5e3dbdb840256091fd889fc3",
        "sft": "8ad98ea82b5efa4496286dcb9f7e328f5977c81c4b5c349a2c67a8b2c054ecad",
        "pairs": "4a73745056e9806330b36ec2c6c90a6146e9e409b55667f642e513700eec147d",
        "preference": "5172b68ccb94d5e9e96e0d16ebffca259d52978147844520fbf9044d45f7bfef",
    },
    "recipes/lfm2-350m-sft.yaml": {"sft": "bec08eaf9b6c3abcd6552127164bbd843048fa14c593c72059155caaac2b5379"},
}


COMPRESSED_TEACHER_CACHE = {
    "teacher_topk": "72b96a23d04bdba112c1bd1f97a334cc739e8acda47d08397c7b8d2c3ea6524d",
    "base": "06f2fab3980066cde2b2c8d1b17209f4e5fd5fd9f01e4ef62af1b667e5e3707e",
    "sft": "37493c482261bd3b639801930bdf7c5473fab514b6a4a0ffe05dab14fda9eb88",
    "pairs": "eb1adc792bd1cd6d4b05875755f8d9a7896ee87891acacb81cb938d77462fb8f",
    "preference": "5a91f32b3a163e705e47c0a768c1b71864c9e3bc4ff94b05a1563c0293e4a40c",
}
"""The quickstart's hashes that the `compressed` default changed."""


def plan_hashes(recipe: Path, root: Path) -> dict[str, str]:
    return {stage.name: stage.hash for stage in make_plan(load_recipe(recipe, root=root)).stages}


def test_unchanged_stages_keep_their_hashes(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_CACHE_SALT", "")
    for recipe, expected in BEFORE_THE_STAGE_API.items():
        if recipe == "recipes/quickstart.yaml":
            expected = expected | COMPRESSED_TEACHER_CACHE
        hashes = plan_hashes(REPO / recipe, REPO)
        assert {name: hashes[name] for name in expected} == expected, recipe


def test_a_gate_threshold_is_not_part_of_the_hash_but_what_is_measured_is(tmp_path):
    data = yaml.safe_load((REPO / "recipes/quickstart.yaml").read_text())
    before = plan_hashes(REPO / "recipes/quickstart.yaml", REPO)
    eval_sft = next(stage for stage in data["stages"] if stage["name"] == "eval_sft")
    eval_sft["gates"] = ["json_schema/valid_rate >= 0.99"]
    eval_sft["compare"] = []
    changed = tmp_path / "q.yaml"
    changed.write_text(yaml.safe_dump(data, sort_keys=False))
    after = plan_hashes(changed, REPO)
    assert after["eval_sft"] == before["eval_sft"]
    eval_sft["limit"] = 5
    changed.write_text(yaml.safe_dump(data, sort_keys=False))
    assert plan_hashes(changed, REPO)["eval_sft"] != before["eval_sft"]


def test_a_teacher_cache_hashes_its_format_unless_it_is_exact(monkeypatch, tmp_path):
    """`format: exact` hashes as the stage did before it had the field, so exact caches built then stay valid;
    `compressed` changes the cache stage's hash and every hash downstream of it."""
    monkeypatch.setenv("WORKBENCH_CACHE_SALT", "")
    data = yaml.safe_load((REPO / "recipes/quickstart.yaml").read_text())
    topk = next(stage for stage in data["stages"] if stage["name"] == "teacher_topk")
    hashes = {}
    for form in ("exact", "compressed"):
        topk["format"] = form
        (tmp_path / f"{form}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        hashes[form] = plan_hashes(tmp_path / f"{form}.yaml", REPO)
    pinned = BEFORE_THE_STAGE_API["recipes/quickstart.yaml"]
    assert {name: hashes["exact"][name] for name in pinned} == pinned
    assert {name: hashes["compressed"][name] for name in pinned} == pinned | COMPRESSED_TEACHER_CACHE


def test_hashing_a_missing_file_is_an_error_not_a_hash_of_its_name(tmp_path):
    import pytest

    from workbench.errors import WorkbenchError

    (tmp_path / "chat.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    (tmp_path / "arch.yaml").write_text("hidden_size: 64\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: r\ntokenizer: {train: {files: [chat.jsonl]}}\nstages:\n"
        "  - {name: base, kind: init, architecture: arch.yaml}\n"
        "  - {name: sft, kind: sft, from: base, data: gone.jsonl}\n"
    )
    loaded = load_recipe(recipe, root=tmp_path, check_files=False)  # as if the file vanished after validate
    with pytest.raises(WorkbenchError, match="file 'gone.jsonl' not found"):
        make_plan(loaded)
