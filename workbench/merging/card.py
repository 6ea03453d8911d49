"""The merged model's card (README.md): method, parameters, the inputs and their content hashes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from workbench.hashing import file_digest
from workbench.merging.engine import ResolvedInput


def input_rows(inputs: list[ResolvedInput]) -> list[dict[str, Any]]:
    """Provenance of each distinct input: label, stage hash and sha256 over its model folder's files."""
    rows, seen = [], set()
    for item in inputs:
        if item.label in seen:
            continue
        seen.add(item.label)
        rows.append({"model": item.label, "stage_hash": item.stage_hash, "sha256": file_digest(item.path)})
    return rows


def write_card(
    out_dir: Path,
    name: str,
    config: dict[str, Any],
    inputs: list[ResolvedInput],
    selection: dict[str, Any] | None = None,
) -> None:
    """Write README.md into `out_dir` (atomically: a temporary file, then a rename)."""
    from importlib.metadata import version

    from mergekit.merge_methods import get

    method = config["merge_method"]
    spec = get(method).spec
    reference = f" ([paper]({spec.reference_url}))" if spec.reference_url else ""
    lines = [
        "---",
        yaml.safe_dump({"tags": ["merge", "mergekit", "workbench"], "library_name": "transformers"}).strip(),
        "---",
        f"# {name}",
        "",
        f"Merged by workbench with mergekit {version('mergekit')}: **{spec.pretty_name or method}** (`{method}`){reference}.",
        "",
        "## Inputs",
        "",
        "| model | stage hash | sha256 of the model folder |",
        "| --- | --- | --- |",
        *(f"| {row['model']} | {row['stage_hash'] or '-'} | {row['sha256']} |" for row in input_rows(inputs)),
        "",
        "## Parameters",
        "",
        "```yaml",
        yaml.safe_dump(_by_label(config, inputs), sort_keys=False).strip(),
        "```",
    ]
    if selection:
        lines += ["", "## Selection", "", "```yaml", yaml.safe_dump(selection, sort_keys=False).strip(), "```"]
    lines += [
        "",
        "## mergekit configuration",
        "",
        "Input paths as they were on the merging machine; `mergekit-yaml` reproduces the weights from it.",
        "",
        "```yaml",
        yaml.safe_dump(config, sort_keys=False).strip(),
        "```",
        "",
    ]
    tmp = out_dir / "README.md.tmp"
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(out_dir / "README.md")


def _by_label(config: dict[str, Any], inputs: list[ResolvedInput]) -> dict[str, Any]:
    """The config with input paths replaced by the names the recipe used, for a readable card."""
    labels = {str(item.path): item.label for item in inputs}
    shown = dict(config)
    if "models" in config:
        shown["models"] = [m | {"model": labels.get(m["model"], m["model"])} for m in config["models"]]
    for key in ("base_model", "tokenizer_source"):
        if key in config:
            shown[key] = labels.get(config[key], config[key])
    return shown
