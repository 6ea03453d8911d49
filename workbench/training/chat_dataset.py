"""Load a chat dataset for training: validate, tokenize once, apply the over-length policy, report every exclusion.

The one tokenization serves the length check and the trainer: the examples are what trl's own preparation makes
(`input_ids`, and `labels` with -100 outside the assistant turns when the loss is on them, from the same
`apply_chat_template` call trl makes), already truncated under the `truncate` policy, so SFTTrainer can skip its
preparation entirely (`skip_prepare_dataset`) unless it packs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workbench.api.context import StageContext
from workbench.data.chat import OVERLENGTH, DataReport, InvalidPolicy, OverlengthPolicy, load_chat_records
from workbench.data.report import publish_report
from workbench.errors import StageError

IGNORED = -100
"""The label of a token the loss skips (PyTorch's cross-entropy `ignore_index`, as trl writes it)."""
NO_LOSS_LEFT = "no assistant token left after truncation to max_length"


@dataclass
class ChatData:
    examples: list[dict[str, Any]]
    """Records as trl's SFTTrainer prepares them: `input_ids` and `labels` (-100 where no loss is taken)."""
    raw: list[dict[str, Any]]
    report: DataReport


def load_training_chats(
    ctx: StageContext,
    relative: str,
    tokenizer,
    max_length: int,
    invalid: InvalidPolicy,
    overlength: OverlengthPolicy,
    metric_prefix: str,
    assistant_only_loss: bool = True,
) -> ChatData:
    records, report = load_chat_records(ctx.resolve(relative), relative)
    bad = report.bad_locations()
    if bad and invalid == "error":
        raise StageError(
            "\n".join(report.lines()) + "\n(fix the data, or set invalid_records: drop to skip these records)"
        )
    kept = [r for r in records if r.location not in bad]
    long_locations = set()
    tokenized = {}
    for record in kept:
        tokenized[record.location] = encoded = _tokenize(tokenizer, record.data, assistant_only_loss)
        if not any(label != IGNORED for label in encoded["labels"]):
            raise StageError(
                f"{relative}:{record.location}: the chat template marks no assistant token (it needs "
                "`{% generation %}` blocks, as `lfm2` has): use such a template or set assistant_only_loss: false"
            )
        if len(encoded["input_ids"]) > max_length:
            report.add(f"{OVERLENGTH}={max_length} tokens", record.location)
            long_locations.add(record.location)
    if long_locations and overlength == "error":
        raise StageError("\n".join(report.lines()) + "\n(raise max_length, or set overlength: drop or truncate)")
    if overlength == "drop":
        kept = [r for r in kept if r.location not in long_locations]
    elif overlength == "truncate":  # as trl truncates (keep_start); a record left with no loss token teaches nothing
        emptied = set()
        for location in sorted(long_locations):
            encoded = tokenized[location]
            encoded["input_ids"], encoded["labels"] = encoded["input_ids"][:max_length], encoded["labels"][:max_length]
            if not any(label != IGNORED for label in encoded["labels"]):
                report.add(NO_LOSS_LEFT, location)
                emptied.add(location)
        kept = [r for r in kept if r.location not in emptied]
    publish_report(ctx, report, len(kept), overlength, metric_prefix)
    if not kept:
        raise StageError(f"{relative}: no usable records left")
    examples = [tokenized[r.location] for r in kept]
    return ChatData(examples, [r.data for r in kept], report)


def _tokenize(tokenizer, record: dict[str, Any], assistant_only_loss: bool) -> dict[str, list[int]]:
    """What trl's SFTTrainer makes of a conversational record (`trl.data_utils._tokenize` with the tokenizer's own
    template, then its label building): the ids, and labels that are the ids with -100 outside assistant turns when
    the loss is on them."""
    encoded = tokenizer.apply_chat_template(
        record["messages"],
        tools=record.get("tools") or None,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=assistant_only_loss,
    )
    ids = list(encoded["input_ids"])
    if not assistant_only_loss:
        return {"input_ids": ids, "labels": list(ids)}
    return {
        "input_ids": ids,
        "labels": [t if m else IGNORED for t, m in zip(ids, encoded["assistant_masks"], strict=True)],
    }
