"""GGUF export end to end: llama.cpp's converter and quantizer on a trained tiny model, the file read back by
llama.cpp, scored on our suites through llama.cpp against the Hugging Face model, and deploy gates that stop a
recipe when they fail."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from workbench.errors import RecipeError, StageError, StageHalted

SUITES = ["json_schema", "tool_use"]


def _latest(root: Path, stage: str) -> dict:
    done = [p for p in (root / "runs" / "tiny" / stage).iterdir() if (p / "stage.json").is_file()]
    folder = max(done, key=lambda p: p.stat().st_mtime)
    return json.loads((folder / "stage.json").read_text()) | {"dir": str(folder)}


def _run(path: Path):
    from workbench.runner import load_recipe
    from workbench.runner.executor import run_recipe

    return run_recipe(load_recipe(path))


def _convert(model: Path, out: Path, quantization: str, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "workbench.export.convert", str(model), str(out), "--quantization", quantization]
    return subprocess.run([*command, *extra], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def sft_model(sft_project) -> Path:
    """The trained tiny model of the shared SFT project."""
    sft = [p for p in (sft_project.root / "runs" / "tiny" / "sft").iterdir() if (p / "stage.json").is_file()]
    return sft[0] / "model"


@pytest.mark.slow
def test_gguf_scores_like_the_model_and_a_failed_deploy_gate_stops_the_recipe(sft_project, monkeypatch):
    monkeypatch.chdir(sft_project.root)
    deploy = {"threads": 1, "prompt_tokens": 32, "decode_tokens": 16, "repeats": 1}
    stages = [
        {"name": "device", "kind": "export", "from": "sft", "quantization": "f32"},
        {"name": "eval_hf", "kind": "evaluate", "from": "sft", "suites": SUITES, "limit": 4},
        {"name": "eval_device", "kind": "evaluate", "from": "device", "suites": SUITES, "limit": 4,
         "deploy": deploy, "compare": ["eval_hf"],
         "gates": ["tool_use/call_rate >= eval_hf - 0.25", "deploy/decode_tokens_per_s >= 1000000000"]},
    ]  # fmt: skip
    with pytest.raises(StageHalted, match=r"deploy/decode_tokens_per_s >= 1000000000 .*FAIL"):
        _run(sft_project(stages))

    exported, hf, device = (_latest(sft_project.root, s) for s in ("device", "eval_hf", "eval_device"))
    assert Path(exported["dir"], exported["details"]["gguf"]).is_file()
    assert exported["details"]["parity_probes"] >= 9
    # f32 through llama.cpp: the same prompts, tokens and greedy decoding give (nearly) the same answers.
    rows = {}
    for name, info in (("hf", hf), ("device", device)):
        lines = Path(info["dir"], "eval", "samples_tool_use.jsonl").read_text().splitlines()
        rows[name] = [json.loads(line) for line in lines]
    assert [r["prompt"] for r in rows["hf"]] == [r["prompt"] for r in rows["device"]]
    same = sum(a["output"] == b["output"] for a, b in zip(rows["hf"], rows["device"], strict=True))
    assert same >= 0.75 * len(rows["hf"]), [
        (a["output"], b["output"]) for a, b in zip(rows["hf"], rows["device"], strict=True)
    ]
    for metric in ("tool_use/call_rate", "json_schema/parse_rate"):
        assert abs(hf["metrics"][metric] - device["metrics"][metric]) <= 0.25
    for metric in ("deploy/decode_tokens_per_s", "deploy/prompt_tokens_per_s", "deploy/peak_rss_mb"):
        assert device["metrics"][metric] > 0
    assert device["metrics"]["deploy/peak_rss_mb"] < 400  # the measuring process, not the workbench's
    assert abs(device["metrics"]["deploy/file_size_mb"] - exported["metrics"]["export/file_size_mb"]) < 1e-6

    # A reachable threshold passes on the cached stages: gates are re-checked, nothing is re-measured.
    stages[2]["gates"] = ["tool_use/call_rate >= eval_hf - 0.25", "deploy/decode_tokens_per_s >= 1"]
    outcomes = _run(sft_project(stages))
    assert {o.name: o.status for o in outcomes}["eval_device"] == "cached"


@pytest.mark.slow
def test_quantized_files_carry_tokenizer_and_template_and_shrink(sft_model, tmp_path):
    import gguf

    sizes = {}
    for quantization in ("f16", "q8_0", "q4_K_M"):
        out = tmp_path / f"m-{quantization}.gguf"
        done = _convert(sft_model, out, quantization)
        assert done.returncode == 0, done.stderr[-2000:]
        sizes[quantization] = out.stat().st_size
        fields = gguf.GGUFReader(out).fields
        template = bytes(fields["tokenizer.chat_template"].parts[-1]).decode()
        assert "<|im_start|>" in template and not re.search(r"\{%-?\s*(end)?generation", template)
        assert bytes(fields["tokenizer.ggml.pre"].parts[-1]).decode() == "gpt-2"
        assert (
            len(fields["tokenizer.ggml.tokens"].data)
            == json.loads((sft_model / "config.json").read_text())["vocab_size"]
        )
    assert sizes["q4_K_M"] < sizes["q8_0"] < sizes["f16"]

    from workbench.export.parity import check_parity

    assert check_parity(sft_model, tmp_path / "m-q4_K_M.gguf") >= 9


@pytest.mark.slow
def test_parity_check_catches_a_file_that_tokenizes_differently(sft_model, tmp_path):
    from workbench.export.parity import check_parity

    out = tmp_path / "wrong.gguf"
    # falcon's pre-tokenizer groups punctuation runs differently from the byte-level BPE's own splitting, which
    # every tokenizer trained on chat data with tool lists has merges for (`{"`, `":`); qwen2's differs only on
    # digits, and a 400-token tokenizer may have learned no digit merges at all
    done = _convert(sft_model, out, "f16", "--pre-tokenizer", "falcon")
    assert done.returncode == 0, done.stderr[-2000:]
    with pytest.raises(StageError, match="llama.cpp tokenizes .* differently from the model's tokenizer"):
        check_parity(sft_model, out)


@pytest.mark.slow
def test_a_model_that_learned_nothing_fails_the_quality_gate_through_llama_cpp(sft_project, monkeypatch):
    monkeypatch.chdir(sft_project.root)
    stages = [
        {"name": "raw", "kind": "export", "from": "base", "quantization": "q8_0"},
        {"name": "eval_raw", "kind": "evaluate", "from": "raw", "suites": ["tool_use"], "limit": 4,
         "gates": ["tool_use/call_rate >= 0.5"]},
    ]  # fmt: skip
    with pytest.raises(StageHalted, match=r"tool_use/call_rate >= 0.5 .*FAIL"):
        _run(sft_project(stages))


def test_recipe_errors_for_export_and_deploy(tiny_project):
    recipe = tiny_project()
    data = yaml.safe_load(recipe.read_text())
    data["stages"] += [
        {"name": "device", "kind": "export", "from": "sft", "quantization": "q3_K_XL"},
        {"name": "e1", "kind": "evaluate", "from": "sft", "suites": ["tool_use"], "deploy": {"threads": 2}},
        {"name": "e2", "kind": "evaluate", "from": "device", "deploy": {}, "gates": ["deploy/decode_tps >= 5"]},
        {"name": "e3", "kind": "evaluate", "from": "device", "suites": ["tool_use"],
         "gates": ["deploy/peak_rss_mb <= 600"]},
        {"name": "after", "kind": "sft", "from": "device", "data": "data/train.jsonl"},
        {"name": "e4", "kind": "evaluate", "from": "device"},
    ]  # fmt: skip
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    from workbench.runner import load_recipe

    with pytest.raises(RecipeError) as raised:
        load_recipe(recipe)
    text = str(raised.value)
    assert "quantization" in text and "q4_K_M" in text  # the allowed types are listed
    assert (
        "deploy metrics measure a GGUF file through llama.cpp, and 'sft' is a sft stage: evaluate an export stage"
        in text
    )
    assert "'deploy' reports no metric 'deploy/decode_tps' (did you mean 'deploy/decode_tokens_per_s'?)" in text
    assert "uses suite 'deploy', which this stage does not measure" in text
    assert "'device' is an export stage, which makes no model" in text
    assert "give `suites` to score, `deploy` to measure an exported file, or both" in text
    assert all(line.startswith(f"{recipe}:") for line in text.splitlines()), text


@pytest.mark.slow
def test_lfm2_moe_exports_and_llama_cpp_computes_the_same_logits(tmp_path):
    """An LFM2-MoE (LFM2-8B-A1B's shape, tiny) converts, loads in llama.cpp and computes the Hugging Face model's
    logits; weights large enough that a file without its experts' weights would be far off."""
    import numpy as np
    import torch
    from llama_cpp import Llama

    from tests.conftest import REPO
    from workbench.modeling.architecture import build_model
    from workbench.modeling.chat_template import LFM2_CHAT_TEMPLATE
    from workbench.modeling.tokenizer import train_bpe_tokenizer

    lines = (REPO / "datasets/quickstart/sft.jsonl").read_text().splitlines()[:60]
    tokenizer = train_bpe_tokenizer([m["content"] for line in lines for m in json.loads(line)["messages"]], 400,
                                    LFM2_CHAT_TEMPLATE)  # fmt: skip
    arch = {
        "model_type": "lfm2_moe", "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32,
        "num_hidden_layers": 3, "layer_types": ["conv", "full_attention", "conv"], "num_attention_heads": 2,
        "num_key_value_heads": 1, "num_dense_layers": 1, "num_experts": 4, "num_experts_per_tok": 2,
        "max_position_embeddings": 512, "initializer_range": 0.3,
    }  # fmt: skip
    model = build_model(arch, tokenizer, 0).eval()
    model.save_pretrained(tmp_path / "moe")
    tokenizer.save_pretrained(tmp_path / "moe")
    done = _convert(tmp_path / "moe", tmp_path / "moe.gguf", "f32")
    assert done.returncode == 0, done.stderr[-2000:]
    ids = tokenizer("The brave owl watches the lake at night.")["input_ids"]
    llm = Llama(str(tmp_path / "moe.gguf"), logits_all=True, n_ctx=128, verbose=False)
    try:
        llm.eval(ids)
        theirs = np.array(llm.scores[: len(ids)])
    finally:
        llm.close()
    with torch.no_grad():
        ours = model(torch.tensor([ids])).logits[0].numpy()
        for name, parameter in model.named_parameters():
            if "experts" in name:
                parameter.zero_()
        without_experts = model(torch.tensor([ids])).logits[0].numpy()
    assert ours.std() > 1.0
    assert np.abs(ours - theirs).max() < 0.01
    assert np.abs(without_experts - theirs).max() > 1.0
