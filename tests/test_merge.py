"""The merge machinery on tiny LFM2 models built from config: every mergekit method, equality with mergekit's
own CLI, merge identities, compatibility errors, sweeps, templates and recipe validation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import REPO, TINY_ARCH
from workbench.errors import RecipeError, StageError, WorkbenchError
from workbench.merging.compat import CompatibilityError, check_compatible, read_facts, tokenizer_hash
from workbench.merging.engine import ResolvedInput, mergekit_config, run_mergekit
from workbench.merging.methods import applicable, merge_methods
from workbench.merging.spec import load_template, resolve_spec
from workbench.merging.standalone import merge_file
from workbench.merging.sweep import expand_grid


def _texts(path: Path, count: int, offset: int = 0) -> list[str]:
    lines = path.read_text().splitlines()[offset : offset + count]
    return [m["content"] for line in lines for m in json.loads(line)["messages"]]


def _save(model, tokenizer, folder: Path) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, Path]:
    """Tiny model folders: three compatible ones and one of each kind of incompatibility."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from workbench.modeling.architecture import build_model
    from workbench.modeling.chat_template import LFM2_CHAT_TEMPLATE
    from workbench.modeling.tokenizer import train_bpe_tokenizer

    root = tmp_path_factory.mktemp("zoo")
    data = REPO / "datasets/quickstart/sft.jsonl"
    tokenizer = train_bpe_tokenizer(_texts(data, 80), 400, LFM2_CHAT_TEMPLATE)
    other_tokenizer = train_bpe_tokenizer(_texts(data, 80, offset=200), 400, LFM2_CHAT_TEMPLATE)
    zoo = {
        f"m{seed}": _save(build_model(TINY_ARCH, tokenizer, seed), tokenizer, root / f"m{seed}") for seed in (1, 2, 3)
    }
    zoo["wide"] = _save(build_model(TINY_ARCH | {"intermediate_size": 96}, tokenizer, 4), tokenizer, root / "wide")
    zoo["bigvocab"] = _save(build_model(TINY_ARCH | {"vocab_size": 512}, tokenizer, 5), tokenizer, root / "bigvocab")
    zoo["othertok"] = _save(build_model(TINY_ARCH, other_tokenizer, 6), other_tokenizer, root / "othertok")
    llama = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, vocab_size=len(tokenizer), tie_word_embeddings=True,
        )
    )  # fmt: skip
    zoo["llama"] = _save(llama, tokenizer, root / "llama")
    zoo["m1copy"] = Path(shutil.copytree(zoo["m1"], root / "m1copy"))
    zoo["othertemplate"] = Path(shutil.copytree(zoo["m1"], root / "othertemplate"))
    (zoo["othertemplate"] / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    return zoo


def weights(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def assert_same_weights(a: Path, b: Path) -> None:
    left, right = weights(a), weights(b)
    assert sorted(left) == sorted(right)
    for name in left:
        assert torch.equal(left[name], right[name]), name


def inp(zoo, name: str) -> ResolvedInput:
    return ResolvedInput(name, zoo[name])


# --- every mergekit method -------------------------------------------------------------------------------


def _method_case(name: str, zoo) -> dict:
    """A valid config for `name`, built from mergekit's own description of the method's inputs and parameters."""
    from mergekit.merge_methods import get

    spec = get(name).spec
    info = merge_methods()[name]
    base = inp(zoo, "m1") if info.base == "required" else None
    if info.max_inputs == 1:
        models = ["m1"]
    elif info.max_inputs == 2 or (spec.contract.max_non_base == 2):
        models = ["m2"] if base else ["m2", "m3"]
    else:
        models = ["m2", "m3"]
    required = {p.name: 0.5 for p in spec.parameters if p.required}
    return mergekit_config(name, required, [(inp(zoo, m), {}) for m in models], base, {"dtype": "float32"})


@pytest.mark.parametrize("method", sorted(merge_methods()))
def test_every_mergekit_method_merges_tiny_lfm2(method, zoo, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / method
    run_mergekit(_method_case(method, zoo), out, seed=0)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", "generation_config.json"):
        assert (out / name).is_file(), name
    merged = weights(out)
    reference = weights(zoo["m1"])
    assert {n: t.shape for n, t in merged.items()} == {n: t.shape for n, t in reference.items()}
    assert all(torch.isfinite(t).all() for t in merged.values())
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model(torch.tensor([[1, 5, 9]])).logits.shape == (1, 3, model.config.vocab_size)


# --- equality with mergekit's own CLI ---------------------------------------------------------------------

CLI_CONFIGS = {
    "ties": {
        "merge_method": "ties",
        "base_model": "m1",
        "models": [{"model": "m2", "parameters": {"weight": 0.7, "density": 0.6}},
                   {"model": "m3", "parameters": {"weight": 0.4, "density": 0.9}}],
        "parameters": {"normalize": True},
        "dtype": "float32",
    },
    "dare_ties": {
        "merge_method": "dare_ties",
        "base_model": "m1",
        "models": [{"model": "m2", "parameters": {"weight": 0.5, "density": 0.5}}, {"model": "m3"}],
        "parameters": {"weight": 0.5, "density": 0.7},
        "dtype": "float32",
    },
    "breadcrumbs_ties": {
        "merge_method": "breadcrumbs_ties",
        "base_model": "m1",
        "models": [{"model": "m2", "parameters": {"weight": 0.6, "density": 0.7, "gamma": 0.05}},
                   {"model": "m3", "parameters": {"weight": 0.4, "density": 0.8}}],
        "dtype": "bfloat16",
    },
    "slerp_gradient": {
        "merge_method": "slerp",
        "base_model": "m1",
        "models": [{"model": "m1"}, {"model": "m2"}],
        "parameters": {"t": [0.0, 0.3, 1.0]},
        "dtype": "bfloat16",
    },
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CLI_CONFIGS))
def test_workbench_merge_equals_mergekit_yaml(name, zoo, tmp_path, monkeypatch):
    """The same YAML through `workbench merge` (Python API) and `mergekit-yaml` (its CLI) gives equal tensors."""
    monkeypatch.chdir(zoo["m1"].parent)
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump(CLI_CONFIGS[name], sort_keys=False))
    ours = merge_file(config, tmp_path / "ours", seed=7)
    mergekit_yaml = Path(sys.executable).with_name("mergekit-yaml")
    subprocess.run(
        [str(mergekit_yaml), str(config), str(tmp_path / "theirs"), "--random-seed", "7", "--quiet", "--no-write-model-card"],
        check=True, capture_output=True,
    )  # fmt: skip
    assert_same_weights(ours, tmp_path / "theirs")
    card = (ours / "README.md").read_text()
    assert f"(`{CLI_CONFIGS[name]['merge_method']}`)" in card
    assert "| m2 | - | " in card, "the card lists each input with its content hash"


def test_workbench_merge_keeps_a_non_empty_output_folder_unless_told_to_overwrite(zoo, tmp_path, monkeypatch):
    monkeypatch.chdir(zoo["m1"].parent)
    config = tmp_path / "soup.yaml"
    config.write_text(yaml.safe_dump({"merge_method": "linear", "models": [{"model": "m1", "parameters": {"weight": 1}},
                                                                          {"model": "m1copy", "parameters": {"weight": 1}}]}))  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("a file of the user's")
    with pytest.raises(WorkbenchError, match=r"out exists and is not empty \(pass --overwrite to replace it\)"):
        merge_file(config, out)
    assert (out / "keep.txt").read_text() == "a file of the user's"
    merge_file(config, out, overwrite=True)
    assert not (out / "keep.txt").exists()
    assert_same_weights(out, zoo["m1"])


@pytest.mark.slow
def test_workbench_merge_command_reports_incompatible_inputs(zoo, tmp_path):
    from tests.conftest import workbench_cli

    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"merge_method": "linear", "models": [{"model": "m1"}, {"model": "wide"}],
                                      "parameters": {"weight": 1.0}}))  # fmt: skip
    done = subprocess.run(
        [*workbench_cli(), "merge", str(config), str(tmp_path / "out")],
        cwd=zoo["m1"].parent, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 1
    assert "merge inputs 'm1' and 'wide' differ in parameter shapes" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


# --- identities -------------------------------------------------------------------------------------------


def test_linear_merge_of_a_model_with_itself_returns_it(zoo, tmp_path):
    models = [(inp(zoo, "m1"), {"weight": 0.5}), (inp(zoo, "m1copy"), {"weight": 0.5})]
    run_mergekit(mergekit_config("linear", {}, models, None, {"dtype": "float32"}), tmp_path / "out")
    assert_same_weights(tmp_path / "out", zoo["m1"])


def test_a_weight_no_model_sets_defaults_to_one_and_a_model_own_weight_wins(zoo, tmp_path):
    # mergekit stops mid-merge on a linear merge with no weights; workbench gives each unset weight 1.0
    shared, per_model, ignored = applicable("linear", {}, ({}, {"weight": 3.0}))
    assert shared == {"weight": 1.0} and per_model == [{}, {"weight": 3.0}] and ignored == []
    models = [(inp(zoo, "m1"), per_model[0]), (inp(zoo, "m2"), per_model[1])]
    run_mergekit(mergekit_config("linear", shared, models, None, {"dtype": "float32"}), tmp_path / "out")
    merged, left, right = weights(tmp_path / "out"), weights(zoo["m1"]), weights(zoo["m2"])
    for name in left:
        torch.testing.assert_close(merged[name], (left[name] + 3 * right[name]) / 4, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("t", "expected"), [(0.0, "m1"), (1.0, "m2")])
def test_slerp_at_the_ends_returns_that_model(t, expected, zoo, tmp_path):
    models = [(inp(zoo, "m1"), {}), (inp(zoo, "m2"), {})]
    config = mergekit_config("slerp", {"t": t}, models, inp(zoo, "m1"), {"dtype": "float32"})
    run_mergekit(config, tmp_path / "out")
    merged, reference = weights(tmp_path / "out"), weights(zoo[expected])
    for name in reference:
        torch.testing.assert_close(merged[name], reference[name], rtol=0, atol=1e-6)


# --- lean magnitude pruning ------------------------------------------------------------------------------


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """Raw bit patterns: tells -0.0 from 0.0, which torch.equal does not."""
    return tensor.contiguous().view({2: torch.int16, 4: torch.int32}[tensor.element_size()])


def _stable_reference(tensor, density, norm, gamma=None):
    """mergekit's magnitude / magnitude_outliers with a stable sort (equal magnitudes in index order)."""
    from mergekit.sparsify import rescaled_masked_tensor

    n, w = tensor.numel(), tensor.abs().reshape(-1).float()
    mask = torch.zeros(n, dtype=tensor.dtype)
    if gamma is None:
        mask[torch.argsort(w, descending=True, stable=True)[: max(1, int(density * n))]] = 1
    else:
        target = int(density * n)
        start = max(0, n - target - int(gamma * n))
        mask[torch.argsort(w, stable=True)[start : start + target]] = 1
    return rescaled_masked_tensor(tensor, mask.reshape_as(tensor), norm)


def _random_tensors():
    """Tensors with distinct magnitudes, few and many duplicates, zeros and signed zeros, in each dtype."""
    generator = torch.Generator().manual_seed(0)
    for trial in range(240):
        shape = [(7,), (33, 17), (1000,), (64, 300)][trial % 4]
        x = torch.randn(shape, generator=generator)
        x = [x, torch.randint(-4, 5, shape, generator=generator).float(), (x * 8).round() / 8, x * 1e-3,
             x.index_fill(-1, torch.arange(0, shape[-1], 3), -0.0)][trial % 5]  # fmt: skip
        dtype = [torch.bfloat16, torch.float16, torch.float32][trial % 3]
        density = float(torch.rand(1, generator=generator)) * 1.1
        gamma = float(torch.rand(1, generator=generator)) * 0.2
        yield x.to(dtype), density, [None, "l1", "l2", "linf"][trial % 4], gamma


def test_lean_pruning_is_bit_identical_to_mergekit():
    """On every tensor the lean functions keep exactly what mergekit's do, except that equal magnitudes
    straddling the cut are kept in index order (a stable sort's order), which mergekit leaves to its unstable
    sort; when no tie straddles the cut, the output equals mergekit's own bit for bit."""
    from mergekit import sparsify

    from workbench.merging.sparsify import LeanStats, lean_magnitude, lean_magnitude_outliers

    identical = straddled = 0
    for x, density, norm, gamma in _random_tensors():
        norm = sparsify.RescaleNorm(norm) if norm else None
        cases = [
            (lean_magnitude, sparsify.magnitude, {}, None),
            (lean_magnitude_outliers, sparsify.magnitude_outliers, {"gamma": gamma}, gamma),
        ]
        for lean, mergekit_own, extra, reference_gamma in cases:
            stats = LeanStats()
            ours = lean(x, density, norm, stats=stats, exact_max=0, **extra)
            assert torch.equal(_bits(ours), _bits(_stable_reference(x, density, norm, reference_gamma)))
            theirs = mergekit_own(x, density, rescale_norm=norm, **extra)
            if stats.index_order_ties:
                straddled += 1
            else:
                assert torch.equal(_bits(ours), _bits(theirs)), (lean.__name__, x.dtype, density)
                identical += 1
    assert identical > 200 and straddled > 100, "both kinds of case were exercised"


def test_lean_pruning_is_installed_only_for_large_tensors_and_only_during_a_merge():
    """Small tensors go to mergekit's own function (exact, ties included); the patch is undone afterwards."""
    import mergekit.sparsify as module

    from workbench.merging.sparsify import EXACT_MAX_ELEMENTS, lean_magnitude_pruning

    original = module.magnitude
    x = torch.randint(-3, 4, (EXACT_MAX_ELEMENTS + 1,), generator=torch.Generator().manual_seed(1)).bfloat16()
    with lean_magnitude_pruning() as stats:
        assert module.magnitude is not original
        small = module.sparsify(x[:1000], 0.5, module.SparsificationMethod.magnitude)
        large = module.sparsify(x, 0.5, module.SparsificationMethod.magnitude)
    assert module.magnitude is original
    assert (stats.exact, stats.lean, stats.index_order_ties) == (1, 1, 1), "7 values: ties straddle the median"
    assert torch.equal(_bits(small), _bits(original(x[:1000], 0.5)))
    kept = large != 0
    assert int(kept.sum()) == len(x) // 2
    assert (x[kept].abs() >= x[~kept].abs().max()).all(), "the largest magnitudes are kept"


def _threshold_draws(probs, *args, **kwargs):
    """A Bernoulli draw without the randomness: keep where the keep probability is at least 0.5. Put in place of
    `torch.bernoulli` for both sides, it leaves every other step of DELLA's pruning to be compared exactly."""
    return (probs >= 0.5).to(probs.dtype)


@pytest.mark.parametrize("rows_per_block", [1, 7, None])
def test_lean_della_equals_mergekit_but_for_the_draws(rows_per_block, monkeypatch):
    """Ranks, keep probabilities, masking and the rescaling over the whole tensor are mergekit's, whatever the
    block of rows: with the draws made deterministic on both sides, the outputs are equal."""
    from mergekit import sparsify

    from workbench.merging.sparsify import LeanStats, lean_della_magprune

    monkeypatch.setattr(torch, "bernoulli", _threshold_draws)
    generator = torch.Generator().manual_seed(3)
    for trial in range(24):
        shape = [(37, 211), (1, 500), (500,), (64, 64)][trial % 4]
        x = torch.randn(shape, generator=generator).to([torch.bfloat16, torch.float32][trial % 2])
        density, epsilon = [(0.5, 0.1), (0.3, 0.2), (0.8, 0.15)][trial % 3]
        norm = [None, sparsify.RescaleNorm.l1, sparsify.RescaleNorm.l2, sparsify.RescaleNorm.linf][trial % 4]
        stats = LeanStats()
        ours = lean_della_magprune(x, density, epsilon, norm, stats=stats, exact_max=0, rows_per_block=rows_per_block)
        theirs = sparsify.della_magprune(x, density, epsilon, rescale_norm=norm)
        assert stats.lean == 1 and ours.dtype == x.dtype and ours.shape == x.shape
        assert torch.equal(ours != 0, theirs != 0), (trial, "the same elements kept")
        # mergekit rounds the rescaling factor to bfloat16 on bfloat16 tensors; the lean path keeps it in float
        torch.testing.assert_close(ours, theirs, rtol=2e-2 if x.dtype == torch.bfloat16 else 1e-5, atol=0)


@pytest.mark.parametrize("method", ["della", "della_linear"])
def test_della_prunes_lfm2_conv_weights_where_mergekit_fails(method, zoo, tmp_path):
    """LFM2's depthwise conv weights are (channels, 1, kernel): mergekit's own DELLA ranks along the size-1
    dimension and fails (0/0 in torch.bernoulli); through workbench they are ranked within each kernel."""
    from mergekit import sparsify

    conv = torch.randn(8, 1, 3)
    with pytest.raises(RuntimeError, match="p_in"):
        sparsify.della_magprune(conv, 0.5, 0.1)
    out = tmp_path / method
    config = mergekit_config(method, {"weight": 1.0, "density": 0.5, "epsilon": 0.1, "lambda": 1.0},
                             [(inp(zoo, "m2"), {}), (inp(zoo, "m3"), {})], inp(zoo, "m1"), {"dtype": "float32"})  # fmt: skip
    stats = run_mergekit(config, out, seed=0)
    assert stats.lean > 0, "the conv weights went through the lean path"
    merged, base = weights(out), weights(zoo["m1"])
    convs = [name for name in merged if name.endswith("conv.conv.weight")]
    assert convs and all(torch.isfinite(t).all() for t in merged.values())
    assert all(not torch.equal(merged[name], base[name]) for name in convs), "the deltas were merged in"


def test_lean_della_keeps_large_magnitudes_more_often_at_the_given_density():
    """With real draws: the kept share is the density, and it rises with the rank of the magnitude as DELLA's
    probabilities say (density - epsilon for the smallest of a row, density + epsilon for the largest)."""
    from workbench.merging.sparsify import lean_della_magprune

    torch.manual_seed(0)
    x = torch.randn(256, 1024)
    kept = lean_della_magprune(x, 0.4, 0.2, exact_max=0, rows_per_block=16) != 0
    assert abs(kept.float().mean().item() - 0.4) < 0.01
    order = x.abs().argsort(dim=1)
    by_rank = kept.gather(1, order).float().mean(dim=0)
    assert abs(by_rank[:100].mean().item() - 0.22) < 0.03 and abs(by_rank[-100:].mean().item() - 0.58) < 0.03


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ties", "breadcrumbs_ties"])
def test_lean_pruning_on_every_tensor_equals_mergekit_yaml(name, zoo, tmp_path, monkeypatch):
    """With the lean path forced on every tensor, a merge still equals `mergekit-yaml`'s (its own sort). float32:
    random float32 deltas have no equal magnitudes at the cut except all-zero ones, where the choice is moot."""
    import workbench.merging.sparsify as lean

    monkeypatch.chdir(zoo["m1"].parent)
    raw = CLI_CONFIGS[name] | {"dtype": "float32"}
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    mergekit_yaml = Path(sys.executable).with_name("mergekit-yaml")
    subprocess.run([str(mergekit_yaml), str(config), str(tmp_path / "theirs"), "--quiet", "--no-write-model-card"],
                   check=True, capture_output=True)  # fmt: skip
    monkeypatch.setattr(lean, "EXACT_MAX_ELEMENTS", 0)
    absolute = raw | {
        "base_model": str(zoo[raw["base_model"]]),
        "models": [entry | {"model": str(zoo[entry["model"]])} for entry in raw["models"]],
    }
    stats = run_mergekit(absolute, tmp_path / "ours")
    assert stats.lean > 0 and stats.exact == 0
    assert_same_weights(tmp_path / "ours", tmp_path / "theirs")


# --- compatibility checks ---------------------------------------------------------------------------------


def _facts(zoo, *names):
    return [read_facts(name, zoo[name]) for name in names]


def test_compatible_inputs_pass(zoo):
    check_compatible(_facts(zoo, "m1", "m2", "m3", "m1copy"))


def test_each_incompatibility_is_one_line_naming_both_models(zoo):
    cases = {
        "llama": "merge inputs 'm1' and 'llama' differ in architecture: Lfm2ForCausalLM vs LlamaForCausalLM",
        "bigvocab": "merge inputs 'm1' and 'bigvocab' differ in vocabulary size: 400 vs 512; "
        "set tokenizer_source to merge them anyway",
        "wide": "merge inputs 'm1' and 'wide' differ in parameter shapes: "
        "model.layers.0.feed_forward.w1.weight is [64, 32] vs [96, 32]",
        "othertok": f"merge inputs 'm1' and 'othertok' differ in tokenizer files: sha256 "
        f"{tokenizer_hash(zoo['m1'])[:12]} vs {tokenizer_hash(zoo['othertok'])[:12]}; "
        "set tokenizer_source (union, base or a model) to merge them anyway",
        "othertemplate": "merge inputs 'm1' and 'othertemplate' differ in chat template: sha256 ",
    }
    for other, message in cases.items():
        with pytest.raises(CompatibilityError) as caught:
            check_compatible(_facts(zoo, "m1", other))
        text = str(caught.value)
        assert "\n" not in text
        assert text.startswith(message) if other == "othertemplate" else text == message, text
    assert str(caught.value).endswith("; set chat_template to choose the output's")


def test_parameter_name_difference_is_reported(zoo, tmp_path):
    from workbench.modeling.architecture import build_model

    deeper = tmp_path / "deeper"
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(zoo["m1"])
    _save(build_model(TINY_ARCH | {"num_hidden_layers": 3}, tokenizer, 1), tokenizer, deeper)
    with pytest.raises(
        CompatibilityError, match=r"differ in parameter names: model\.layers\.2\.\S+ is only in 'deeper'"
    ):
        check_compatible([read_facts("m1", zoo["m1"]), read_facts("deeper", deeper)])


def test_tokenizer_source_allows_a_merge_across_tokenizers(zoo, tmp_path, monkeypatch):
    monkeypatch.chdir(zoo["m1"].parent)
    config = tmp_path / "union.yaml"
    config.write_text(yaml.safe_dump({
        "merge_method": "linear", "models": [{"model": "m1"}, {"model": "othertok"}],
        "parameters": {"weight": 1.0}, "tokenizer_source": "union", "dtype": "float32",
    }))  # fmt: skip
    out = merge_file(config, tmp_path / "out")
    from transformers import AutoTokenizer

    union = AutoTokenizer.from_pretrained(out)
    first, second = (AutoTokenizer.from_pretrained(zoo[n]) for n in ("m1", "othertok"))
    assert set(union.get_vocab()) == set(first.get_vocab()) | set(second.get_vocab())
    assert weights(out)["model.embed_tokens.weight"].shape[0] == len(union.get_vocab())


def test_unknown_parameter_in_a_mergekit_file_is_an_error(zoo, tmp_path, monkeypatch):
    monkeypatch.chdir(zoo["m1"].parent)
    config = tmp_path / "typo.yaml"
    config.write_text(
        yaml.safe_dump({"merge_method": "linear", "models": [{"model": "m1", "parameters": {"wieght": 1}}]})
    )
    with pytest.raises(
        WorkbenchError,
        match=r"linear takes no parameter 'wieght' \(did you mean 'weight'\?\) \(on model 'm1'; it takes: normalize, weight\)",
    ):
        merge_file(config, tmp_path / "out")


def test_a_mergekit_file_without_a_required_parameter_is_one_line_before_merging(zoo, tmp_path, monkeypatch):
    monkeypatch.chdir(zoo["m1"].parent)
    config = tmp_path / "no_t.yaml"
    config.write_text(yaml.safe_dump({"merge_method": "slerp", "base_model": "m1", "models": [{"model": "m1"},
                                                                                            {"model": "m2"}]}))  # fmt: skip
    with pytest.raises(WorkbenchError, match=r"no_t.yaml: slerp needs `t` under `parameters`$"):
        merge_file(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # a mergekit file runs as written: no weight filled in as a merge stage does, one line instead of mergekit's
    config.write_text(yaml.safe_dump({"merge_method": "linear", "models": [{"model": "m1"}, {"model": "m2",
                                      "parameters": {"weight": 0.5}}]}))  # fmt: skip
    with pytest.raises(WorkbenchError, match=r"linear needs `weight` on every input model or under `parameters`; "
                                             r"missing on 'm1'$"):  # fmt: skip
        merge_file(config, tmp_path / "out")


# --- sweeps and templates ----------------------------------------------------------------------------------


def test_grid_expands_methods_shared_and_per_model_sweeps():
    candidates = expand_grid(
        ["ties", "dare_ties"],
        {"density": {"sweep": [0.5, 0.8]}, "normalize": True, "t": [0, 1]},
        [{"weight": {"sweep": [0.3, 0.7]}}, {"weight": 1.0}],
        ["sft", "dpo"],
    )
    assert len(candidates) == 8
    assert candidates[0].choices == {"method": "ties", "parameters.density": 0.5, "sft.weight": 0.3}
    assert candidates[-1].method == "dare_ties"
    assert candidates[-1].parameters == {"density": 0.8, "normalize": True, "t": [0, 1]}, "lists stay gradients"
    assert candidates[-1].model_parameters == ({"weight": 0.7}, {"weight": 1.0})


def test_template_values_are_overridden_by_the_stage():
    template = load_template("ties", REPO)
    spec = resolve_spec(template, None, {"density": 0.7}, {"dtype": "bfloat16", "out_dtype": None})
    assert spec.methods == ["ties"]
    assert spec.parameters == {"weight": 1.0, "density": 0.7, "normalize": True}
    assert spec.settings["dtype"] == "bfloat16"
    with pytest.raises(StageError, match=r"merge template 'nope' not found .*\(templates: .*ties"):
        load_template("nope", REPO)


def test_shipped_templates_are_found_from_any_project_and_a_project_template_comes_first(tmp_path):
    from workbench.runner import load_recipe
    from workbench.runner.plan import make_plan

    (tmp_path / "arch.yaml").write_text(yaml.safe_dump(TINY_ARCH))
    (tmp_path / "d.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    recipe = {"name": "r", "tokenizer": {"train": {"files": ["d.jsonl"]}}, "stages": [
        {"name": "a", "kind": "init", "architecture": "arch.yaml"},
        {"name": "b", "kind": "init", "architecture": "arch.yaml", "seed": 3},
        {"name": "m", "kind": "merge", "template": "ties", "base": "a", "models": ["b"]}]}  # fmt: skip
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    shipped = make_plan(load_recipe(tmp_path / "recipe.yaml", root=tmp_path)).by_name()["m"]  # no merges/ here
    assert load_template("ties", tmp_path) == load_template("ties", REPO)
    (tmp_path / "merges").mkdir()
    (tmp_path / "merges" / "ties.yaml").write_text("merge_method: ties\nparameters: {weight: 0.5, density: 0.3}\n")
    assert load_template("ties", tmp_path)["parameters"] == {"weight": 0.5, "density": 0.3}
    own = make_plan(load_recipe(tmp_path / "recipe.yaml", root=tmp_path)).by_name()["m"]
    # the template's content is part of the stage's hash: the project's own file makes another stage
    assert shipped.hash != own.hash


@pytest.mark.parametrize("template", sorted(p.stem for p in (REPO / "merges").glob("*.yaml")))
def test_shipped_templates_name_real_methods_and_parameters(template):
    from workbench.merging.methods import method_problems

    data = load_template(template, REPO)
    assert method_problems([data["merge_method"]], data.get("parameters", {}), {}) == []


# --- recipe validation -------------------------------------------------------------------------------------


def _recipe_problems(tmp_path, merge: dict) -> str:
    from workbench.runner import load_recipe

    (tmp_path / "arch.yaml").write_text(yaml.safe_dump(TINY_ARCH))
    (tmp_path / "d.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    recipe = {
        "name": "r",
        "tokenizer": {"train": {"files": ["d.jsonl"]}},
        "stages": [
            {"name": "a", "kind": "init", "architecture": "arch.yaml"},
            {"name": "b", "kind": "init", "architecture": "arch.yaml", "seed": 3},
            {"name": "m", "kind": "merge"} | merge,
        ],
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    with pytest.raises(RecipeError) as caught:
        load_recipe(tmp_path / "recipe.yaml", root=tmp_path)
    return str(caught.value)


@pytest.mark.parametrize(
    ("merge", "message"),
    [
        ({"method": "tie", "base": "a", "models": ["b"]}, "unknown merge method 'tie' (did you mean 'ties'?)"),
        ({"method": "linear", "models": ["a", "b"], "parameters": {"wieght": 1}}, "linear takes no parameter 'wieght'"),
        ({"method": "slerp", "models": ["a", "b"], "parameters": {"t": 0.5}}, "slerp needs a `base` model"),
        ({"method": "slerp", "base": "a", "models": ["a", "b"]}, "slerp needs `t` under `parameters`"),
        ({"method": ["linear", "nearswap"], "base": "a", "models": ["a", "b"], "select": {"metric": "eval_loss",
          "data": "d.jsonl"}}, "nearswap needs `t` under `parameters`"),
        ({"method": "linear", "models": ["a", {"from": "b", "parameters": {"weight": {"sweep": [0.2, 0.8]}}}]},
         "this merge sweeps 2 candidates: add `select` to choose among them"),
        ({"method": "linear", "models": ["a", "c"]}, "m.models[1]: unknown stage 'c'"),
        ({"models": ["a", "b"]}, "give `method` (a mergekit merge method) or `template`"),
        ({"method": "linear", "models": ["a"], "select": {"metric": "json_schema/valid_rate"}},
         "metric 'json_schema/valid_rate' needs `suite:`"),
        ({"method": "linear", "models": ["a"], "select": {"metric": "json_schema/valid_rate", "suite": "json_schema",
          "mode": "max", "constraints": ["json_schema/parse_rate >= eval_sft - 0.02"]}},
         "gate 'json_schema/parse_rate >= eval_sft - 0.02' compares with"),
        ({"method": "linear", "models": ["a"], "select": {"metric": "json_schema/valid_rate", "suite": "json_schema",
          "mode": "max", "constraints": ["tool_use/ast_accuracy >= 0.5"]}},
         "gate 'tool_use/ast_accuracy >= 0.5' uses suite 'tool_use', which this stage does not run"),
        ({"method": "linear", "models": ["a"], "select": {"metric": "eval_loss", "data": "d.jsonl", "compare": ["a"]}},
         "metric eval_loss needs `data:` (a held-out chat file), and no `suite`, `constraints` or `compare`"),
    ],
)  # fmt: skip
def test_recipe_errors_name_the_problem(merge, message, tmp_path):
    assert message in _recipe_problems(tmp_path, merge)


def test_merge_stage_depends_on_nested_stage_references(tmp_path):
    from workbench.runner import load_recipe

    (tmp_path / "arch.yaml").write_text(yaml.safe_dump(TINY_ARCH))
    (tmp_path / "d.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    merge = {"name": "m", "kind": "merge", "method": "ties", "base": "a",
             "models": [{"from": "b", "parameters": {"weight": 0.5}}, {"model": "some/hub-model"}]}  # fmt: skip
    recipe = {
        "name": "r",
        "tokenizer": {"train": {"files": ["d.jsonl"]}},
        "stages": [merge, {"name": "a", "kind": "init", "architecture": "arch.yaml"},
                   {"name": "b", "kind": "init", "architecture": "arch.yaml"}],
    }  # fmt: skip
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    loaded = load_recipe(tmp_path / "recipe.yaml", root=tmp_path)
    assert loaded.order == ["a", "b", "m"]
    assert loaded.dependencies("m") == ["a", "b"]


def _compare_recipe(tmp_path, eval_limit: int) -> Path:
    (tmp_path / "arch.yaml").write_text(yaml.safe_dump(TINY_ARCH))
    (tmp_path / "d.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    select = {"metric": "json_schema/valid_rate", "suite": "json_schema", "mode": "max", "compare": ["ev"],
              "constraints": ["json_schema/parse_rate >= ev - 0.1"]}  # fmt: skip
    recipe = {
        "name": "r",
        "tokenizer": {"train": {"files": ["d.jsonl"]}},
        "stages": [
            {"name": "m", "kind": "merge", "method": "linear", "models": ["a", "b"], "select": select},
            {"name": "a", "kind": "init", "architecture": "arch.yaml"},
            {"name": "b", "kind": "init", "architecture": "arch.yaml", "seed": 3},
            {"name": "ev", "kind": "evaluate", "from": "a", "suites": ["json_schema"], "limit": eval_limit},
        ],
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return tmp_path / "recipe.yaml"


def test_a_compared_evaluate_stage_is_an_input_of_the_merge(tmp_path):
    """`select.compare` makes the evaluate stage a dependency: it runs first and its hash is in the merge's key."""
    from workbench.runner import load_recipe
    from workbench.runner.plan import make_plan

    loaded = load_recipe(_compare_recipe(tmp_path, eval_limit=2), root=tmp_path)
    assert loaded.order.index("ev") < loaded.order.index("m")
    assert loaded.dependencies("m") == ["a", "b", "ev"]
    plans = [{p.name: p for p in make_plan(load_recipe(_compare_recipe(tmp_path, n), root=tmp_path)).stages}
             for n in (2, 3)]  # fmt: skip
    assert plans[0]["m"].inputs["ev"] == plans[0]["ev"].hash
    assert plans[0]["ev"].hash != plans[1]["ev"].hash
    assert plans[0]["m"].hash != plans[1]["m"].hash, "a changed compared stage changes the merge's hash"
    assert plans[0]["a"].hash == plans[1]["a"].hash


def test_selection_takes_the_best_candidate_that_passes_the_gates():
    from workbench.merging.select import Scored, gate_violations, pick_best

    gates = ["tool_use/ast_accuracy >= 0.5"]
    scored = [
        Scored(
            i,
            metrics := {"json_schema/valid_rate": score, "tool_use/ast_accuracy": gate},
            gate_violations(gates, metrics),
        )
        for i, (score, gate) in enumerate([(0.6, 0.9), (0.9, 0.2), (0.7, 0.5)])
    ]
    assert scored[1].violations == ["tool_use/ast_accuracy >= 0.5 (got 0.2)"]
    assert pick_best(scored, "json_schema/valid_rate", "max").index == 2, "candidate 1 scores best but fails the gate"
    assert pick_best(scored, "json_schema/valid_rate", "min").index == 0
    failing = [
        Scored(0, scored[0].metrics, gate_violations(["tool_use/ast_accuracy < 0.8", "x/y > 1"], scored[0].metrics))
    ]
    with pytest.raises(StageError) as caught:
        pick_best(failing, "json_schema/valid_rate", "max")
    assert str(caught.value) == (
        "no merge candidate meets the selection constraints "
        "(candidate 0: tool_use/ast_accuracy < 0.8 (got 0.9), x/y > 1 (got not measured))"
    )


def test_top_k_keeps_the_best_eligible_candidates_and_names_each_when_none_is():
    from workbench.merging.select import Scored, ranked

    scores = [0.4, 0.9, 0.7, 0.9]
    scored = [Scored(i, {"m": score}, ["gate broken"] if i == 1 else []) for i, score in enumerate(scores)]
    assert [s.index for s in ranked(scored, "m", "max")[:2]] == [3, 2], "the best one breaks a gate; ties go earlier"
    assert [s.index for s in ranked(scored, "m", "min")[:2]] == [0, 2]
    broken = [Scored(i, {"m": 1.0}, ["gate broken"]) for i in range(2)]
    names = ["sft@learning_rate=0.001", "sft@learning_rate=0.003"]
    with pytest.raises(StageError) as caught:
        ranked(broken, "m", "max", "candidate of 'sft'", names)
    assert str(caught.value) == (
        "no candidate of 'sft' meets the selection constraints "
        "(sft@learning_rate=0.001: gate broken; sft@learning_rate=0.003: gate broken)"
    )


def test_relative_constraints_compare_with_another_stage():
    """A relative gate's bound is the other stage's value plus the margin; the best candidate that breaks it loses."""
    from workbench.merging.select import Scored, gate_violations, pick_best

    others = {"eval_sft": {"json_schema/valid_rate": 0.6, "json_schema/parse_rate": 0.9}}
    gates = ["json_schema/parse_rate >= eval_sft - 0.05"]
    candidates = [(0.7, 0.95), (0.8, 0.8), (0.75, 0.85)]
    scored = [
        Scored(i, metrics := {"json_schema/valid_rate": score, "json_schema/parse_rate": parse},
               gate_violations(gates, metrics, others))
        for i, (score, parse) in enumerate(candidates)
    ]  # fmt: skip
    assert scored[1].violations == ["json_schema/parse_rate >= eval_sft - 0.05 (got 0.8, bound 0.85)"]
    assert scored[2].violations == [], "0.85 meets the bound 0.9 - 0.05 exactly"
    assert pick_best(scored, "json_schema/valid_rate", "max").index == 2, "candidate 1 scores best but regresses"
    assert gate_violations(["json_schema/field_accuracy > eval_sft"], scored[0].metrics, others) == [
        "json_schema/field_accuracy > eval_sft (got not measured, 'eval_sft' did not measure it)"
    ]


def test_selection_data_is_read_and_tokenized_once_for_all_candidates(zoo, tmp_path, monkeypatch):
    """The candidates of a sweep are scored on one reading of the selection file, tokenized once per distinct
    tokenizer (merged candidates share theirs), and each gets the loss a reading of its own gives it."""
    from workbench.data import chat
    from workbench.merging import select
    from workbench.merging.select import HeldOutData

    data = tmp_path / "eval.jsonl"
    lines = (REPO / "datasets/quickstart/sft_eval.jsonl").read_text().splitlines()[:6]
    data.write_text("\n".join([*lines, "{not json"]) + "\n")
    folders = []
    for weight in (0.25, 0.75):  # two candidates of a sweep over m1's weight
        models = [(inp(zoo, "m1"), {"weight": weight}), (inp(zoo, "m2"), {"weight": 1.0})]
        run_mergekit(mergekit_config("linear", {}, models, None, {"dtype": "float32"}), tmp_path / str(weight), seed=0)
        folders.append(tmp_path / str(weight))
    folders.append(zoo["othertok"])  # another tokenizer: the records encoded anew
    each_alone = [HeldOutData(data, "eval.jsonl", 512).loss(folder) for folder in folders]  # a reading per model

    reads, encoded = [], []
    load, labels = chat.load_chat_records, select._assistant_labels
    monkeypatch.setattr(chat, "load_chat_records", lambda *args: reads.append(args) or load(*args))
    monkeypatch.setattr(select, "_assistant_labels", lambda *args: encoded.append(args) or labels(*args))
    held_out = HeldOutData(data, "eval.jsonl", 512)
    assert [held_out.loss(folder) for folder in folders] == each_alone
    assert each_alone[0][1] == {"records_used": 6.0, "records_skipped": 1.0}, "the unreadable line is skipped"
    assert each_alone[0] != each_alone[1]
    assert len(reads) == 1, "one reading of the file for every candidate"
    assert len(encoded) == 2 * 6, "six records encoded once by the candidates' tokenizer, once by the other one"


@pytest.mark.slow
def test_suite_selection_scores_a_merged_model_with_the_evaluation_suite(zoo):
    """The seam to workbench.evaluation: a real lm-eval run of one suite on a tiny model folder."""
    from workbench.merging.select import gate_violations, suite_metrics

    metrics = suite_metrics(zoo["m1"], "json_schema", limit=2, batch_size=2)
    assert 0.0 <= metrics["json_schema/valid_rate"] <= 1.0
    assert gate_violations(["json_schema/valid_rate >= 0"], metrics) == []


# --- LFM2-MoE ---------------------------------------------------------------------------------------------

TINY_MOE = TINY_ARCH | {
    "model_type": "lfm2_moe",
    "num_hidden_layers": 3,
    "layer_types": ["conv", "full_attention", "conv"],
    "moe_intermediate_size": 16,
    "num_dense_layers": 1,
    "num_experts": 4,
    "num_experts_per_tok": 2,
}


@pytest.fixture(scope="module")
def moe_zoo(zoo, tmp_path_factory) -> dict[str, Path]:
    from transformers import AutoTokenizer

    from workbench.modeling.architecture import build_model

    root = tmp_path_factory.mktemp("moe")
    tokenizer = AutoTokenizer.from_pretrained(zoo["m1"])
    arch = {key: value for key, value in TINY_MOE.items() if key != "full_attn_idxs"}
    return {f"e{seed}": _save(build_model(arch, tokenizer, seed), tokenizer, root / f"e{seed}") for seed in (1, 2)}


def test_lfm2_moe_merge_keeps_and_merges_every_expert(moe_zoo, tmp_path):
    models = [(inp(moe_zoo, "e1"), {"weight": 0.5}), (inp(moe_zoo, "e2"), {"weight": 0.5})]
    run_mergekit(mergekit_config("linear", {}, models, None, {"dtype": "float32"}), tmp_path / "out")
    merged, left, right = weights(tmp_path / "out"), weights(moe_zoo["e1"]), weights(moe_zoo["e2"])
    assert sorted(merged) == sorted(left)
    experts = [name for name in left if ".experts." in name]
    assert len(experts) == 2 * 4 * 3  # two MoE layers, four experts, three projections
    for name in left:
        torch.testing.assert_close(merged[name], (left[name] + right[name]) / 2, rtol=0, atol=1e-6)


def test_a_merge_that_leaves_out_tensors_is_an_error(moe_zoo, tmp_path, monkeypatch):
    """Without the LFM2-MoE definition mergekit writes the model with no expert weight and says nothing."""
    from contextlib import nullcontext

    import workbench.merging.engine as engine

    monkeypatch.setattr(engine, "known_architectures", lambda configs: nullcontext())
    models = [(inp(moe_zoo, "e1"), {"weight": 0.5}), (inp(moe_zoo, "e2"), {"weight": 0.5})]
    with pytest.raises(StageError) as caught:
        run_mergekit(mergekit_config("linear", {}, models, None, {"dtype": "float32"}), tmp_path / "out")
    message = str(caught.value)
    assert "left out 24 of the tensors every input has (model.layers.1.feed_forward.experts.0.w1.weight" in message
    assert "Lfm2MoeForCausalLM" in message and "\n" not in message


def test_a_sliced_passthrough_may_keep_fewer_layers_than_its_inputs(zoo, tmp_path):
    """The completeness check leaves layer stacks chosen by `slices` alone (a two-layer model cut to one; Llama,
    since mergekit writes a sliced LFM2's config with the old `layer_types`, which transformers refuses)."""
    config = {
        "slices": [{"sources": [{"model": str(zoo["llama"]), "layer_range": [0, 1]}]}],
        "merge_method": "passthrough",
        "dtype": "float32",
    }
    run_mergekit(config, tmp_path / "out")
    merged, source = weights(tmp_path / "out"), weights(zoo["llama"])
    assert merged and not any(".layers.1." in name for name in merged)
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, source[name], rtol=0, atol=0)


def test_a_sliced_lfm2_stack_gets_the_layer_kinds_of_the_layers_it_takes(zoo, tmp_path):
    """Depth up-scaling of LFM2 (layers 0-1, then layer 1 again): mergekit sets the layer count, workbench the
    `layer_types`; without them transformers refuses the config."""
    from transformers import AutoModelForCausalLM

    source = str(zoo["m1"])
    config = {
        "slices": [
            {"sources": [{"model": source, "layer_range": [0, 2]}]},
            {"sources": [{"model": source, "layer_range": [1, 2]}]},
        ],
        "merge_method": "passthrough",
        "dtype": "float32",
    }
    run_mergekit(config, tmp_path / "out")
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["num_hidden_layers"] == 3
    assert written["layer_types"] == ["conv", "full_attention", "full_attention"]
    model, info = AutoModelForCausalLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    merged, original = weights(tmp_path / "out"), weights(zoo["m1"])
    for name, tensor in original.items():
        if ".layers.1." in name:
            torch.testing.assert_close(merged[name.replace(".layers.1.", ".layers.2.")], tensor, rtol=0, atol=0)
    assert torch.isfinite(model(torch.tensor([[1, 5, 9]])).logits).all()


def test_a_sliced_lfm2_moe_stack_keeps_its_dense_layers_first(moe_zoo, tmp_path):
    from transformers import AutoModelForCausalLM

    source = str(moe_zoo["e1"])  # three layers: one dense, then two with experts

    def sliced(*ranges) -> dict:
        slices = [{"sources": [{"model": source, "layer_range": list(r)}]} for r in ranges]
        return {"slices": slices, "merge_method": "passthrough", "dtype": "float32"}

    run_mergekit(sliced((0, 1), (0, 3)), tmp_path / "out")
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (written["num_hidden_layers"], written["num_dense_layers"]) == (4, 2)
    assert written["layer_types"] == ["conv", "conv", "full_attention", "conv"]
    _, info = AutoModelForCausalLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with pytest.raises(StageError, match="dense layer after an expert layer.*taken: dense experts dense"):
        run_mergekit(sliced((0, 2), (0, 1)), tmp_path / "bad")


def test_ranking_and_selection_on_one_file_read_it_once(tiny_project, monkeypatch):
    """A merge that keeps the best candidates by held-out loss and selects its own candidate on the same file
    reads and tokenizes that file once for both."""
    from workbench.data import chat
    from workbench.runner import load_recipe
    from workbench.runner.executor import run_recipe

    path = tiny_project({"max_steps": 1, "save_steps": 1, "learning_rate": {"sweep": [1e-3, 3e-3]}})
    run_recipe(load_recipe(path))
    recipe = yaml.safe_load(path.read_text())
    held_out = {"metric": "eval_loss", "data": "data/eval.jsonl"}
    recipe["stages"].append({"name": "soup", "kind": "merge", "method": "linear", "dtype": "float32",
                             "models": {"candidates_of": "sft", "top_k": 1, "by": held_out},
                             "parameters": {"normalize": {"sweep": [True, False]}}, "select": held_out})  # fmt: skip
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    reads = []
    load = chat.load_chat_records
    monkeypatch.setattr(chat, "load_chat_records", lambda *args, **kw: reads.append(args[1]) or load(*args, **kw))
    outcomes = {o.name: o for o in run_recipe(load_recipe(path))}
    assert outcomes["soup"].status == "ran" and reads == ["data/eval.jsonl"]


def test_a_hub_id_pins_its_revision_for_loading_and_for_the_stage_hash(zoo, tmp_path, monkeypatch):
    """`org/name@revision` loads that commit from the Hugging Face cache (no download here: HF_HUB_OFFLINE) and
    hashes apart from another revision; `org/name` is the main branch."""
    from workbench.merging.engine import resolve_model
    from workbench.runner import load_recipe
    from workbench.runner.plan import make_plan

    cache = tmp_path / "hub"
    repo = cache / "models--acme--tiny"
    main, pinned = "a" * 40, "b" * 40
    for commit, model in ((main, "m1"), (pinned, "m2")):
        shutil.copytree(zoo[model], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(main)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    assert resolve_model("acme/tiny", tmp_path) == repo / "snapshots" / main
    assert resolve_model(f"acme/tiny@{pinned}", tmp_path) == repo / "snapshots" / pinned

    (tmp_path / "d.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    hashes = []
    for model in ("acme/tiny", f"acme/tiny@{pinned}"):
        recipe = {"name": "r", "tokenizer": {"train": {"files": ["d.jsonl"]}}, "stages": [
            {"name": "m", "kind": "merge", "method": "linear", "models": [{"model": model}]}]}  # fmt: skip
        (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        hashes.append(make_plan(load_recipe(tmp_path / "recipe.yaml", root=tmp_path)).by_name()["m"].hash)
    assert hashes[0] != hashes[1], "a pinned revision is another input"
    from workbench.runner.executor import run_recipe

    (outcome,) = run_recipe(load_recipe(tmp_path / "recipe.yaml", root=tmp_path))  # the pinned one, written last
    assert_same_weights(outcome.dir / "model", zoo["m2"])

    # the tokenizer and a training stage's start, pinned the same way, load that commit too
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]}
    (tmp_path / "chat.jsonl").write_text("\n".join([json.dumps(chat)] * 8) + "\n")
    recipe = {"name": "r2", "tokenizer": {"path": f"acme/tiny@{pinned}"}, "stages": [
        {"name": "sft", "kind": "sft", "model": f"acme/tiny@{pinned}", "data": "chat.jsonl", "max_steps": 1,
         "batch_size": 2, "max_length": 64, "sample_count": 0}]}  # fmt: skip
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    (sft,) = run_recipe(load_recipe(tmp_path / "recipe.yaml", root=tmp_path))
    trained, main_weights, pinned_weights = weights(sft.dir / "model"), weights(zoo["m1"]), weights(zoo["m2"])
    name = "model.embed_tokens.weight"
    assert (trained[name] - pinned_weights[name]).norm() < (trained[name] - main_weights[name]).norm() / 10
