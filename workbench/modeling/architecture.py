"""Architecture files (`pretrain/*.yaml`, `Lfm2Config` keyword arguments) and randomly initialised LFM2 models."""

from pathlib import Path

import torch
import yaml
from huggingface_hub.errors import StrictDataclassError
from transformers import Lfm2Config, Lfm2ForCausalLM, PreTrainedTokenizerBase

from workbench.errors import did_you_mean

# The LFM2-specific `Lfm2Config` fields, minus the token ids: those always come from the tokenizer.
TOKEN_ID_KEYS = frozenset({"pad_token_id", "bos_token_id", "eos_token_id"})
ARCHITECTURE_KEYS = frozenset(Lfm2Config.__annotations__) - TOKEN_ID_KEYS
LAYER_TYPES = ("conv", "full_attention")


def load_architecture(path: Path) -> dict:
    """Read an architecture file; unknown keys, an inconsistent layer layout and bad values are reported at once."""
    architecture = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(architecture, dict):
        raise ValueError(f"{path}: expected a mapping of Lfm2Config keyword arguments")
    errors = [_unknown_key_error(key) for key in architecture if key not in ARCHITECTURE_KEYS]
    errors += _layout_errors(architecture) + _value_errors(architecture)
    if errors:
        raise ValueError(f"{path}: " + "; ".join(errors))
    return architecture


def _unknown_key_error(key: str) -> str:
    if key in TOKEN_ID_KEYS:
        return f"{key!r} is not allowed: token ids come from the tokenizer"
    return f"unknown key {key!r}{did_you_mean(key, sorted(ARCHITECTURE_KEYS))}"


def _layout_errors(architecture: dict) -> list[str]:
    layers = architecture.get("num_hidden_layers", Lfm2Config.num_hidden_layers)
    layer_types, attention = architecture.get("layer_types"), architecture.get("full_attn_idxs")
    if layer_types is not None and attention is not None:
        return ["give either layer_types or full_attn_idxs, not both"]
    if layer_types is not None:
        errors = [f"layer type {kind!r} is not one of {LAYER_TYPES}" for kind in layer_types if kind not in LAYER_TYPES]
        if len(layer_types) != layers:
            errors.append(f"layer_types has {len(layer_types)} entries for {layers} layers")
        return errors
    if attention is not None and not all(0 <= index < layers for index in attention):
        return [f"full_attn_idxs {attention} must lie in 0..{layers - 1}"]
    return []


def _value_errors(architecture: dict) -> list[str]:
    try:
        config = Lfm2Config(**architecture)
    except StrictDataclassError as error:
        return [" ".join(str(error).split())]
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    if config.hidden_size % heads or heads % kv_heads:
        return [
            f"num_attention_heads {heads} must divide hidden_size {config.hidden_size} and be a multiple of "
            f"num_key_value_heads {kv_heads}"
        ]
    return []


def lfm2_config(architecture: dict, tokenizer: PreTrainedTokenizerBase) -> Lfm2Config:
    """The model config: vocabulary size (unless the file sets a larger one) and pad/bos/eos ids from the tokenizer."""
    vocab_size = architecture.get("vocab_size", len(tokenizer))
    if vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size {vocab_size} is smaller than the tokenizer's {len(tokenizer)} tokens")
    return Lfm2Config(
        **{**architecture, "vocab_size": vocab_size},
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def build_model(architecture: dict, tokenizer: PreTrainedTokenizerBase, seed: int) -> Lfm2ForCausalLM:
    """A randomly initialised float32 model; the same seed gives the same weights, the global RNG is left alone."""
    config = lfm2_config(architecture, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Lfm2ForCausalLM(config).to(torch.float32)
