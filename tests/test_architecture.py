"""Architecture files and seeded random-init LFM2 (dense and mixture-of-experts) models."""

from pathlib import Path

import pytest
import torch
from transformers import Lfm2ForCausalLM, Lfm2MoeForCausalLM

from workbench.modeling.architecture import build_model, lfm2_config, load_architecture
from workbench.modeling.chat_template import LFM2_CHAT_TEMPLATE
from workbench.modeling.tokenizer import train_bpe_tokenizer

PRETRAIN = Path(__file__).resolve().parents[1] / "pretrain"


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(["The red fox visits the river at night."] * 4, 300, LFM2_CHAT_TEMPLATE)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "arch.yaml"
    path.write_text(text)
    return path


def test_unknown_keys_are_all_reported_with_a_suggestion(tmp_path):
    path = write(tmp_path, "hiden_size: 64\nnum_hidden_layers: 2\nconv_l_cache: 3\ncolour: red\n")
    with pytest.raises(ValueError) as error:
        load_architecture(path)
    message = str(error.value)
    assert str(path) in message
    assert "unknown key 'hiden_size' (did you mean 'hidden_size'?)" in message
    assert "unknown key 'conv_l_cache' (did you mean 'conv_L_cache'?)" in message
    assert "unknown key 'colour'" in message


def test_token_ids_come_from_the_tokenizer_not_the_file(tmp_path):
    with pytest.raises(ValueError, match="'eos_token_id' is not allowed: token ids come from the tokenizer"):
        load_architecture(write(tmp_path, "eos_token_id: 7\n"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("num_hidden_layers: 2\nlayer_types: [conv]\n", "layer_types has 1 entries for 2 layers"),
        ("num_hidden_layers: 2\nlayer_types: [conv, attention]\n", "layer type 'attention' is not one of"),
        ("num_hidden_layers: 2\nfull_attn_idxs: [2]\n", r"full_attn_idxs \[2\] must lie in 0..1"),
        ("layer_types: [conv]\nfull_attn_idxs: [0]\n", "either layer_types or full_attn_idxs"),
        ("- hidden_size\n", "expected a mapping"),
        ("hidden_size: big\n", "Field 'hidden_size' expected int, got str"),
        ("hidden_size: 64\nnum_attention_heads: 3\n", "num_attention_heads 3 must divide hidden_size 64"),
        (
            "model_type: lfm2-moe\n",
            r"model_type 'lfm2-moe' is not one of \('lfm2', 'lfm2_moe'\) \(did you mean 'lfm2_moe'",
        ),
        ("model_type: lfm2_moe\nnum_hidden_layers: 2\n", "model_type 'lfm2_moe' needs layer_types"),
        (
            "model_type: lfm2_moe\nnum_hidden_layers: 1\nlayer_types: [conv]\nfull_attn_idxs: [0]\n",
            "unknown key 'full_attn_idxs'",
        ),
        (
            "model_type: lfm2_moe\nnum_hidden_layers: 1\nlayer_types: [conv]\nnum_experts: 4\nnum_experts_per_tok: 5\n",
            r"num_experts_per_tok 5 must lie in 1..num_experts 4",
        ),
        ("num_experts: 4\n", "unknown key 'num_experts'"),
    ],
)
def test_layout_and_value_errors(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_architecture(write(tmp_path, text))


@pytest.mark.parametrize("name", ["tiny-lfm2", "lfm2-350m", "lfm2-700m", "lfm2-1.2b", "lfm2-2.6b", "lfm2-8b-a1b"])
def test_shipped_architectures_load(name):
    assert load_architecture(PRETRAIN / f"{name}.yaml")


def test_seeded_build_is_deterministic_and_leaves_the_global_rng_alone(tokenizer):
    architecture = load_architecture(PRETRAIN / "tiny-lfm2.yaml")
    state = torch.random.get_rng_state()
    first, again = build_model(architecture, tokenizer, seed=3), build_model(architecture, tokenizer, seed=3)
    other = build_model(architecture, tokenizer, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    weights = first.state_dict()
    assert all(torch.equal(weights[name], value) for name, value in again.state_dict().items())
    assert not torch.equal(weights["model.embed_tokens.weight"], other.state_dict()["model.embed_tokens.weight"])


def test_model_takes_vocab_and_ids_from_the_tokenizer_and_runs_forward(tokenizer):
    model = build_model(load_architecture(PRETRAIN / "tiny-lfm2.yaml"), tokenizer, seed=0)
    config = model.config
    assert (config.vocab_size, config.pad_token_id, config.bos_token_id, config.eos_token_id) == (
        len(tokenizer),
        0,
        1,
        2,
    )
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())
    batch = tokenizer(["The red fox.", "The fox visits the river at night."], padding=True, return_tensors="pt")
    out = model(**batch, labels=batch["input_ids"])
    assert out.logits.shape == (2, batch["input_ids"].shape[1], len(tokenizer))
    assert torch.isfinite(out.loss)


def test_vocab_size_smaller_than_the_tokenizer_is_an_error(tokenizer):
    with pytest.raises(ValueError, match="smaller than the tokenizer"):
        lfm2_config({"vocab_size": 100}, tokenizer)


@pytest.mark.parametrize(("name", "size"), [("lfm2-350m", 350e6), ("lfm2-700m", 700e6), ("lfm2-1.2b", 1.2e9)])
def test_lfm2_shapes_have_their_published_size(tokenizer, name, size):
    config = lfm2_config(load_architecture(PRETRAIN / f"{name}.yaml"), tokenizer)
    with torch.device("meta"):
        parameters = sum(parameter.numel() for parameter in Lfm2ForCausalLM(config).parameters())
    assert abs(parameters - size) / size < 0.10


def meta_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def test_lfm2_2_6b_has_exactly_its_published_size(tokenizer):
    # The model card gives the count to the parameter (2,569,272,320), so no tolerance: any shape slip shows.
    config = lfm2_config(load_architecture(PRETRAIN / "lfm2-2.6b.yaml"), tokenizer)
    with torch.device("meta"):
        assert meta_parameters(Lfm2ForCausalLM(config)) == 2_569_272_320


def test_lfm2_8b_a1b_has_its_published_total_and_active_size(tokenizer):
    config = lfm2_config(load_architecture(PRETRAIN / "lfm2-8b-a1b.yaml"), tokenizer)
    with torch.device("meta"):
        model = Lfm2MoeForCausalLM(config)
    total = meta_parameters(model)
    experts = sum(parameter.numel() for name, parameter in model.named_parameters() if ".experts." in name)
    # A token runs everything else (embeddings, conv and attention blocks, the dense layers, the routers) and
    # num_experts_per_tok of each MoE layer's experts.
    active = total - experts + experts * config.num_experts_per_tok // config.num_experts
    # Published as 8.3B total and 1.5B active, two significant figures: 2% covers the rounding of the total (8.34B).
    # The active count (1.56B) is 3.8% over "1.5B", more than rounding to the nearest 0.1B explains, so the published
    # figure is truncated or counts slightly differently; 5% allows that and still catches a wrong expert width or k.
    assert abs(total - 8.3e9) / 8.3e9 < 0.02
    assert abs(active - 1.5e9) / 1.5e9 < 0.05


def test_moe_model_builds_from_its_model_type_and_runs_forward(tokenizer):
    architecture = {
        "model_type": "lfm2_moe",
        "hidden_size": 32,
        "intermediate_size": 64,
        "moe_intermediate_size": 16,
        "num_hidden_layers": 3,
        "layer_types": ["conv", "full_attention", "conv"],
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_dense_layers": 1,
        "num_experts": 4,
        "num_experts_per_tok": 2,
    }
    model = build_model(architecture, tokenizer, seed=0)
    assert isinstance(model, Lfm2MoeForCausalLM)
    assert model.config.vocab_size == len(tokenizer)
    batch = tokenizer(["The red fox.", "The fox visits the river at night."], padding=True, return_tensors="pt")
    assert torch.isfinite(model(**batch, labels=batch["input_ids"]).loss)
