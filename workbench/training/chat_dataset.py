"""Load a chat dataset for training: validate, tokenize once, apply the over-length policy, report every exclusion.

The one tokenization serves the length check and the trainer: the examples are trl's own tokenized form
(`input_ids`, and `assistant_masks` for assistant-only loss, made by the same `apply_chat_template` call trl makes),
so SFTTrainer skips its tokenization pass and only builds labels and truncates or packs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workbench.api.context import StageContext
from workbench.data.chat import OVERLENGTH, DataReport, InvalidPolicy, OverlengthPolicy, load_chat_records
from workbench.data.report import publish_report
from workbench.errors import StageError


@dataclass
class ChatData:
    examples: list[dict[str, Any]]
    """Records tokenized as trl's SFTTrainer tokenizes them: `input_ids`, and `assistant_masks` when the loss is
    on assistant turns only."""
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
        if assistant_only_loss and 1 not in encoded["assistant_masks"]:
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
    publish_report(ctx, report, len(kept), overlength, metric_prefix)
    if not kept:
        raise StageError(f"{relative}: no usable records left")
    examples = [tokenized[r.location] for r in kept]
    return ChatData(examples, [r.data for r in kept], report)


def _tokenize(tokenizer, record: dict[str, Any], assistant_only_loss: bool) -> dict[str, list[int]]:
    """What trl's SFTTrainer makes of a conversational record (`trl.data_utils._tokenize` with the tokenizer's own
    template): the ids, and the assistant-token mask when the loss is on assistant turns."""
    encoded = tokenizer.apply_chat_template(
        record["messages"],
        tools=record.get("tools") or None,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=assistant_only_loss,
    )
    keys = ("input_ids", "assistant_masks") if assistant_only_loss else ("input_ids",)
    return {key: list(encoded[key]) for key in keys}
