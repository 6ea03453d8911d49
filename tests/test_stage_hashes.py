"""Stage hashes decide what is cached: they must stay put when nothing that changes an output changed.

The expected values were computed by the planner before the stage API was rebuilt on field markers; the stages
up to preference kept them. Evaluate stages changed on purpose: gates, `compare` and registration left their hash
(a new threshold re-checks the recorded metrics instead of re-evaluating), and their suite definitions are keyed
by `evals/<suite>` rather than an absolute path, so a checkout's location no longer changes them. The quickstart's
teacher cache and every stage after it changed when the cache's default form became `compressed` (a different
output); with `format: exact` they keep the hashes below.

The quickstart's data changed on 2026-11-30 (parallel and no-call tool records in `datasets/quickstart/sft.jsonl`,
which also trains the tokenizer): an input change, so every pin below was
recomputed by the planner then. They guard the code from that point on: a change to hashing that is not a change
to a stage's output must leave them as they are.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from workbench.runner import load_recipe
from workbench.runner.plan import make_plan

REPO = Path(__file__).resolve().parents[1]

BEFORE_THE_STAGE_API = {
    "recipes/quickstart.yaml": {
        "teacher": "73247632181fa3bf1e4fbe304dc40ace73a3998beae097b2b8fd2d24012f3fa9",
        "teacher_topk": "ea02d9bcc6156cd11e89d5c6f6888490e3738f6f0c600c81a763f1994984f016",
        "base": "d02d25a5978ffbdf5387e54b63222d771762c17932890913abd2280f0bd51934",
        "sft": "52b7390074f776c5b3d43da6ebc925c661c119d4a62bfa106d838af5ab7f4a20",
        "pairs": "9637891669e04420196b75d5646287f00a989db84e72bed72c12b96a3c6ee3f8",
        "preference": "2d360ffedc34706bb84f9158e3e03b84e720722202255733fdd543220209c46d",
    },
    "recipes/lfm2-350m-sft.yaml": {"sft": "d40121606bf7a7464d0ff651d998f0d2841055c05968e034214acdc2b36a7eb7"},
}


COMPRESSED_TEACHER_CACHE = {
    "teacher_topk": "fdb5146210505e4d9a5b426688ba964e34334c4d98ebd07d07b72234e6720e92",
    "base": "591afdc6958d96bda0ec0b8c1f8275a95fcde0c28d0ef531846cd9177ff31b8b",
    "sft": "b7783792e9558aa3d9efd9e8c132080f8696bf9f6656764769bb472752c44861",
    "pairs": "5ede8d9c68857e89daaf71b1d820fed8481863b43d4352ceba6db1bcc735718c",
    "preference": "ae26d6271ebdb2b3d83e49c908e6b94040cd11c8b7b2ebce0b84f2f5e3aa4f6a",
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
