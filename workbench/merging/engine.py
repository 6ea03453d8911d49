"""Run one merge through mergekit's Python API and complete the output folder.

mergekit reads inputs tensor by tensor, but on its own two things make its peak memory grow with the total
size of all inputs plus the output (3.7x one model for two LFM2-350M inputs, bench/merge.py): each input's
safetensors file stays memory-mapped for the whole merge, so every page it has read stays resident, and the
output is buffered in memory up to a 5 GB shard. `run_mergekit` closes an input file after each read and
writes the output in bounded shards, which keeps only the live tensors in memory. Magnitude pruning (ties,
breadcrumbs) runs through `workbench.merging.sparsify`, which finds the cut without sorting the whole tensor.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from workbench.errors import StageError, first_line
from workbench.merging.architectures import known_architectures, missing_tensors, sliced_layer_types

if TYPE_CHECKING:
    from workbench.merging.sparsify import LeanStats

# Files a complete model folder carries besides weights, config and tokenizer.
_COMPANION_FILES = ("generation_config.json", "chat_template.jinja")
# Output bytes held in memory before a shard is written (mergekit's default is 5 GB).
OUT_SHARD_BYTES = 512 * 2**20


@dataclass(frozen=True)
class ResolvedInput:
    """A merge input as a local model folder, with how the recipe named it."""

    label: str
    """The stage name, or the path / hub id as written."""
    path: Path
    stage_hash: str | None = None
    """The producing stage's hash when the input is an earlier stage."""


def resolve_model(label: str, project_root: Path) -> Path:
    """A local folder for a path (relative to the project root) or a hub id (from the local cache only)."""
    local = (project_root / label).resolve()
    if local.is_dir():
        return local
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    from workbench.api.hub import split_revision

    repo, revision = split_revision(label)
    try:
        return Path(snapshot_download(repo, revision=revision))
    except HFValidationError:
        raise StageError(f"model '{label}' is neither a folder under {project_root} nor a hub id") from None
    except Exception as error:  # offline, not cached, or no such repo
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise StageError(f"model '{label}' is not a local folder and could not be fetched: {first}") from None


def mergekit_config(
    method: str,
    parameters: dict[str, Any],
    models: list[tuple[ResolvedInput, dict[str, Any]]],
    base: ResolvedInput | None,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """A mergekit config (as its YAML would hold it) for one candidate, with inputs as local paths.

    `settings` holds dtype, out_dtype, tokenizer_source and chat_template (None: mergekit's default);
    a tokenizer_source naming an input's label becomes that input's path.
    """
    labels = {item.label: str(item.path) for item, _ in models} | ({base.label: str(base.path)} if base else {})
    config: dict[str, Any] = {
        "merge_method": method,
        "models": [{"model": str(item.path), **({"parameters": own} if own else {})} for item, own in models],
    }
    if base is not None:
        config["base_model"] = str(base.path)
    if parameters:
        config["parameters"] = parameters
    for key, value in settings.items():
        if value is not None:
            config[key] = labels.get(value, value) if key == "tokenizer_source" else value
    return config


def run_mergekit(config: dict[str, Any], out_dir: Path, seed: int | None = None) -> LeanStats:
    """Merge with mergekit's `run_merge` into `out_dir`, then add what a complete model folder needs.

    Returns what the lean magnitude pruning did (`index_order_ties`: tensors where it broke ties between equal
    magnitudes at the cut by index, where mergekit's own sort would pick an arbitrary subset)."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    from workbench.merging.sparsify import lean_magnitude_pruning

    try:
        merge_config = MergeConfiguration.model_validate(config)
    except Exception as error:
        raise StageError(f"invalid mergekit config: {first_line(error)}") from None
    options = MergeOptions(
        quiet=True,
        random_seed=seed,
        copy_tokenizer=True,
        write_model_card=False,  # workbench writes its own card with the inputs' hashes
        safe_serialization=True,
        lazy_unpickle=True,  # .bin inputs: unpickle lazily too (safetensors inputs are always lazy)
        low_cpu_memory=False,
        clone_tensors=False,
        async_write=False,  # asynchronous shard writes hold more tensors in memory at once
        out_shard_size=OUT_SHARD_BYTES,
        trust_remote_code=False,
    )
    inputs = [Path(ref.model.path) for ref in merge_config.referenced_models()]
    configs = [_config(path) for path in inputs]
    try:
        with (
            known_architectures(configs),
            sliced_layer_types(),
            _inputs_closed_after_each_read(merge_config),
            lean_magnitude_pruning() as pruning,
        ):
            run_merge(merge_config, str(out_dir), options)  # mergekit_config.yml is written below
    except (RuntimeError, ValueError, KeyError, OSError) as error:
        raise StageError(f"mergekit {config['merge_method']} merge failed: {first_line(error)}") from None
    if "slices" not in config and "modules" not in config:
        # with slices the config picks and renumbers the layers itself, so the output may rightly lack some
        architecture = "/".join(configs[0].get("architectures") or ["unknown"])
        _check_every_tensor_kept(config["merge_method"], architecture, inputs, out_dir)
    _complete_folder(merge_config, out_dir)
    (out_dir / "mergekit_config.yml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return pruning


def _config(path: Path) -> dict[str, Any]:
    config = path / "config.json"
    return json.loads(config.read_text(encoding="utf-8")) if config.is_file() else {}


def _check_every_tensor_kept(method: str, architecture: str, inputs: list[Path], out_dir: Path) -> None:
    """Stop when mergekit wrote a model without a tensor all its inputs have: it skips the tensors of an
    architecture it reads wrongly instead of failing, and such a model loads with those weights random."""
    from workbench.merging.compat import parameter_shapes

    shapes = [parameter_shapes(str(path), path) for path in inputs]
    missing = missing_tensors(shapes, parameter_shapes("merged", out_dir))
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise StageError(
            f"mergekit {method} merge left out {len(missing)} of the tensors every input has ({shown}): it does "
            f"not merge {architecture} correctly, so the merged model would be incomplete"
        )


@contextmanager
def _inputs_closed_after_each_read(merge_config) -> Iterator[None]:
    """Give mergekit's loader cache, for the inputs of this merge, loaders that close the input file after
    each tensor read: an open memory map keeps every page read so far resident in this process."""
    from mergekit.io.lazy_tensor_loader import LazyTensorLoader
    from mergekit.io.tasks import LoaderCache

    class ClosingLoader(LazyTensorLoader):
        def get_tensor(self, *args, **kwargs):
            try:
                return super().get_tensor(*args, **kwargs)
            finally:
                self.flush()

    cache = LoaderCache()
    refs = [ref for ref in merge_config.referenced_models() if ref.lora is None]
    before = {ref: cache.loaders.get(ref) for ref in refs}
    for ref in refs:
        cache.loaders[ref] = ClosingLoader(ref.tensor_index(), lazy_unpickle=True)
    try:
        yield
    finally:
        for ref, loader in before.items():
            if loader is None:
                cache.loaders.pop(ref, None)
            else:
                cache.loaders[ref] = loader


def _complete_folder(merge_config, out_dir: Path) -> None:
    """mergekit copies generation config and chat template only on some paths (not when it builds a tokenizer)."""
    donor = Path((merge_config.base_model or merge_config.referenced_models()[0]).model.path)
    for name in _COMPANION_FILES:
        if not (out_dir / name).exists() and (donor / name).is_file():
            shutil.copy(donor / name, out_dir / name)
