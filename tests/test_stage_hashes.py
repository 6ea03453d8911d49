"""Stage hashes decide what is cached: they must stay put when nothing that changes an output changed.

The expected values were computed by the planner before the stage API was rebuilt on field markers; the stages
up to preference kept them. Evaluate stages changed on purpose: gates, `compare` and registration left their hash
(a new threshold re-checks the recorded metrics instead of re-evaluating), and their suite definitions are keyed
by `evals/<suite>` rather than an absolute path, so a checkout's location no longer changes them. The quickstart's
teacher cache and every stage after it changed when the cache's default form became `compressed` (a different
output); with `format: exact` they keep the hashes below.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from workbench.runner import load_recipe
from workbench.runner.plan import make_plan

REPO = Path(__file__).resolve().parents[1]

BEFORE_THE_STAGE_API = {
    "recipes/quickstart.yaml": {
        "teacher": "5e952536e37e0648c6a6d48247bcfd0016e8fb91169b77cc6640fe603863d6f5",
        "teacher_topk": "f24b32b3dbe0fb158f04371d719377098cbb5b337fce6d0a2454d6319773ca49",
        "base": "ea01fd401f8abcc0ab94284fadd53d2a78d39c691b0e76f38860f235574db47e",
        "sft": "ef63436f460d2fab806ae390be2e682b0e8176d9b8d83e41098b82ecf2665185",
        "pairs": "94334ee300a9474abd7dae0853c8ae305d7669becceffa461da40fe2f21ad65a",
        "preference": "d11e33a966ca47885244300f6f0a1a440da88de177010b3001abe0ae984d2e7e",
    },
    "recipes/lfm2-350m-sft.yaml": {"sft": "1d151326dd144149586e052e33b3d16e023353d31d53b4e55328b9a91810d148"},
}


COMPRESSED_TEACHER_CACHE = {
    "teacher_topk": "b9efa849d6e38e35496fbfc2efb5dec89d995236345ce05a329ea53f3d610901",
    "base": "c6c7ac09436a9ca0ab55f2713e3c74ac483bb69b0c879d1a84f7f831e884e2fd",
    "sft": "573af0b2acc1ecd3d0b634267964bd7ea634e818d5e690a8101f06128fa9300e",
    "pairs": "9317c88a8451d16c6db3c8aec972e9266dbefdd75c6253e4bc26e51e25fbb116",
    "preference": "7042e085d74bcf26601b173f62f52505dc66a497bb6bfe1d76a089a428d063e0",
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
