"""`word_stats`: count the lines, words and tokens of a data file; a workbench stage kind shipped as a plug-in.

It lives outside the `workbench` package and reaches workbench only through its entry point (see this folder's
pyproject.toml) and the stage API (`workbench.api`), plus two library helpers (`workbench.errors`,
`workbench.fsio`). docs/extending.md walks through it.

    - name: stats
      kind: word_stats
      data: data/train.jsonl     # checked at validate, hashed by content
      score_with: base           # optional: an earlier stage whose model scores the text
      max_words: 50000           # optional: stop the recipe when the file has more words (not hashed)

The stage writes `stats.json` (counts and the most frequent words) into its folder and reports `lines`, `words`,
`tokens`, `characters`, `tokens_per_word` (and `loss` with `score_with`) as metrics.
"""

from __future__ import annotations

import json
import string
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import Field

from workbench.api import (
    DataFile,
    RecipeView,
    Review,
    ReviewContext,
    StageConfig,
    StageContext,
    StageKind,
    StageName,
    StageResult,
)
from workbench.errors import StageError
from workbench.fsio import write_json_atomic


class WordStatsConfig(StageConfig):
    """Count the lines, words and tokens of a data file; optionally score it with an earlier stage's model."""

    kind: Literal["word_stats"]
    """Stage kind."""

    data: DataFile
    """The file to count, relative to the project root: JSONL (each record's `text`, or the contents of its
    `messages`) or plain text (one sample per line)."""

    score_with: StageName | None = None
    """An earlier stage whose model scores the text: its mean per-token loss becomes the metric `loss`."""

    score_lines: int = Field(default=32, ge=1, le=10000)
    """How many samples, from the start of the file, the `score_with` model scores."""

    top_words: int = Field(default=10, ge=0, le=1000)
    """How many of the most frequent words (lower-cased, punctuation stripped) `stats.json` lists."""

    max_words: int | None = Field(default=None, ge=1)
    """Stop the recipe after this stage when the file has more words than this. The review checks it against the
    recorded counts, for a fresh and a cached stage alike, so it stays out of the stage's hash."""

    # A bound on the result does not change the result: changing it re-checks, it does not re-count.
    unhashed_fields = StageConfig.unhashed_fields | {"max_words"}

    def check_recipe(self, recipe: RecipeView) -> None:
        """Two word_stats stages that would count the same thing are a copy-paste slip: report the later one."""
        mine = self.model_dump(exclude=set(self.unhashed_fields))
        for other in recipe.stages_of_kind("word_stats"):
            if other == self.name:
                return
            config = recipe.config_of(other)
            if config is not None and config.model_dump(exclude=set(config.unhashed_fields)) == mine:
                recipe.problem(("data",), f"counts the same as stage '{other}' (same data and settings)")


def read_texts(path: Path) -> list[str]:
    """One text per sample: JSONL records' `text` or joined message contents; otherwise the file's lines."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if path.suffix.lower() != ".jsonl":
        return [line for line in lines if line.strip()]
    texts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise StageError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if isinstance(record, dict) and isinstance(record.get("text"), str):
            texts.append(record["text"])
        elif isinstance(record, dict) and isinstance(record.get("messages"), list):
            contents = [m.get("content") for m in record["messages"] if isinstance(m, dict)]
            texts.append("\n".join(c for c in contents if isinstance(c, str)))
        else:
            raise StageError(f"{path}:{number}: a record needs a 'text' string or a 'messages' list")
    return texts


def run(ctx: StageContext) -> StageResult:
    config: WordStatsConfig = ctx.config
    texts = read_texts(ctx.resolve(config.data))
    tokenizer = ctx.tokenizer()  # the recipe's pinned tokenizer
    tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]) if texts else 0
    words = [word for text in texts for word in text.split()]
    frequent = Counter(w.strip(string.punctuation).lower() for w in words if w.strip(string.punctuation))
    counts = {"lines": len(texts), "words": len(words), "tokens": tokens, "characters": sum(map(len, texts))}
    metrics = {name: float(value) for name, value in counts.items()}
    metrics["tokens_per_word"] = tokens / max(len(words), 1)
    if config.score_with is not None:
        loss = _mean_loss(ctx, config, texts[: config.score_lines])
        if loss is not None:
            metrics["loss"] = loss
    stats = {"file": config.data, **counts, "top_words": frequent.most_common(config.top_words)}
    write_json_atomic(ctx.tmp_dir / "stats.json", stats)  # lands in the stage folder when the stage finishes
    ctx.tracker.log_artifact(ctx.tmp_dir / "stats.json")
    ctx.console.print(f"  {counts['lines']} lines, {counts['words']} words, {tokens} tokens")
    return StageResult(metrics=metrics, details={"top_words": stats["top_words"]})


def _mean_loss(ctx: StageContext, config: WordStatsConfig, texts: list[str]) -> float | None:
    """The `score_with` model's mean next-token loss over `texts` (None when no text has two tokens)."""
    import torch

    source = ctx.inputs[config.score_with]
    if not source.model_dir.is_dir():
        raise StageError(f"stage '{config.name}': stage '{source.name}' wrote no model to score with")
    model = ctx.load_model(source.model_dir).eval()
    tokenizer = ctx.tokenizer()
    limit = getattr(model.config, "max_position_embeddings", None) or 512
    total, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][:, :limit]
            if ids.shape[1] < 2:
                continue
            total += model(input_ids=ids, labels=ids).loss.item() * (ids.shape[1] - 1)
            count += ids.shape[1] - 1
    if count == 0:
        ctx.console.print("  [yellow]no sample has two tokens: nothing to score[/]")
        return None
    ctx.console.print(f"  {source.name}'s mean loss over {len(texts)} samples: {total / count:.4f}")
    return total / count


def review(ctx: ReviewContext) -> Review:
    """Check `max_words` against the recorded count; runs after a fresh run and for a cached stage alike."""
    config: WordStatsConfig = ctx.config
    words = int(ctx.info["metrics"]["words"])
    if config.max_words is None:
        return Review()
    details = {"words": words, "max_words": config.max_words}
    if words > config.max_words:
        reason = f"stage '{config.name}': {config.data} has {words} words, more than max_words {config.max_words}"
        return Review(halt=reason, details=details)
    return Review(report=f"  {words} words, within max_words {config.max_words}", details=details)


KIND = StageKind(
    name="word_stats",
    config=WordStatsConfig,
    run=run,
    review=review,
    makes_model=False,  # its folder holds stats.json, no model: `from: stats` in a later stage is a validate error
    summary="count the lines, words and tokens of a data file; optionally score it with a model",
)
