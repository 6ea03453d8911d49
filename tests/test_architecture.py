"""Architecture files and seeded random-init LFM2 models."""

from pathlib import Path

import pytest
import torch
from transformers import Lfm2ForCausalLM

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
    ],
)
def test_layout_and_value_errors(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_architecture(write(tmp_path, text))


@pytest.mark.parametrize("name", ["tiny-lfm2", "lfm2-350m", "lfm2-700m", "lfm2-1.2b"])
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
