"""A merge stage's work: expand the sweep grid, resolve the inputs and check they can be merged, merge each
candidate (a nested MLflow run each when selecting), score them, keep the best as the output, and record the model
card and the candidates table.

Everything the recipe fixes was checked by `validate`; what is checked here is known only now: the grid of a
template that sweeps, and the model folders themselves (`merging.compat`)."""

from __future__ import annotations

import shutil
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.api import StageContext, StageResult
from workbench.errors import StageError
from workbench.merging.config import MergeInput, SelectSpec
from workbench.merging.engine import ResolvedInput
from workbench.merging.select import HeldOutData, Scored
from workbench.merging.spec import MergeSpec
from workbench.merging.sweep import Candidate
from workbench.tracking import StageTracker

TABLE = "merge/candidates.json"


@dataclass
class Merged:
    """One merged candidate."""

    folder: Path
    config: dict[str, Any]
    """The mergekit config it was merged with."""
    row: dict[str, Any]
    """Its line in the candidates table."""
    scored: Scored | None


def merge_candidates(
    ctx: StageContext,
    spec: MergeSpec,
    models: list[MergeInput],
    base: MergeInput | None,
    select: SelectSpec | None,
    read: HeldOutData | None = None,
) -> StageResult:
    """Merge every candidate of `spec` into `ctx.model_dir`: the only one, or the best by `select`. `read`: held-out
    data already read in this stage (the inputs' ranking), reused when `select` scores on the same file."""
    from workbench.merging.card import input_rows, write_card
    from workbench.merging.select import pick_best

    candidates = _grid(spec, models, select)
    resolved_base = _resolve(ctx, base) if base is not None else None
    resolved = [_resolve(ctx, entry) for entry in models]
    distinct = _compatible([*([resolved_base] if resolved_base else []), *resolved], spec)
    ctx.console.print(f"  inputs compatible: {', '.join(item.label for item in distinct)}")
    shutil.rmtree(ctx.tmp_dir / "candidates", ignore_errors=True)
    shutil.rmtree(ctx.model_dir, ignore_errors=True)
    held_out = None
    if select is not None and select.data is not None:
        held_out = HeldOutData(ctx.resolve(select.data), select.data, select.max_length)  # read once, on first use
        if read is not None and (read.data, read.max_length) == (held_out.data, held_out.max_length):
            held_out = read
    merged = [_merge_one(ctx, candidate, spec, resolved_base, resolved, select, held_out) for candidate in candidates]
    metrics: dict[str, float] = {"merge/candidates": float(len(candidates))}
    chosen, selection = 0, None
    if select is not None:
        best = pick_best([m.scored for m in merged], select.metric, select.direction)
        chosen = best.index
        merged[chosen].folder.rename(ctx.model_dir)
        shutil.rmtree(ctx.tmp_dir / "candidates")
        metrics |= {f"select/{name}": value for name, value in best.metrics.items()}
        value = best.metrics[select.metric]
        ctx.console.print(f"  selected candidate {chosen}: {candidates[chosen].label} ({select.metric} {value:.4f})")
    rows = [m.row | {"selected": m.row["candidate"] == chosen} for m in merged]
    ctx.tracker.log_table(rows, TABLE)
    if select is not None:
        selection = (
            {"metric": select.metric} | select.model_dump(mode="json", exclude_defaults=True) | {"candidates": rows}
        )
    write_card(ctx.model_dir, ctx.config.name, merged[chosen].config, distinct, selection)
    details = {
        "method": candidates[chosen].method,
        "choices": candidates[chosen].choices,
        "selected_candidate": chosen,
        "candidates": rows,
        "inputs": input_rows(distinct),
    }
    return StageResult(metrics=metrics, details=details)


def _grid(spec: MergeSpec, models: list[MergeInput], select: SelectSpec | None) -> list[Candidate]:
    """The candidates; only now, with the template resolved, is the grid known (a template may sweep too)."""
    from workbench.merging.sweep import expand_grid

    candidates = expand_grid(spec.methods, spec.parameters, [e.parameters for e in models], [e.label for e in models])
    if not candidates:
        raise StageError("the sweep is empty: every swept value needs at least one entry")
    if len(candidates) > 1 and select is None:
        raise StageError(f"{len(candidates)} candidates (the template sweeps): add 'select' to pick one")
    return candidates


def _resolve(ctx: StageContext, entry: MergeInput) -> ResolvedInput:
    from workbench.merging.engine import resolve_model

    if entry.from_ is not None:
        source = ctx.inputs[entry.from_]
        return ResolvedInput(entry.from_, source.model_dir, source.info.get("hash"))
    return ResolvedInput(entry.model, resolve_model(entry.model, ctx.project.root))


def _compatible(inputs: list[ResolvedInput], spec: MergeSpec) -> list[ResolvedInput]:
    """The distinct inputs, once their folders are checked to be mergeable (the settings may allow differing
    tokenizers or chat templates)."""
    from workbench.merging.compat import check_compatible, read_facts

    distinct = list({item.label: item for item in inputs}.values())
    check_compatible(
        [read_facts(item.label, item.path) for item in distinct],
        allow_tokenizer_mismatch=spec.settings["tokenizer_source"] is not None,
        allow_chat_template_mismatch=spec.settings["chat_template"] is not None,
    )
    return distinct


def _merge_one(
    ctx: StageContext,
    candidate: Candidate,
    spec: MergeSpec,
    base: ResolvedInput | None,
    models: list[ResolvedInput],
    select: SelectSpec | None,
    held_out: HeldOutData | None = None,
) -> Merged:
    """Merge one candidate into its folder and, when selecting, score it (on `held_out`, the stage's selection
    data, for a held-out loss); inside its nested MLflow run."""
    from workbench.merging.engine import mergekit_config, run_mergekit
    from workbench.merging.methods import applicable
    from workbench.merging.select import score_candidate

    folder = ctx.model_dir if select is None else ctx.tmp_dir / "candidates" / f"{candidate.index:03d}"
    shared, per_model, ignored = applicable(candidate.method, candidate.parameters, candidate.model_parameters)
    config = mergekit_config(candidate.method, shared, list(zip(models, per_model, strict=True)), base, spec.settings)
    row = {"candidate": candidate.index, "method": candidate.method, **candidate.choices}
    if ignored:
        row["ignored_parameters"] = ", ".join(ignored)
        ctx.console.print(f"  [yellow]{candidate.method} does not take {', '.join(ignored)}: not passed[/]")
    ctx.console.print(f"  merging candidate {candidate.index}: {candidate.label}")
    scored = None
    with _candidate_run(ctx, candidate, select) as run:
        pruning = run_mergekit(config, folder, seed=ctx.seed)
        if pruning.index_order_ties:
            # Equal magnitudes straddled the pruning cut in a large tensor: kept by index, not mergekit's sort order.
            row["ties_kept_in_index_order"] = pruning.index_order_ties
            ctx.console.print(
                f"  {pruning.index_order_ties} pruned tensor(s) kept equal magnitudes at the cut in index order"
            )
        if select is not None:
            compared = {name: ctx.inputs[name].metrics for name in select.compare}
            scored = score_candidate(candidate.index, folder, select, held_out, compared)
            value = scored.metrics.get(select.metric, float("nan"))
            ctx.console.print(f"  candidate {candidate.index}: {select.metric} = {value:.4f}")
            row |= scored.metrics | {"violations": "; ".join(scored.violations)}
        if run is not None:
            run.log_params({"method": candidate.method} | {k: str(v) for k, v in candidate.choices.items()})
            run.log_metrics(scored.metrics if scored else {})
            run.log_dict(config, "mergekit_config.json")
    return Merged(folder, config, row, scored)


def _candidate_run(
    ctx: StageContext, candidate: Candidate, select: SelectSpec | None
) -> AbstractContextManager[StageTracker | None]:
    """A nested MLflow run under the stage's run for one sweep candidate (none for a plain merge)."""
    from workbench.tracking import child_run

    if select is None:
        return nullcontext()
    name = ctx.config.name
    tags = {"workbench.stage": name, "workbench.kind": "merge-candidate", "workbench.candidate": str(candidate.index)}
    return child_run(ctx.tracker.client, ctx.tracker.run_id, f"{name}/candidate-{candidate.index}", tags)
