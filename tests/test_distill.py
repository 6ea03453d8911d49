"""The distill stage: loss alignment with cached targets, config rules, and a distilled student that beats CE."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import yaml
from transformers import Lfm2Config, Lfm2ForCausalLM

from tests.conftest import REPO, TINY_ARCH
from tests.test_teacher_cache import setup
from workbench.api import StageRef, consumed
from workbench.distill.topk_cache import build_topk_cache, open_topk_cache
from workbench.distill.training import BlockCollator, BlockDataset, DistillTrainer, training_arguments
from workbench.errors import StageError
from workbench.losses.topk_distill import TopKDistillConfig
from workbench.runner import load_recipe
from workbench.runner.executor import run_recipe
from workbench.stages.distill import DistillStageConfig


def trainer_for(tmp_path, student, cache, blocks, loss: TopKDistillConfig, teacher=None) -> DistillTrainer:
    config = DistillStageConfig(
        name="d", kind="distill", architecture="a.yaml", corpus="c.jsonl", cache="c", batch_size=4
    )
    return DistillTrainer(
        model=student,
        args=training_arguments(config, tmp_path / "out", seed=0, sequential=True),
        train_dataset=BlockDataset(np.arange(len(blocks))),
        data_collator=BlockCollator(blocks, cache),
        loss_config=loss,
        teacher=teacher,
    )


def test_cached_targets_are_aligned_with_the_students_next_token_predictions(tmp_path):
    """With K = V the KD term is the full KL(teacher || student): 0 when the student is the teacher, which
    holds only if cache row t and student logits t both predict token t + 1."""
    teacher, blocks, identity = setup(k=300, shard_blocks=4)
    with torch.no_grad():
        teacher.lm_head.weight.mul_(10)  # peaked predictions, so that a misaligned target costs a lot
    build_topk_cache(teacher, blocks, tmp_path / "cache", identity)
    cache = open_topk_cache(tmp_path / "cache", {}, min_k=300)
    student = copy.deepcopy(teacher)
    batch = BlockCollator(blocks, cache)([{"block": i} for i in range(4)])
    kd_only = trainer_for(tmp_path, student, cache, blocks, TopKDistillConfig(k=300, w_ce=0.0, w_kd=1.0))
    assert abs(kd_only.compute_loss(student, batch).item()) < 5e-3  # fp16 rounding of the stored log-probs
    ce_only = trainer_for(tmp_path, student, cache, blocks, TopKDistillConfig(k=300, w_ce=1.0, w_kd=0.0))
    with torch.no_grad():
        reference = student(input_ids=batch["input_ids"], labels=batch["labels"]).loss
    assert ce_only.compute_loss(student, batch).item() == pytest.approx(reference.item(), rel=1e-5)

    shifted = dict(batch, teacher_ids=batch["teacher_ids"].roll(1, dims=1))
    shifted["teacher_logprobs"] = batch["teacher_logprobs"].roll(1, dims=1)
    assert kd_only.compute_loss(student, shifted).item() > 1.0, "a misaligned cache is not free"


def test_online_mode_gives_the_cached_loss(tmp_path):
    teacher, blocks, identity = setup(k=8, shard_blocks=4)
    build_topk_cache(teacher, blocks, tmp_path / "cache", identity)
    cache = open_topk_cache(tmp_path / "cache", {}, min_k=8)
    torch.manual_seed(1)
    student = Lfm2ForCausalLM(Lfm2Config(vocab_size=300, **TINY_ARCH))
    loss = TopKDistillConfig(k=8)
    batch = BlockCollator(blocks, cache)([{"block": i} for i in (3, 5, 7)])
    cached = trainer_for(tmp_path, student, cache, blocks, loss).compute_loss(student, batch)
    online_trainer = trainer_for(tmp_path, student, None, blocks, loss, teacher=teacher)
    online = online_trainer.compute_loss(student, {k: batch[k] for k in ("input_ids", "labels")})
    assert online.item() == pytest.approx(cached.item(), rel=1e-3), "fp16 storage changes the loss by < 0.1%"


def test_loss_parts_stay_on_the_device_until_the_trainer_logs(tmp_path, monkeypatch):
    """compute_loss keeps the loss parts as tensors (no `.item()`, a host sync, per step); a training log gets
    their means since the last one: the same numbers as one `.item()` per part and step gave."""
    import sys

    import transformers

    from workbench.distill import training

    teacher, blocks, identity = setup(k=8, shard_blocks=4)
    build_topk_cache(teacher, blocks, tmp_path / "cache", identity)
    cache = open_topk_cache(tmp_path / "cache", {}, min_k=8)
    torch.manual_seed(1)
    student = Lfm2ForCausalLM(Lfm2Config(vocab_size=300, **TINY_ARCH)).train()
    trainer = trainer_for(tmp_path, student, cache, blocks, TopKDistillConfig(k=8))
    parts, syncs, logged = [], [], []
    loss, item = training.decoupled_topk_kd_loss, torch.Tensor.item

    def loss_with_parts(*args):
        result = loss(*args)
        parts.append([getattr(result, name).item() for name in ("ce", "binary", "topk")])
        return result

    def counted_item(tensor):
        if sys._getframe(1).f_code.co_filename == training.__file__:
            syncs.append(tensor)
        return item(tensor)

    monkeypatch.setattr(training, "decoupled_topk_kd_loss", loss_with_parts)
    monkeypatch.setattr(torch.Tensor, "item", counted_item)
    monkeypatch.setattr(transformers.Trainer, "log", lambda self, logs, start_time=None: logged.append(logs))
    collate = BlockCollator(blocks, cache)
    for step in range(3):
        trainer.compute_loss(student, collate([{"block": step}, {"block": step + 3}]))
    trainer.log({"eval_loss": 1.0})  # not a training log: the parts wait for the next one
    assert syncs == [] and logged == [{"eval_loss": 1.0}]
    trainer.log({"loss": 1.0})
    ce, binary, topk = (float(np.mean(column)) for column in zip(*parts, strict=True))
    assert logged[1] == {"loss": 1.0, "loss_ce": ce, "loss_binary": binary, "loss_topk": topk}
    trainer.log({"loss": 2.0})
    assert logged[2] == {"loss": 2.0}, "the parts are the means since the last log"
    assert syncs == []


def test_distill_stages_hash_the_pinned_tokenizer_at_most_once(tmp_path, monkeypatch):
    """teacher_cache and distill's checks (the teacher's tokenizer, the corpus key, the cache manifest) share the
    stage's one fingerprint of the pinned tokenizer: hashed once when a stage computes it itself, never when the
    executor hands it over."""
    from rich.console import Console

    from workbench.api import Project, StageContext
    from workbench.distill.corpus import load_corpus
    from workbench.distill.teacher import check_teacher_tokenizer, open_cache
    from workbench.modeling import tokenizer as tokenizer_module
    from workbench.modeling.architecture import build_model
    from workbench.modeling.chat_template import LFM2_CHAT_TEMPLATE
    from workbench.stages import teacher_cache
    from workbench.stages.teacher_cache import TeacherCacheStageConfig

    lines = (REPO / "datasets/pretrain/corpus.jsonl").read_text().splitlines()[:40]
    (tmp_path / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    tokenizer = tokenizer_module.train_bpe_tokenizer([json.loads(line)["text"] for line in lines], 300,
                                                     LFM2_CHAT_TEMPLATE)  # fmt: skip
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    teacher = tmp_path / "teacher"
    build_model(TINY_ARCH, tokenizer, 0).save_pretrained(teacher)
    tokenizer.save_pretrained(teacher)
    hashed, fingerprint = [], tokenizer_module.tokenizer_fingerprint

    def counted_fingerprint(folder):
        hashed.append(folder.name)
        return fingerprint(folder)

    class Tracker:
        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    def context(config, tmp_dir, **handed_over) -> StageContext:
        project = Project(tmp_path, tmp_path / "runs", tmp_path / "runs", "kd", 0, False)
        return StageContext(project, config, "0" * 64, tmp_dir, {}, tmp_path / "tokenizer", Tracker(),
                            Console(quiet=True), **handed_over)  # fmt: skip

    monkeypatch.setattr(tokenizer_module, "tokenizer_fingerprint", counted_fingerprint)
    config = TeacherCacheStageConfig(name="cache", kind="teacher_cache", model=str(teacher), corpus="corpus.jsonl",
                                     seq_len=32, k=4)  # fmt: skip
    (tmp_path / "cache").mkdir()
    teacher_cache.run(context(config, tmp_path / "cache"))
    assert hashed == ["teacher", "tokenizer"], "the teacher's tokenizer and the pinned one, each once"

    hashed.clear()
    config = DistillStageConfig(name="d", kind="distill", architecture="a.yaml", corpus="corpus.jsonl", seq_len=32,
                                cache_path="cache/cache", teacher_model=str(teacher), loss={"k": 4})  # fmt: skip
    ctx = context(config, tmp_path / "d", tokenizer_fingerprint=fingerprint(tmp_path / "tokenizer"))
    corpus = load_corpus(ctx, config, config.corpus, ctx.tokenizer(), "data/train")
    assert open_cache(ctx, tmp_path / "cache/cache", corpus.digest, str(teacher), len(tokenizer)).k == 4
    check_teacher_tokenizer(ctx, str(teacher))
    assert hashed == ["teacher"], "only the teacher's own tokenizer: the pinned one's fingerprint was handed over"


def test_config_rules_for_teacher_sources():
    base = {"name": "d", "kind": "distill", "architecture": "a.yaml", "corpus": "c.jsonl"}
    with pytest.raises(ValueError, match="cached needs exactly one of 'cache'"):
        DistillStageConfig(**base)
    with pytest.raises(ValueError, match="online reads no cache"):
        DistillStageConfig(**base, teacher_mode="online", teacher="t", cache="c")
    with pytest.raises(ValueError, match="online needs 'teacher'"):
        DistillStageConfig(**base, teacher_mode="online")
    config = DistillStageConfig(**base, cache="c", loss={"k": 16, "temperature": 2.0})
    assert config.loss.k == 16 and config.loss.w_ce == 0.5 and config.loss.use_tau_squared
    refs = [(c.path, c.value) for c in consumed(DistillStageConfig, config.model_dump(mode="json", by_alias=True))
            if isinstance(c.marker, StageRef)]  # fmt: skip
    assert refs == [(("cache",), "c")]


TEACHER_ARCH = TINY_ARCH | {"hidden_size": 64, "intermediate_size": 128}


@pytest.mark.slow
def test_a_compressed_cache_trains_a_student_with_the_exact_caches_loss(tmp_path, monkeypatch):
    """`teacher_cache` with `format: compressed` (the default) and `exact` over the same blocks: the compressed one
    is smaller, holds the same ids and log-probs within a quantisation step, `distill` trains on it, and the
    student's KD loss (L_B + L_T) over every block differs from the exact cache's by < 1e-3 relative."""
    from workbench.distill.corpus import open_corpus
    from workbench.distill.topk_codec import STEP
    from workbench.runner.plan import make_plan

    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.jsonl").write_text((REPO / "datasets/pretrain/corpus.jsonl").read_text())
    (tmp_path / "arch.yaml").write_text(yaml.safe_dump(TINY_ARCH))
    data = {"corpus": "corpus.jsonl", "seq_len": 64}
    recipe = {
        "name": "kd",
        "tokenizer": {"train": {"files": ["corpus.jsonl"], "vocab_size": 400}},
        "stages": [
            {"name": "teacher", "kind": "pretrain", "architecture": "arch.yaml", "max_steps": 40, "batch_size": 16,
             "learning_rate": 3e-3, **data},
            {"name": "small", "kind": "teacher_cache", "from": "teacher", "k": 8, **data},
            {"name": "exact", "kind": "teacher_cache", "from": "teacher", "k": 8, "format": "exact", **data},
            {"name": "student", "kind": "distill", "architecture": "arch.yaml", "cache": "small", "teacher": "teacher",
             "loss": {"k": 8}, "max_steps": 4, "batch_size": 4, "save_steps": 100, **data},
        ],
    }  # fmt: skip
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    hashes = {stage.name: stage.hash for stage in make_plan(load_recipe(tmp_path / "recipe.yaml")).stages}
    assert hashes["small"] != hashes["exact"], "the format is part of the stage's hash"
    outcomes = {o.name: o for o in run_recipe(load_recipe(tmp_path / "recipe.yaml"))}
    student_metrics = json.loads((outcomes["student"].dir / "stage.json").read_text())["metrics"]
    assert student_metrics["train/steps"] == 4

    caches = {name: open_topk_cache(outcomes[name].dir / "cache", {}, min_k=8) for name in ("small", "exact")}
    assert caches["small"].manifest["form"] == "compressed" and caches["exact"].manifest["form"] == "exact"
    assert caches["small"].manifest["bytes_per_token"] < caches["exact"].manifest["bytes_per_token"] == 8 * 4
    (corpus,) = [
        c for c in map(open_corpus, {p.parent for p in tmp_path.rglob("_corpus/*/blocks.npy")})
        if c.digest == caches["exact"].manifest["corpus_digest"]
    ]  # fmt: skip
    everything = list(range(len(corpus.blocks)))
    (small_ids, small_lp), (exact_ids, exact_lp) = (caches[name].rows(everything) for name in ("small", "exact"))
    np.testing.assert_array_equal(np.sort(small_ids, -1), np.sort(exact_ids, -1))
    by_id = [np.take_along_axis(lp.astype(np.float32), np.argsort(i, -1), -1) for i, lp in
             ((small_ids, small_lp), (exact_ids, exact_lp))]  # fmt: skip
    assert np.abs(by_id[0] - by_id[1]).max() <= STEP

    student = Lfm2ForCausalLM.from_pretrained(outcomes["student"].dir / "model").eval()
    kd = TopKDistillConfig(k=8, w_ce=0.0, w_kd=1.0)
    losses = {}
    for name, cache in caches.items():
        trainer = trainer_for(tmp_path, student, cache, corpus.blocks, kd)
        collate = BlockCollator(corpus.blocks, cache)
        with torch.no_grad():
            losses[name] = sum(trainer.compute_loss(student, collate([{"block": b} for b in everything[i : i + 8]]))
                               .item() for i in range(0, len(everything), 8))  # fmt: skip
    difference = abs(losses["small"] - losses["exact"]) / losses["exact"]
    print(f"KD loss over {len(everything)} blocks: compressed {losses['small']:.5f}, exact {losses['exact']:.5f}")
    assert difference < 1e-3, difference
    assert abs(losses["small"] - losses["exact"]) > 0, "the compressed form is not the exact one"


@pytest.mark.slow
def test_distilled_student_beats_ce_alone_and_mismatched_cache_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("corpus.jsonl", "corpus_eval.jsonl"):
        (tmp_path / name).write_text((REPO / "datasets/pretrain" / name).read_text())
    (tmp_path / "student.yaml").write_text(yaml.safe_dump(TINY_ARCH))
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(TEACHER_ARCH))
    data = {"corpus": "corpus.jsonl", "seq_len": 64}
    train = {"eval_corpus": "corpus_eval.jsonl", "learning_rate": 3e-3, "logging_steps": 20, "save_steps": 1000}
    student = {"architecture": "student.yaml", "max_steps": 80, "batch_size": 8, "seed": 1, **data, **train}
    recipe = {
        "name": "kd",
        "tokenizer": {"train": {"files": ["corpus.jsonl"], "vocab_size": 400}},
        "stages": [
            {"name": "teacher", "kind": "pretrain", "architecture": "teacher.yaml", "max_steps": 150}
            | {"batch_size": 16, **data, **train},
            {"name": "cache", "kind": "teacher_cache", "from": "teacher", "k": 8, **data},
            {"name": "distilled", "kind": "distill", "cache": "cache", "teacher": "teacher", "loss": {"k": 8}}
            | student,
            {"name": "ce_only", "kind": "pretrain", **student},
        ],
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    outcomes = {o.name: o for o in run_recipe(load_recipe(tmp_path / "recipe.yaml"))}
    metrics = {n: json.loads((o.dir / "stage.json").read_text())["metrics"] for n, o in outcomes.items()}
    distilled, ce_only = metrics["distilled"]["eval/loss"], metrics["ce_only"]["eval/loss"]
    print(f"held-out loss after 80 steps: distilled {distilled:.4f}, CE alone {ce_only:.4f}")
    assert metrics["distilled"]["eval/loss_before"] == pytest.approx(metrics["ce_only"]["eval/loss_before"])
    assert metrics["teacher"]["eval/loss"] < distilled < ce_only
    manifest = json.loads((outcomes["cache"].dir / "cache/manifest.json").read_text())
    assert manifest["k"] == 8 and manifest["tokens"] == metrics["cache"]["cache/tokens"]

    # A second recipe with another tokenizer may not read this cache: refused before any training.
    other = {
        "name": "other",
        "tokenizer": {"train": {"files": ["corpus.jsonl"], "vocab_size": 420}},
        "stages": [
            {"name": "student", "kind": "distill", "cache_path": str(outcomes["cache"].dir / "cache")}
            | student
            | {"loss": {"k": 8}}
        ],
    }
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    with pytest.raises(StageError, match="refused: tokenizer differs .*corpus blocks differ"):
        run_recipe(load_recipe(tmp_path / "other.yaml"))
    assert not list(tmp_path.glob("runs/other/student/*.tmp/checkpoints/*"))


def test_a_top_k_wider_than_the_vocabulary_is_one_line_before_the_teacher_runs(tmp_path, monkeypatch):
    from workbench.errors import RecipeError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.jsonl").write_text((REPO / "datasets/pretrain/corpus_eval.jsonl").read_text())
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(TINY_ARCH))
    data = {"corpus": "corpus.jsonl", "seq_len": 32}

    def recipe(vocab_size: int, k: int):
        stages = [{"name": "teacher", "kind": "init", "architecture": "teacher.yaml"},
                  {"name": "cache", "kind": "teacher_cache", "from": "teacher", "k": k, **data}]  # fmt: skip
        path = tmp_path / f"r{vocab_size}.yaml"
        tokenizer = {"train": {"files": ["corpus.jsonl"], "vocab_size": vocab_size}}
        path.write_text(yaml.safe_dump({"name": "k", "tokenizer": tokenizer, "stages": stages}, sort_keys=False))
        return path

    # the recipe says how large its tokenizer is: validate refuses a k above it, at the line of `k`
    with pytest.raises(RecipeError, match=r"r400.yaml:14: cache.k: k 5000 is more than the recipe's tokenizer has"):
        load_recipe(recipe(400, 5000))
    # a tokenizer trained on little text may stop short of its vocab_size: the stage says so before caching
    with pytest.raises(StageError, match=r"k 5000 is more than the teacher's vocabulary \(\d+ tokens\)"):
        run_recipe(load_recipe(recipe(200000, 5000)))
    assert not list(tmp_path.glob("runs/k/cache/*/cache"))
