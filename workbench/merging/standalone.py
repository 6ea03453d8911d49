"""`workbench merge FILE.yaml OUT`: a plain mergekit config, unchanged, with workbench's checks and card."""

from __future__ import annotations

from pathlib import Path

import yaml

from workbench.errors import WorkbenchError
from workbench.fsio import build_folder


def merge_file(config_file: Path, out_dir: Path, overwrite: bool = False, seed: int | None = None) -> Path:
    """Check and run the mergekit config in `config_file`; the output appears at `out_dir` only when complete.

    Model references resolve as mergekit resolves them: local folders relative to the current directory,
    anything else a hub id (from the local cache).
    """
    from mergekit.config import MergeConfiguration

    from workbench.merging.card import write_card
    from workbench.merging.compat import check_compatible, read_facts
    from workbench.merging.engine import ResolvedInput, resolve_model, run_mergekit
    from workbench.merging.methods import method_problems, missing_parameter_problems

    if not config_file.is_file():
        raise WorkbenchError(f"{config_file}: file not found")
    raw = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    try:
        config = MergeConfiguration.model_validate(raw)
    except Exception as error:
        first = str(error).strip().splitlines()
        raise WorkbenchError(f"{config_file}: not a valid mergekit config: {' '.join(first[:3])}") from None
    if config.models:
        per_model = {f"model '{m.model}'": (m.parameters or {}) for m in config.models}
        problems = method_problems([config.merge_method], config.parameters or {}, per_model)
        if not problems:
            own = {str(m.model): (m.parameters or {}) for m in config.models}
            base = str(config.base_model) if config.base_model else None
            problems = missing_parameter_problems(
                [config.merge_method], config.parameters or {}, own, base, defaults=False
            )
        if problems:
            raise WorkbenchError(f"{config_file}: {problems[0]}")
    labels = sorted({str(reference) for reference in config.referenced_models()})
    inputs = [ResolvedInput(label, resolve_model(label, Path.cwd())) for label in labels]
    try:
        check_compatible(
            [read_facts(item.label, item.path) for item in inputs],
            allow_tokenizer_mismatch=config.tokenizer_source is not None or config.tokenizer is not None,
            allow_chat_template_mismatch=config.chat_template is not None,
        )
    except WorkbenchError as error:
        raise WorkbenchError(f"{config_file}: {error}") from None
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise WorkbenchError(f"{out_dir} exists and is not empty (pass --overwrite to replace it)")

    def build(tmp: Path) -> None:
        run_mergekit(raw, tmp, seed=seed)
        write_card(tmp, out_dir.name, raw, inputs)

    return build_folder(out_dir, build)  # an existing out_dir stays whole until the new one replaces it
