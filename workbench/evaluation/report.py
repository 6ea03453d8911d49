"""One table of every finished evaluate stage's scores, side by side, for the end of a run."""

from __future__ import annotations

from rich.table import Table

from workbench.recipe.loaded import LoadedRecipe


def scores_table(loaded: LoadedRecipe, evaluations: dict[str, dict[str, float]]) -> Table | None:
    """Rows: metric names; columns: evaluate stages (with the model each measured). None if there are none."""
    if not evaluations:
        return None
    table = Table(title="evaluation scores by stage")
    table.add_column("metric")
    for name in evaluations:
        config = loaded.stages[name]
        model = getattr(config, "from_", None) or getattr(config, "model", None) or "?"
        table.add_column(f"{name}\n({model})", justify="right")
    # suite metrics only (`suite/metric`); throughput (`eval/...`) is not a score
    names = sorted({n for metrics in evaluations.values() for n in metrics if "/" in n and not n.startswith("eval/")})
    for metric in names:
        table.add_row(metric, *(f"{m[metric]:.4f}" if metric in m else "-" for m in evaluations.values()))
    return table
