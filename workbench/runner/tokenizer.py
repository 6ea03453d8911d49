"""Materialise the recipe's one pinned tokenizer (trained locally or loaded) into the work folder."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from itertools import chain
from pathlib import Path

from workbench.errors import StageError, first_line
from workbench.fsio import build_folder
from workbench.recipe.loaded import LoadedRecipe
from workbench.runner.store import SHORT_HASH


def ensure_tokenizer(
    loaded: LoadedRecipe,
    store_root: Path,
    spec_hash: str,
    chat_template: str,
    warn: Callable[[str], None] = lambda line: None,
) -> Path:
    """The folder of the pinned tokenizer; built once per spec hash, written atomically. `warn` hears of training
    files' unreadable lines, which are left out of the training text."""
    final = store_root / "_tokenizer" / spec_hash[:SHORT_HASH]
    if (final / "tokenizer_config.json").is_file():
        return final
    tokenizer = _build(loaded, chat_template, warn)
    return build_folder(final, lambda tmp: tokenizer.save_pretrained(tmp))


def _build(loaded: LoadedRecipe, chat_template: str, warn: Callable[[str], None]):
    from workbench.data.records import iter_texts
    from workbench.modeling.tokenizer import train_bpe_tokenizer

    spec = loaded.recipe.tokenizer
    if spec.train is not None:
        texts = chain.from_iterable(
            iter_texts(loaded.resolve(name), partial(_warn_unreadable, warn, name)) for name in spec.train.files
        )
        return train_bpe_tokenizer(texts, spec.train.vocab_size, chat_template)
    from transformers import AutoTokenizer

    from workbench.api.hub import split_revision

    local = loaded.resolve(spec.path)
    source, revision = (str(local), None) if local.exists() else split_revision(spec.path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, revision=revision, trust_remote_code=loaded.recipe.trust_remote_code
        )
    except (OSError, ValueError) as error:
        raise StageError(f"tokenizer '{spec.path}' could not be loaded: {first_line(error)}") from None
    tokenizer.chat_template = chat_template
    return tokenizer


def _warn_unreadable(warn: Callable[[str], None], name: str, read) -> None:
    """One warning per reason, in the data reports' own words, for the lines tokenizer training leaves out."""
    from workbench.data.chat import unreadable_report

    for line in unreadable_report(read, name).lines():
        warn(f"tokenizer.train: {line}: left out of the tokenizer's training text")
