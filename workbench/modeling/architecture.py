"""Architecture files (`pretrain/*.yaml`, LFM2 config keyword arguments) and randomly initialised LFM2 models."""

from pathlib import Path

import torch
import yaml
from huggingface_hub.errors import StrictDataclassError
from transformers import Lfm2Config, Lfm2ForCausalLM, Lfm2MoeConfig, Lfm2MoeForCausalLM, PreTrainedTokenizerBase

from workbench.errors import did_you_mean

LfmConfig = Lfm2Config | Lfm2MoeConfig
LfmModel = Lfm2ForCausalLM | Lfm2MoeForCausalLM
# A file names its family with `model_type` (as config.json does); dense LFM2 is the default, so files without the
# key keep meaning what they always meant.
MODEL_CLASSES: dict[str, tuple[type[LfmConfig], type[LfmModel]]] = {
    "lfm2": (Lfm2Config, Lfm2ForCausalLM),
    "lfm2_moe": (Lfm2MoeConfig, Lfm2MoeForCausalLM),
}
DEFAULT_MODEL_TYPE = "lfm2"
# Each family's own config fields, minus the token ids: those always come from the tokenizer.
TOKEN_ID_KEYS = frozenset({"pad_token_id", "bos_token_id", "eos_token_id"})
ARCHITECTURE_KEYS = {
    model_type: frozenset(config_class.__annotations__) - TOKEN_ID_KEYS | {"model_type"}
    for model_type, (config_class, _) in MODEL_CLASSES.items()
}
LAYER_TYPES = ("conv", "full_attention")


def load_architecture(path: Path) -> dict:
    """Read an architecture file; unknown keys, an inconsistent layer layout and bad values are reported at once."""
    architecture = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(architecture, dict):
        raise ValueError(f"{path}: expected a mapping of LFM2 config keyword arguments")
    model_type = architecture.get("model_type", DEFAULT_MODEL_TYPE)
    if not isinstance(model_type, str) or model_type not in MODEL_CLASSES:
        suggestion = did_you_mean(model_type, MODEL_CLASSES)
        raise ValueError(f"{path}: model_type {model_type!r} is not one of {tuple(MODEL_CLASSES)}{suggestion}")
    keys = ARCHITECTURE_KEYS[model_type]
    errors = [_unknown_key_error(key, keys) for key in architecture if key not in keys]
    errors += _layout_errors(architecture) + _value_errors(architecture)
    if errors:
        raise ValueError(f"{path}: " + "; ".join(errors))
    return architecture


def _unknown_key_error(key: str, keys: frozenset[str]) -> str:
    if key in TOKEN_ID_KEYS:
        return f"{key!r} is not allowed: token ids come from the tokenizer"
    return f"unknown key {key!r}{did_you_mean(key, sorted(keys))}"


def _classes(architecture: dict) -> tuple[type[LfmConfig], type[LfmModel]]:
    return MODEL_CLASSES[architecture.get("model_type", DEFAULT_MODEL_TYPE)]


def _config_arguments(architecture: dict) -> dict:
    """The file minus `model_type`, which picks the config class rather than being one of its arguments."""
    return {key: value for key, value in architecture.items() if key != "model_type"}


def _layout_errors(architecture: dict) -> list[str]:
    config_class, _ = _classes(architecture)
    layers = architecture.get("num_hidden_layers", config_class.num_hidden_layers)
    layer_types, attention = architecture.get("layer_types"), architecture.get("full_attn_idxs")
    if layer_types is not None and attention is not None:
        return ["give either layer_types or full_attn_idxs, not both"]
    if layer_types is None and config_class is Lfm2MoeConfig:
        # Lfm2MoeConfig has no full_attn_idxs and no default layout: without layer_types the model cannot be built.
        return ["model_type 'lfm2_moe' needs layer_types"]
    if layer_types is not None:
        errors = [f"layer type {kind!r} is not one of {LAYER_TYPES}" for kind in layer_types if kind not in LAYER_TYPES]
        if len(layer_types) != layers:
            errors.append(f"layer_types has {len(layer_types)} entries for {layers} layers")
        return errors
    if attention is not None and not all(0 <= index < layers for index in attention):
        return [f"full_attn_idxs {attention} must lie in 0..{layers - 1}"]
    return []


def _value_errors(architecture: dict) -> list[str]:
    config_class, _ = _classes(architecture)
    try:
        config = config_class(**_config_arguments(architecture))
    except StrictDataclassError as error:
        return [" ".join(str(error).split())]
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    if config.hidden_size % heads or heads % kv_heads:
        return [
            f"num_attention_heads {heads} must divide hidden_size {config.hidden_size} and be a multiple of "
            f"num_key_value_heads {kv_heads}"
        ]
    # The router's top-k fails only at the first forward pass otherwise.
    if isinstance(config, Lfm2MoeConfig) and not 1 <= config.num_experts_per_tok <= config.num_experts:
        return [f"num_experts_per_tok {config.num_experts_per_tok} must lie in 1..num_experts {config.num_experts}"]
    return []


def lfm2_config(architecture: dict, tokenizer: PreTrainedTokenizerBase) -> LfmConfig:
    """The model config: vocabulary size (unless the file sets a larger one) and pad/bos/eos ids from the tokenizer."""
    vocab_size = architecture.get("vocab_size", len(tokenizer))
    if vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size {vocab_size} is smaller than the tokenizer's {len(tokenizer)} tokens")
    config_class, _ = _classes(architecture)
    return config_class(
        **{**_config_arguments(architecture), "vocab_size": vocab_size},
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def build_model(architecture: dict, tokenizer: PreTrainedTokenizerBase, seed: int) -> LfmModel:
    """A randomly initialised float32 model; the same seed gives the same weights, the global RNG is left alone."""
    config = lfm2_config(architecture, tokenizer)
    _, model_class = _classes(architecture)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_class(config).to(torch.float32)
