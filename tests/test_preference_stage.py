"""The `preference` stage end to end on a tiny SFT'd model: learning, MLflow, reference cache, length bias."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from workbench.runner import load_recipe
from workbench.runner.executor import run_recipe

pytestmark = pytest.mark.slow

PREF = {
    "name": "pref", "kind": "preference", "from": "sft", "data": "data/pairs.jsonl",
    "eval_data": "data/pairs_eval.jsonl", "preset": "lfm2", "max_length": 256, "max_steps": 20,
    "batch_size": 8, "learning_rate": 2e-3, "warmup": 0, "logging_steps": 5, "sample_count": 4,
}  # fmt: skip


def run(path, **kwargs):
    return {o.name: o for o in run_recipe(load_recipe(path), **kwargs)}


def stage_info(outcome) -> dict:
    return json.loads((outcome.dir / "stage.json").read_text())


@pytest.fixture(scope="module")
def trained(sft_project):
    """The lfm2 preference stage run once on the shared SFT model."""
    import os

    cwd = os.getcwd()
    os.chdir(sft_project.root)
    try:
        outcomes = run(sft_project([PREF]))
    finally:
        os.chdir(cwd)
    return outcomes


def test_stage_raises_margin_and_held_out_accuracy(trained):
    metrics = stage_info(trained["pref"])["metrics"]
    print({k: round(v, 4) for k, v in metrics.items() if k.startswith("eval/")})
    # Before training the policy is the reference, so every reward is 0.
    assert metrics["eval/rewards_margins_before"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["eval/rewards_margins"] > 0.5
    assert metrics["eval/rewards_accuracies"] >= 0.8
    assert metrics["eval/logps_per_token_accuracy"] > metrics["eval/logps_per_token_accuracy_before"]
    assert metrics["eval/loss"] < metrics["eval/loss_before"]


def test_metrics_reach_the_stage_child_run(trained, sft_project):
    info = stage_info(trained["pref"])
    client = MlflowClient(f"sqlite:///{sft_project.root / 'runs' / 'mlflow.db'}")
    run = client.get_run(info["mlflow_run_id"])
    logged = run.data.metrics
    for key in ("rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected",
                "lengths/chosen", "lengths/rejected", "eval/rewards_margins", "data/train/used"):  # fmt: skip
        assert key in logged, key
    assert run.data.params["stage.preset"] == "lfm2"
    assert "mlflow.parentRunId" in run.data.tags
    assert info["details"]["loss"]["delta"] == pytest.approx(0.1)


def test_reference_cache_is_reused_by_a_beta_sweep_and_a_forced_rerun(trained, sft_project, monkeypatch):
    monkeypatch.chdir(sft_project.root)
    first = stage_info(trained["pref"])["details"]["ref_cache"]
    assert first["misses"] == ["train", "eval"] and first["hits"] == []
    sweep = PREF | {"name": "pref_beta", "beta": 2.0}
    outcomes = run(sft_project([PREF, sweep]))
    assert outcomes["pref"].status == "cached"
    swept = stage_info(outcomes["pref_beta"])
    assert swept["details"]["ref_cache"]["hits"] == ["train", "eval"] and swept["details"]["ref_cache"]["misses"] == []
    assert swept["details"]["loss"]["beta"] == 2.0 and swept["hash"] != stage_info(trained["pref"])["hash"]
    again = run(sft_project([PREF, sweep]), force={"pref"})
    assert again["pref"].status == "ran"
    assert stage_info(again["pref"])["details"]["ref_cache"]["hits"] == ["train", "eval"]
    # Cached reference log-probs give the same training as computed ones.
    assert stage_info(again["pref"])["metrics"]["eval/rewards_margins"] == pytest.approx(
        stage_info(trained["pref"])["metrics"]["eval/rewards_margins"], rel=1e-4
    )


VERBOSE_TAIL = " I hope this helps. Let me know if there is anything else you would like me to do for you today."


def _length_biased(source, target, count: int) -> None:
    """Pairs whose rejected side is the chosen reply plus a long polite tail."""
    lines = source.read_text().splitlines()[:count]
    pairs = [json.loads(line) for line in lines]
    target.write_text("".join(json.dumps(p | {"rejected": p["chosen"] + VERBOSE_TAIL}) + "\n" for p in pairs))


def test_length_bias_dpo_vs_ln_dpo(sft_project, monkeypatch):
    root = sft_project.root
    monkeypatch.chdir(root)
    _length_biased(root / "data/pairs.jsonl", root / "data/long_rejected.jsonl", 160)
    _length_biased(root / "data/pairs_eval.jsonl", root / "data/long_rejected_eval.jsonl", 40)
    common = PREF | {"data": "data/long_rejected.jsonl", "eval_data": "data/long_rejected_eval.jsonl",
                     "sample_count": 16, "max_steps": 20}  # fmt: skip
    stages = [common | {"name": "bias_dpo", "preset": "dpo"}, common | {"name": "bias_ln_dpo", "preset": "ln_dpo"}]
    outcomes = run(sft_project(stages))
    lengths = {}
    for name in ("bias_dpo", "bias_ln_dpo"):
        metrics = stage_info(outcomes[name])["metrics"]
        lengths[name] = (metrics["samples/mean_tokens_before"], metrics["samples/mean_tokens_after"])
        assert metrics["eval/rewards_accuracies"] > 0.5, name
    print(f"\nmean generated tokens (before -> after) on 16 held-out prompts, rejected = chosen + tail: {lengths}")
    assert lengths["bias_dpo"][0] == lengths["bias_ln_dpo"][0], "both start from the same SFT model"
    # the point of length normalization: plain DPO rewards the shorter chosen answer for its length and
    # shortens replies more (measured 44.6 -> 26.9 tokens) than ln_dpo (44.6 -> 38.3)
    assert lengths["bias_dpo"][1] < lengths["bias_ln_dpo"][1] < lengths["bias_ln_dpo"][0] + 1
