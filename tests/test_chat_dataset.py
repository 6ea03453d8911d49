"""The sft stage tokenizes its data once: the examples it hands SFTTrainer, whose preparation it skips, are what
trl's own preparation makes of the raw conversations (same ids, same loss labels, same truncation), and the template
is applied once per record (for the length check and the trainer both)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO, TINY_ARCH, data_context

RECORDS = 24


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from workbench.modeling.architecture import build_model
    from workbench.modeling.chat_template import LFM2_CHAT_TEMPLATE
    from workbench.modeling.tokenizer import train_bpe_tokenizer

    root = tmp_path_factory.mktemp("chats")
    lines = (REPO / "datasets/quickstart/sft.jsonl").read_text().splitlines()[:RECORDS]
    (root / "chats.jsonl").write_text("\n".join(lines) + "\n")
    texts = [m["content"] for line in lines for m in json.loads(line)["messages"] if m.get("content")]
    tokenizer = train_bpe_tokenizer(texts, 400, LFM2_CHAT_TEMPLATE)
    return root, tokenizer, build_model(TINY_ARCH, tokenizer, 0)


@pytest.mark.parametrize(("assistant_only_loss", "max_length"), [(True, 4096), (False, 4096), (True, 90)])
def test_pre_tokenized_examples_are_what_trl_makes_of_the_raw_records(tiny, tmp_path, assistant_only_loss, max_length):
    from trl import SFTConfig, SFTTrainer

    from datasets import Dataset
    from workbench.training.chat_dataset import load_training_chats

    root, tokenizer, model = tiny
    ours = load_training_chats(data_context(root), "chats.jsonl", tokenizer, max_length, "error", "truncate",
                               "data/train", assistant_only_loss)  # fmt: skip
    raw = [
        {"messages": r["messages"], "tools": json.dumps(r["tools"]) if r.get("tools") else None}
        for r in map(json.loads, (root / "chats.jsonl").read_text().splitlines())
    ]
    args = SFTConfig(output_dir=str(tmp_path), max_length=max_length, assistant_only_loss=assistant_only_loss, report_to=[],
                     bf16=False, use_cpu=True)  # fmt: skip
    theirs = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(raw), processing_class=tokenizer)
    args.assistant_only_loss = False  # as the sft stage sets it: the examples are ready, trl's preparation skipped
    args.dataset_kwargs = {"skip_prepare_dataset": True}
    mine = SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(ours.examples), processing_class=tokenizer
    )
    truncated = sum(len(row) == max_length for row in theirs.train_dataset["input_ids"])
    assert (truncated > 0) == (max_length < 4096), "the short max_length truncates some records, the long none"
    assert len(ours.examples) == len(theirs.train_dataset) == (RECORDS if max_length == 4096 else len(ours.examples))
    for column in ("input_ids", "labels"):
        assert mine.train_dataset[column] == theirs.train_dataset[column]
    masked = sum(label == -100 for row in mine.train_dataset["labels"] for label in row)
    assert (masked > 0) == assistant_only_loss


def test_the_template_is_applied_once_per_record(tiny, monkeypatch):
    from transformers import PreTrainedTokenizerBase

    from workbench.training.chat_dataset import load_training_chats

    root, tokenizer, _ = tiny
    calls = []
    original = PreTrainedTokenizerBase.apply_chat_template

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerBase, "apply_chat_template", counted)
    load_training_chats(data_context(root), "chats.jsonl", tokenizer, 4096, "error", "drop", "data/train")
    assert len(calls) == RECORDS
