"""A merge's models from a swept stage (`models: {candidates_of: sft}`): every candidate, or the best `top_k` by a
score. Candidates are scored as a merge's `select` scores its own (`merging.select`: a suite metric through lm-eval,
or held-out loss), constraints included, so there is one evaluator for both."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workbench.api import StageContext
from workbench.merging.config import CandidateInputs, MergeInput

TABLE = "merge/inputs.json"


@dataclass
class Picked:
    """The candidates a merge takes, and what it recorded choosing them."""

    inputs: list[MergeInput]
    details: dict[str, Any] = field(default_factory=dict)
    """For stage.json: the swept stage, and each candidate's scores and whether it was kept."""
    held_out: Any = None
    """The `HeldOutData` that scored them (by eval_loss), for the merge's own selection to reuse when it reads the
    same file: read and tokenized once for both."""


def pick_candidates(ctx: StageContext, spec: CandidateInputs) -> Picked:
    """The candidates of `spec.candidates_of` to merge, in grid order: all, or the best `top_k` by `spec.by` (fewer
    when fewer meet its constraints; none is an error). Scores go to the console, the stage run's table
    `merge/inputs.json` and the returned details."""
    from workbench.merging.select import HeldOutData, ranked, score_candidate

    names = list(ctx.project.candidates[spec.candidates_of])
    if spec.top_k is None:
        ctx.console.print(f"  merging every candidate of {spec.candidates_of}: {', '.join(names)}")
        return Picked(spec.inputs(names), {"candidates_of": spec.candidates_of, "kept": names})
    by = spec.by
    held_out = HeldOutData(ctx.resolve(by.data), by.data, by.max_length) if by.data is not None else None
    compared = {name: ctx.inputs[name].metrics for name in by.compare}
    scored = []
    for index, name in enumerate(names):
        result = score_candidate(index, ctx.inputs[name].model_dir, by, held_out, compared)
        ctx.console.print(f"  candidate {name}: {by.metric} = {result.metrics.get(by.metric, float('nan')):.4f}")
        scored.append(result)
    best = ranked(scored, by.metric, by.direction, f"candidate of '{spec.candidates_of}'", names)[: spec.top_k]
    kept = [names[s.index] for s in sorted(best, key=lambda s: s.index)]
    if len(kept) < spec.top_k:
        ctx.console.print(f"  [yellow]only {len(kept)} of top_k {spec.top_k} candidates meet the constraints[/]")
    ctx.console.print(f"  keeping the best {len(kept)} by {by.metric}: {', '.join(kept)}")
    rows = [
        {"candidate": name, **s.metrics, "violations": "; ".join(s.violations), "kept": name in kept}
        for name, s in zip(names, scored, strict=True)
    ]
    ctx.tracker.log_table(rows, TABLE)
    details = {"candidates_of": spec.candidates_of, "by": by.metric, "kept": kept, "candidates": rows}
    return Picked(spec.inputs(kept), details, held_out)
