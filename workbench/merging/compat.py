"""Check that models can be merged before any tensor is read: architecture, vocabulary, parameter names and
shapes (from the safetensors headers), tokenizer files and chat template.

These are the failures mergekit users hit late or not at all (mergekit issues 47, 139, 425, 469): a merge
across different tokenizers runs and writes a model whose embeddings mean nothing. Each mismatch is one
line naming both models and what differs.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import StageError

# Keys `from_pretrained` adds to tokenizer_config.json when it re-saves a tokenizer: not part of its content.
_LOAD_CONTEXT_KEYS = frozenset({"is_local", "local_files_only", "name_or_path", "_commit_hash", "chat_template"})
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "special_tokens_map.json")


class CompatibilityError(StageError):
    """Two merge inputs differ in something a merge cannot reconcile."""


@dataclass(frozen=True)
class ModelFacts:
    """What the compatibility check compares, read from a model folder without loading its weights."""

    label: str
    path: Path
    architecture: str
    vocab_size: int | None
    shapes: dict[str, tuple[int, ...]]
    tokenizer_hash: str | None
    chat_template_hash: str | None


def read_facts(label: str, path: Path) -> ModelFacts:
    """Facts of the model folder at `path`; a missing config or weights is a one-line error."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CompatibilityError(f"merge input '{label}': no config.json in {path}")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    architectures = config.get("architectures") or [config.get("model_type", "unknown")]
    vocab_size = config.get("vocab_size", (config.get("text_config") or {}).get("vocab_size"))
    return ModelFacts(
        label=label,
        path=path,
        architecture="/".join(architectures),
        vocab_size=vocab_size,
        shapes=parameter_shapes(label, path),
        tokenizer_hash=tokenizer_hash(path),
        chat_template_hash=_digest(chat_template_of(path)),
    )


def check_compatible(
    facts: list[ModelFacts], allow_tokenizer_mismatch: bool = False, allow_chat_template_mismatch: bool = False
) -> None:
    """Raise CompatibilityError for the first input that differs from the first one."""
    first = facts[0]
    for other in facts[1:]:
        problem = _difference(first, other, allow_tokenizer_mismatch, allow_chat_template_mismatch)
        if problem:
            raise CompatibilityError(f"merge inputs '{first.label}' and '{other.label}' differ in {problem}")


def _difference(a: ModelFacts, b: ModelFacts, allow_tokenizer: bool, allow_template: bool) -> str | None:
    if a.architecture != b.architecture:
        return f"architecture: {a.architecture} vs {b.architecture}"
    vocab_differs = a.vocab_size != b.vocab_size
    if vocab_differs and not allow_tokenizer:
        return f"vocabulary size: {a.vocab_size} vs {b.vocab_size}; set tokenizer_source to merge them anyway"
    shape_problem = _shape_difference(a, b, skip_vocabulary=vocab_differs)
    if shape_problem:
        return shape_problem
    if a.tokenizer_hash != b.tokenizer_hash and not allow_tokenizer:
        return (
            f"tokenizer files: sha256 {_short(a.tokenizer_hash)} vs {_short(b.tokenizer_hash)}; "
            "set tokenizer_source (union, base or a model) to merge them anyway"
        )
    if a.chat_template_hash != b.chat_template_hash and not allow_template:
        return (
            f"chat template: sha256 {_short(a.chat_template_hash)} vs {_short(b.chat_template_hash)}; "
            "set chat_template to choose the output's"
        )
    return None


def _shape_difference(a: ModelFacts, b: ModelFacts, skip_vocabulary: bool) -> str | None:
    only_a = sorted(set(a.shapes) - set(b.shapes))
    only_b = sorted(set(b.shapes) - set(a.shapes))
    if only_a or only_b:
        name, owner = (only_a[0], a.label) if only_a else (only_b[0], b.label)
        count = len(only_a) + len(only_b)
        return f"parameter names: {name} is only in '{owner}' ({count} names differ)"
    for name in sorted(a.shapes):
        shape_a, shape_b = a.shapes[name], b.shapes[name]
        if shape_a == shape_b:
            continue
        # With a tokenizer merge allowed, embedding rows follow each model's own vocabulary.
        if skip_vocabulary and shape_a[:1] == (a.vocab_size,) and shape_b[:1] == (b.vocab_size,):
            continue
        return f"parameter shapes: {name} is {list(shape_a)} vs {list(shape_b)}"
    return None


def parameter_shapes(label: str, path: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every weight, from safetensors headers (no tensor data is read)."""
    files = sorted(path.glob("*.safetensors"))
    if files:
        shapes: dict[str, tuple[int, ...]] = {}
        for file in files:
            shapes.update(_safetensors_shapes(file))
        return shapes
    pickled = sorted(path.glob("pytorch_model*.bin"))
    if not pickled:
        raise CompatibilityError(f"merge input '{label}': no .safetensors or pytorch_model*.bin weights in {path}")
    import torch

    shapes = {}
    for file in pickled:  # memory-mapped: shapes without reading the data
        state = torch.load(file, map_location="meta", weights_only=True, mmap=True)
        shapes.update({name: tuple(tensor.shape) for name, tensor in state.items()})
    return shapes


def _safetensors_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    with file.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return {name: tuple(entry["shape"]) for name, entry in header.items() if name != "__metadata__"}


def tokenizer_hash(path: Path) -> str | None:
    """sha256 over the tokenizer's files (tokenizer_config.json without load-time keys and chat template)."""
    digest = hashlib.sha256()
    found = False
    for name in _TOKENIZER_FILES:
        file = path / name
        if file.is_file():
            found = True
            digest.update(name.encode() + b"\0" + file.read_bytes() + b"\0")
    config_file = path / "tokenizer_config.json"
    if config_file.is_file():
        found = True
        config = json.loads(config_file.read_text(encoding="utf-8"))
        kept = {key: value for key, value in config.items() if key not in _LOAD_CONTEXT_KEYS}
        digest.update(b"tokenizer_config.json\0" + json.dumps(kept, sort_keys=True).encode() + b"\0")
    return digest.hexdigest() if found else None


def chat_template_of(path: Path) -> str | None:
    """The chat template a model folder carries: chat_template.jinja, else the tokenizer config's entry."""
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config_file = path / "tokenizer_config.json"
    if config_file.is_file():
        template = json.loads(config_file.read_text(encoding="utf-8")).get("chat_template")
        return json.dumps(template, sort_keys=True) if isinstance(template, (list, dict)) else template
    return None


def _digest(text: str | None) -> str | None:
    return hashlib.sha256(text.encode()).hexdigest() if text is not None else None


def _short(digest: str | None) -> str:
    return digest[:12] if digest else "none"
