"""Train a small byte-level BPE tokenizer offline, with LFM2's special tokens, and fingerprint a saved one."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

if TYPE_CHECKING:
    from workbench.api.context import StageContext

# The id of each token is its index. pad/bos/eos land on 0/1/2, the `Lfm2Config` defaults. As in the LFM2 chat
# models, the end of a turn (`<|im_end|>`) is the eos token, so generation stops after one reply.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|pad|>",
    "<|startoftext|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|im_start|>",
    "<|tool_list_start|>",
    "<|tool_list_end|>",
    "<|tool_call_start|>",
    "<|tool_call_end|>",
    "<|tool_response_start|>",
    "<|tool_response_end|>",
)
PAD_TOKEN, BOS_TOKEN, EOS_TOKEN = SPECIAL_TOKENS[:3]

# Tool markers are never split either, but they are not "special": `decode(..., skip_special_tokens=True)` keeps
# them, so a tool-call scorer can still find `<|tool_call_start|>[...]<|tool_call_end|>` in a decoded reply.
_KEPT_ON_DECODE = tuple(token for token in SPECIAL_TOKENS if token.startswith("<|tool_"))

TOKENIZER_FILES = ("chat_template.jinja", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json")

_LOAD_CONTEXT_KEYS = frozenset({"is_local", "local_files_only", "name_or_path", "_commit_hash"})

_SPECIAL_TOKENS_RE = re.compile("|".join(map(re.escape, SPECIAL_TOKENS)))


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int, chat_template: str, model_max_length: int = 2048
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts`; the same texts in the same order give byte-identical files.

    Special tokens in the texts are cut out before training, so no merges are spent on their pieces. Plain-text
    encoding prepends bos (as LFM2 does); chat rendering gets it from the template instead.
    """
    if vocab_size <= 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size {vocab_size} leaves no room for merges beyond the 256 bytes and special tokens")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_without_special_tokens(texts), trainer=trainer)
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in _KEPT_ON_DECODE])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        add_bos_token=True,
        add_eos_token=False,
        chat_template=chat_template,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )


def _without_special_tokens(texts: Iterable[str]) -> Iterator[str]:
    for text in texts:
        yield from filter(None, _SPECIAL_TOKENS_RE.split(text))


def tokenizer_fingerprint(tokenizer_dir: Path) -> str:
    """sha256 over the tokenizer files in `tokenizer_dir`, in name order.

    `from_pretrained` records where it loaded from (`is_local`, `local_files_only`) in the config it saves again,
    so `tokenizer_config.json` is hashed without those keys: a stage that re-saves the tokenizer it was given keeps
    the fingerprint.
    """
    if not (tokenizer_dir / "tokenizer.json").is_file():
        raise FileNotFoundError(f"no tokenizer.json in {tokenizer_dir}")
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        path = tokenizer_dir / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + _canonical_bytes(path) + b"\0")
    return digest.hexdigest()


def pinned_fingerprint(ctx: StageContext) -> str:
    """`tokenizer_fingerprint` of the stage's pinned tokenizer: the one the executor hashed once per run and handed
    over as `ctx.tokenizer_fingerprint`; a context built without it is hashed now and keeps the result."""
    if ctx.tokenizer_fingerprint is None:
        ctx.tokenizer_fingerprint = tokenizer_fingerprint(ctx.tokenizer_dir)
    return ctx.tokenizer_fingerprint


def _canonical_bytes(path: Path) -> bytes:
    if path.name != "tokenizer_config.json":
        return path.read_bytes()
    config = json.loads(path.read_text(encoding="utf-8"))
    kept = {key: value for key, value in config.items() if key not in _LOAD_CONTEXT_KEYS}
    return json.dumps(kept, sort_keys=True, ensure_ascii=False).encode()
