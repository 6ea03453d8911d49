"""What is wrong, if anything, with one thing a stage consumes: a stage reference, a data path, a model path or a
name in a catalog namespace. Each check returns its message; the loader reports it at the field's line."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.api.kinds import Catalog
from workbench.api.markers import DataPath, Named, StageRef
from workbench.api.sweeps import spelled_as_candidate, stage_of
from workbench.errors import article, did_you_mean
from workbench.recipe.grid import Sweep

# What `datasets.save_to_disk` writes at the top of a Dataset or DatasetDict folder.
SAVED_DATASET = ("dataset_info.json", "dataset_dict.json")
# org/name, optionally @revision (a commit, tag or branch: workbench.api.hub)
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*(@[A-Za-z0-9][A-Za-z0-9_.\-/]*)?$")


def ref_problem(
    ref: str,
    stage: str,
    kinds: dict[str, Any],
    unknown_kind: set[str],
    marker: StageRef,
    catalog: Catalog,
    sweeps: dict[str, Sweep] | None = None,
) -> str | None:
    """`ref`, read by `stage`, against the recipe's stages (`kinds`: each stage's, candidate's and swept stage's kind
    as written, in recipe order; `sweeps`: the swept stages). Stages in `unknown_kind` are already reported, so a
    reference to one is not. A swept stage is named whole only where a field reads all its candidates
    (`candidates_of`); elsewhere a reference names one candidate."""
    sweeps = sweeps or {}
    if stage_of(ref) == stage:
        return f"stage '{stage}' cannot use its own output"
    if marker.candidates and ref not in sweeps:
        if ref in kinds:
            return f"'{ref}' is not swept (no field written {{sweep: [...]}}): this field takes a swept stage"
        return f"unknown swept stage '{ref}'{did_you_mean(ref, list(sweeps))} (swept: {', '.join(sweeps) or 'none'})"
    if not marker.candidates and ref in sweeps:
        candidates = sweeps[ref].candidates
        return (
            f"'{ref}' is swept into {len(candidates)} candidates ({', '.join(candidates)}): pick one "
            f"(`{candidates[0]}`) or merge them (a merge stage with `models: {{candidates_of: {ref}}}`)"
        )
    if ref not in kinds:
        if ref in unknown_kind:
            return None
        if stage_of(ref) in sweeps:
            candidates = sweeps[stage_of(ref)].candidates
            spelled = spelled_as_candidate(ref)
            hint = f" (written '{spelled}')" if spelled in candidates else did_you_mean(ref, list(candidates))
            return f"unknown candidate '{ref}'{hint}; the candidates of '{stage_of(ref)}': {', '.join(candidates)}"
        return f"unknown stage '{ref}'{did_you_mean(ref, [n for n in kinds if n != stage])}"
    kind = kinds[ref]
    model_kinds = sorted({*(n for n, k in catalog.kinds.items() if k.makes_model), *marker.also})
    if not marker.kinds and kind in catalog.kinds and kind not in model_kinds:
        candidates = [n for n, k in kinds.items() if k in model_kinds and n != stage]
        hint = did_you_mean(ref, candidates)
        return (
            f"'{ref}' is {article(kind)} {kind} stage, which makes no model; this field takes a "
            f"stage with a model ({', '.join(model_kinds)}){hint}"
        )
    if marker.kinds and kind not in marker.kinds:
        wanted = " or ".join(marker.kinds)
        candidates = [n for n, k in kinds.items() if k in marker.kinds and n != stage]
        hint = did_you_mean(ref, candidates) or (f" ({wanted} stages: {', '.join(candidates)})" if candidates else "")
        return f"'{ref}' is {article(kind)} {kind} stage; this field takes {article(wanted)} {wanted} stage{hint}"
    return None


def data_path_problem(value: str, marker: DataPath, catalog: Catalog, root: Path, check_files: bool) -> str | None:
    """A URI of a scheme the field takes (checked by the scheme), else a file or folder under `root`."""
    if "://" in value:
        scheme = value.split("://", 1)[0]
        if scheme not in marker.schemes or scheme not in catalog.schemes:
            allowed = ", ".join(f"{s}://" for s in marker.schemes) or "none"
            return f"'{value}': this field takes a file path, not a '{scheme}://' URI (URIs allowed: {allowed})"
        return catalog.schemes[scheme].check(value) or None
    if not check_files:
        return None
    local = root / value
    if not local.exists():
        return f"{'folder' if marker.kind == 'folder' else 'file'} not found: '{value}' (relative to {root})"
    if marker.kind == "file" and not local.is_file():
        return f"'{value}' is a folder; a file is expected here"
    if marker.kind == "folder" and not local.is_dir():
        return f"'{value}' is a file; a folder is expected here"
    if marker.kind == "dataset" and local.is_dir() and not any((local / name).is_file() for name in SAVED_DATASET):
        return f"'{value}' is a folder but not a saved dataset (no {' or '.join(SAVED_DATASET)} in it)"
    return None


# The file a folder must hold to be loadable as what a field names (transformers' `from_pretrained` needs it).
FOLDER_MARKERS = {"model folder": ("config.json",), "tokenizer folder": ("tokenizer.json", "tokenizer_config.json")}


def model_path_problem(value: str, what: str, root: Path, check_files: bool, hub: bool = True) -> str | None:
    """A folder that exists and holds what `from_pretrained` reads, or a hub id (`org/name`) whose first part is not
    a folder of the project."""
    if not check_files:
        return None
    local = root / value
    if local.exists():
        if not local.is_dir():
            return f"'{value}' is a file; a {what} is expected here"
        needed = FOLDER_MARKERS.get(what, ())
        if needed and not any((local / name).is_file() for name in needed):
            return f"'{value}' is not a {what}: it holds no {' or '.join(needed)}"
        return None
    if not hub:
        return f"{what} not found: '{value}' (relative to {root}); this field takes a local folder, not a hub id"
    first = Path(value).parts[0] if Path(value).parts else value
    looks_local = value.startswith((".", "/", "~")) or not HUB_ID.match(value) or (root / first).is_dir()
    if looks_local:
        return f"{what} not found: '{value}' (relative to {root}; a hub id is written org/name)"
    return None


def name_problems(
    value: str, marker: Named, catalog: Catalog, root: Path, names: Callable[[str], list[str]]
) -> list[str]:
    """A name the marker's namespace knows (`names`: a namespace's names), then the namespace's own checks."""
    space = catalog.namespaces.get(marker.namespace)
    if space is None:
        return [f"no namespace '{marker.namespace}' is registered (a stage kind's bug)"]
    known = names(marker.namespace)
    found = value in known or (space.contains is not None and space.contains(value, root))
    if not found:
        stem = value.rsplit(".", 1)[0] if "." in value else None
        if stem and stem in known:
            return [f"write the {space.name} name without its extension: '{stem}'"]
        listed = ", ".join(known) if len(known) <= 12 else ", ".join(known[:12]) + ", ..."
        return [f"unknown {space.name} '{value}'{did_you_mean(value, known)}; known: {listed or 'none'}"]
    return list(space.check(value, root)) if space.check is not None else []
