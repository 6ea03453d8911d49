"""`export`: an earlier stage's model as a GGUF file for llama.cpp (phones, laptops, boards), quantized.

llama.cpp's own converter writes the file (weights, tokenizer and chat template inside it) and llama.cpp's quantizer
makes the smaller types; then the stage proves the file reads its prompts as the Hugging Face folder did: the chat
template embedded in the file renders the same text, and llama.cpp's tokenizer gives the same tokens on probe
texts. An `evaluate` stage with `from: <this stage>` scores the file through llama.cpp and measures its deploy
metrics (speed, memory), so gates compare it with the model it came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from workbench.api import RecipeView, StageConfig, StageContext, StageKind, StageResult
from workbench.api.config import ModelSource
from workbench.errors import StageError

Quantization = Literal[
    "f32", "f16", "bf16", "q8_0", "q6_K", "q5_K_M", "q5_K_S", "q5_0", "q5_1", "q4_K_M", "q4_K_S", "q4_0", "q4_1",
    "q3_K_L", "q3_K_M", "q3_K_S", "q2_K",
]  # fmt: skip


class ExportStageConfig(StageConfig, ModelSource):
    """Export an earlier stage's model (or a folder / hub id) to a GGUF file, quantized by llama.cpp."""

    kind: Literal["export"]
    """Stage kind."""

    format: Literal["gguf"] = "gguf"
    """File format: GGUF, llama.cpp's."""

    quantization: Quantization = "q8_0"
    """Weight type: `f32`, `f16`, `bf16`, `q8_0` (written by the converter) or a llama.cpp quantization such as
    `q4_K_M` (converted to f16, then quantized). K-quants keep tensors whose rows are not a multiple of 256 in a
    type that fits, as `llama-quantize` does."""

    threads: int = Field(default=2, ge=1)
    """CPU threads for llama.cpp's quantizer (does not change the file)."""

    unhashed_fields = StageConfig.unhashed_fields | {"threads"}

    def check_recipe(self, recipe: RecipeView) -> None:
        from workbench.export.stack import missing

        problem = missing()
        if problem:
            recipe.problem(("kind",), problem)


def run(ctx: StageContext) -> StageResult:
    import subprocess
    import sys

    from workbench.export.layout import gguf_relative
    from workbench.export.parity import check_parity
    from workbench.export.stack import require

    config: ExportStageConfig = ctx.config
    require()
    source = _local_model(ctx)
    relative = gguf_relative(config.quantization)
    out = ctx.tmp_dir / relative
    out.parent.mkdir(parents=True, exist_ok=True)
    ctx.console.print(f"  converting {source} to GGUF ({config.quantization}) with llama.cpp")
    command = [sys.executable, "-m", "workbench.export.convert", str(source), str(out),
               "--quantization", config.quantization, "--threads", str(config.threads)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not out.is_file():
        raise StageError(f"stage '{config.name}': GGUF conversion failed: {_last_error(done.stderr, done.returncode)}")
    size_mb = out.stat().st_size / 2**20
    source_mb = sum(p.stat().st_size for p in source.glob("*.safetensors")) / 2**20
    ctx.console.print(f"  wrote {relative} ({size_mb:.1f} MiB, from {source_mb:.1f} MiB of safetensors)")
    checked = check_parity(source, out)
    ctx.console.print(f"  llama.cpp reads it like transformers: {checked} probe texts tokenized identically")
    metrics = {"export/file_size_mb": size_mb}
    if source_mb:
        metrics["export/size_ratio"] = size_mb / source_mb
    details = {"gguf": str(relative), "quantization": config.quantization, "source": str(source),
               "parity_probes": checked, "llama_cpp_python": _version("llama_cpp_python")}  # fmt: skip
    return StageResult(metrics=metrics, details=details)


def _local_model(ctx: StageContext) -> Path:
    """The input model as a local folder (a hub id from the local Hugging Face cache; no download offline)."""
    location = ctx.input_model()
    if Path(location).is_dir():
        return Path(location)
    from huggingface_hub import snapshot_download

    from workbench.api.hub import split_revision

    repo, revision = split_revision(location)
    try:
        return Path(snapshot_download(repo, revision=revision))
    except Exception as error:  # noqa: BLE001 (offline, unknown repo, gated: all one line for the user)
        from workbench.errors import first_line

        raise StageError(
            f"stage '{ctx.config.name}': model '{location}' is not available: {first_line(error)}"
        ) from None


def _last_error(stderr: str, code: int) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error:")]
    return (errors or lines or [f"exit status {code}"])[-1]


def _version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


KIND = StageKind(
    name="export",
    config=ExportStageConfig,
    run=run,
    makes_model=False,
    summary="export a model to a quantized GGUF file for llama.cpp, checked to read prompts as transformers does",
)
