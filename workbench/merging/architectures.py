"""mergekit architecture definitions for the LFM2 shapes mergekit has none for, and a check that a merge kept every
tensor its inputs share.

mergekit ships a definition for dense LFM2 (`Lfm2ForCausalLM`) but not for LFM2-MoE (`Lfm2MoeForCausalLM`, as in
LFM2-8B-A1B). For an architecture it has no definition for, it infers one from the parameter names transformers
gives the model in memory; transformers 5 holds each layer's experts fused (`experts.gate_up_proj`) while the
checkpoint keeps them one by one (`experts.0.w1.weight`), so the inferred definition names tensors no file has,
and mergekit skips them: the merged model was written without a single expert weight, and no error was raised.
`lfm2_moe_definition` lists the checkpoint's own names (the dense LFM2 layer plus router, expert bias and each
expert's three projections), and `known_architectures` lends it to mergekit for the duration of a merge.
`missing_tensors` is the general guard: whatever the architecture, a tensor every input has must be in the output.

A config with `slices` (a layer stack: passthrough "frankenmerges", depth up-scaling) gets the layer count from
mergekit but not LFM2's per-layer `layer_types`, which transformers then refuses ("num_hidden_layers (3) must be
equal to the number of layer_types (4)"); `sliced_layer_types` writes the kinds of the layers the slices take (and,
for LFM2-MoE, how many dense layers lead).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

LFM2_MOE = "Lfm2MoeForCausalLM"


def lfm2_moe_definition(num_experts: int) -> dict[str, Any]:
    """mergekit's JSON module definition for an LFM2-MoE checkpoint with `num_experts` experts per MoE layer: the
    dense LFM2 definition's weights, the dense layers' feed-forward and the MoE layers' router, expert bias and
    experts, each optional (a layer has either the dense feed-forward or the experts)."""
    dense = json.loads(resources.files("mergekit._data.architectures").joinpath("lfm2.json").read_text())
    layer = "model.layers.${layer_index}.feed_forward"
    weights = [{**weight, "optional": True} for weight in dense["layer_templates"]["weights"]]
    weights += [{"name": f"{layer}.gate.weight", "optional": True}, {"name": f"{layer}.expert_bias", "optional": True}]
    weights += [
        {"name": f"{layer}.experts.{expert}.{projection}.weight", "optional": True}
        for expert in range(num_experts)
        for projection in ("w1", "w2", "w3")
    ]
    return {
        **dense,
        "model_type": "lfm2_moe",
        "architectures": [LFM2_MOE],
        "layer_templates": {"weights": weights},
    }


@contextmanager
def known_architectures(configs: list[dict[str, Any]]) -> Iterator[None]:
    """mergekit knows LFM2-MoE while the block runs, when the inputs are LFM2-MoE and mergekit has no definition
    of its own for it (a later mergekit's is used as it is)."""
    from mergekit.architecture.json_definitions import NAME_TO_ARCH, _load_architecture_json

    moe = [config for config in configs if LFM2_MOE in (config.get("architectures") or [])]
    if not moe or LFM2_MOE in NAME_TO_ARCH:
        yield
        return
    experts = max(int(config.get("num_experts") or 0) for config in moe)
    NAME_TO_ARCH[LFM2_MOE] = [_load_architecture_json(json.dumps(lfm2_moe_definition(experts)))]
    try:
        yield
    finally:
        NAME_TO_ARCH.pop(LFM2_MOE, None)


def missing_tensors(inputs: list[dict[str, tuple[int, ...]]], output: dict[str, tuple[int, ...]]) -> list[str]:
    """Names every input has and the output lacks, in order."""
    shared = set.intersection(*(set(shapes) for shapes in inputs)) if inputs else set()
    return sorted(shared - set(output))


@contextmanager
def sliced_layer_types() -> Iterator[None]:
    """While the block runs, mergekit's output config for a config with `slices` lists, in `layer_types`, the kind
    of each layer the slices take (from each source model's own `layer_types`), for models that have them."""
    import mergekit.merge

    original = mergekit.merge._model_out_config

    def model_out_config(config, arch_info, trust_remote_code: bool = False):
        out = original(config, arch_info, trust_remote_code)
        if config.slices and getattr(out, "layer_types", None) is not None:
            kinds, dense = [], []
            for piece in config.slices:
                source = piece.sources[0]
                start, end = source.layer_range
                source_config = source.model.config(trust_remote_code=False)  # run_mergekit never trusts it
                kinds += list(source_config.layer_types[start:end])
                dense += [index < getattr(source_config, "num_dense_layers", 0) for index in range(start, end)]
            out.layer_types = kinds
            if hasattr(out, "num_dense_layers"):
                # LFM2-MoE: the dense feed-forward layers come first, then the expert layers
                if dense != sorted(dense, reverse=True):
                    raise ValueError(
                        "slices put an LFM2-MoE dense layer after an expert layer; the dense layers (the first "
                        f"num_dense_layers of a source) must come first (taken: {_dense_pattern(dense)})"
                    )
                out.num_dense_layers = sum(dense)
        return out

    mergekit.merge._model_out_config = model_out_config
    try:
        yield
    finally:
        mergekit.merge._model_out_config = original


def _dense_pattern(dense: list[bool]) -> str:
    return " ".join("dense" if is_dense else "experts" for is_dense in dense)
