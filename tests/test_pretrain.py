"""The pretrain stage: corpus reading with reported bad lines, packing, curriculum order kept by the trainer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_ARCH
from workbench.distill.corpus import read_documents
from workbench.distill.curriculum import curriculum_order
from workbench.distill.training import BlockCollator, BlockDataset, training_arguments
from workbench.errors import StageError
from workbench.runner import load_recipe
from workbench.runner.executor import run_recipe
from workbench.stages.pretrain import PretrainStageConfig


def test_empty_and_undecodable_lines_are_reported_with_line_numbers(tmp_path):
    path = tmp_path / "corpus.jsonl"
    lines = [
        b'{"text": "one", "difficulty": 1}',
        b"",
        b'{"text": "caf\xe9"}',  # latin-1, not UTF-8
        b'{"text": "   "}',
        b"not json",
        b'{"body": "no text field"}',
        b'{"text": "two"}',
        b"   ",
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    documents, report = read_documents(path, "corpus.jsonl", "text", "difficulty")
    assert [(loc, text, d) for loc, text, d in documents] == [(1, "one", 1.0), (7, "two", None)]
    assert report.total == 8
    assert dict(report.problems) == {
        "empty": [2, 8],
        "not UTF-8": [3],
        "with an empty 'text'": [4],
        "invalid JSON (Expecting value)": [5],
        "without a string 'text'": [6],
    }
    assert "corpus.jsonl: 2 records empty (lines 2, 8)" in report.lines()


def test_plain_text_corpus_is_one_document_per_line(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"first line\n\nsecond \xff line\nthird line\n")
    documents, report = read_documents(path, "corpus.txt", "text", "difficulty")
    assert [(loc, text) for loc, text, _ in documents] == [(1, "first line"), (4, "third line")]
    assert dict(report.problems) == {"empty": [2], "not UTF-8": [3]}


def test_parquet_corpus_rows_and_a_corrupt_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": ["one doc", "", "two doc"], "difficulty": [1.0, 2.0, 3.0]}), good)
    documents, report = read_documents(good, "c.parquet", "text", "difficulty")
    assert [(row, text) for row, text, _ in documents] == [(1, "one doc"), (3, "two doc")]
    assert report.unit == "row" and report.total == 3 and len(report.problems) == 1
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(good.read_bytes()[:40])
    with pytest.raises(StageError, match=r"broken.parquet: not a readable Parquet file \("):
        read_documents(broken, "broken.parquet", "text", "difficulty")


def test_curriculum_buckets_go_from_easy_to_hard():
    difficulty = np.random.default_rng(1).random(100)
    order = curriculum_order(difficulty, buckets=4, seed=0)
    assert sorted(order.tolist()) == list(range(100))
    buckets = np.array_split(difficulty[order], 4)
    assert all(buckets[i].max() <= buckets[i + 1].min() for i in range(3))
    assert not np.all(np.diff(difficulty[order]) >= 0), "blocks are shuffled inside a bucket"
    assert np.array_equal(curriculum_order(difficulty, 100, 0), np.argsort(difficulty, kind="stable"))


def test_trainer_reads_the_curriculum_in_order(tmp_path):
    from transformers import Lfm2Config, Lfm2ForCausalLM, Trainer

    blocks = np.arange(40 * 8, dtype=np.uint16).reshape(40, 8) % 300
    order = curriculum_order(np.random.default_rng(0).random(40), buckets=4, seed=0)
    config = PretrainStageConfig(
        name="p", kind="pretrain", architecture="a.yaml", corpus="c.jsonl", batch_size=4, curriculum="column"
    )
    model = Lfm2ForCausalLM(Lfm2Config(vocab_size=300, **TINY_ARCH))
    trainer = Trainer(
        model=model,
        args=training_arguments(config, tmp_path, seed=0, sequential=True),
        train_dataset=BlockDataset(order),
        data_collator=BlockCollator(blocks),
    )
    seen = [row for batch in trainer.get_train_dataloader() for row in batch["input_ids"][:, 0].tolist()]
    assert seen == blocks[order, 0].tolist(), "the trainer must not reshuffle a curriculum"


def test_config_needs_exactly_one_start_and_a_scorer_only_for_scorer_curriculum():
    base = {"name": "p", "kind": "pretrain", "corpus": "c.jsonl"}
    with pytest.raises(ValueError, match="exactly one of 'architecture'"):
        PretrainStageConfig(**base)
    with pytest.raises(ValueError, match="exactly one of 'architecture'"):
        PretrainStageConfig(**base, architecture="a.yaml", model="m")
    with pytest.raises(ValueError, match="'scorer' is needed"):
        PretrainStageConfig(**base, architecture="a.yaml", curriculum="scorer")


@pytest.mark.slow
def test_pretrain_stage_with_column_and_scorer_curricula(tmp_path, monkeypatch):
    from tests.conftest import REPO

    monkeypatch.chdir(tmp_path)
    corpus = (REPO / "datasets/pretrain/corpus.jsonl").read_text().splitlines()[:200]
    (tmp_path / "train.jsonl").write_text("\n".join(corpus[:100] + [""] + corpus[100:]) + "\n")  # one empty line
    (tmp_path / "eval.jsonl").write_text((REPO / "datasets/pretrain/corpus_eval.jsonl").read_text())
    (tmp_path / "arch.yaml").write_text(yaml.safe_dump(TINY_ARCH))
    common = {"kind": "pretrain", "corpus": "train.jsonl", "eval_corpus": "eval.jsonl", "seq_len": 32}
    common |= {"batch_size": 8, "max_steps": 6, "learning_rate": 3e-3, "logging_steps": 2, "save_steps": 3}
    recipe = {
        "name": "pt",
        "tokenizer": {"train": {"files": ["train.jsonl"], "vocab_size": 400}},
        "stages": [
            {"name": "base", "architecture": "arch.yaml", "curriculum": "column", **common},
            {
                "name": "more",
                "from": "base",
                "curriculum": "scorer",
                "scorer": "base",
                "curriculum_buckets": 2,
                **common,
            },
        ],
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    outcomes = {o.name: o for o in run_recipe(load_recipe(tmp_path / "recipe.yaml"))}

    base = json.loads((outcomes["base"].dir / "stage.json").read_text())["metrics"]
    assert base["eval/loss"] < base["eval/loss_before"] and base["train/steps"] == 6
    more = json.loads((outcomes["more"].dir / "stage.json").read_text())["metrics"]
    assert more["eval/loss_before"] == pytest.approx(base["eval/loss"], rel=1e-5), "continued from base"
    assert more["eval/loss"] < more["eval/loss_before"]
    assert (outcomes["more"].dir / "model/model.safetensors").is_file()

    client = MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    run_id = json.loads((outcomes["base"].dir / "stage.json").read_text())["mlflow_run_id"]
    logged = json.loads(open(client.download_artifacts(run_id, "curriculum.json", str(tmp_path))).read())
    first_bucket = np.array_split(np.array(logged["difficulty"]), 4)
    assert first_bucket[0].max() <= first_bucket[1].min()
    logged_metrics = client.get_run(run_id).data.metrics
    for stage in ("base", "more"):
        child = json.loads((outcomes[stage].dir / "stage.json").read_text())["mlflow_run_id"]
        metrics = client.get_run(child).data.metrics
        assert metrics["curriculum/first_bucket_difficulty"] < metrics["curriculum/last_bucket_difficulty"]
    assert logged_metrics["data/train/lines"] == 201 and logged_metrics["data/train/skipped_empty"] == 1
    assert len(client.get_metric_history(run_id, "loss")) >= 3, "the Trainer streams its loss to the stage's run"

    recipe["stages"][0]["invalid_lines"] = "error"
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(StageError, match=r"train.jsonl: 1 record empty \(line 101\)"):
        run_recipe(load_recipe(tmp_path / "recipe.yaml"))
