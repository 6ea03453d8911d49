"""One table of every finished evaluate stage's scores, side by side, for the end of a run."""

from __future__ import annotations

from rich.table import Table

from workbench.recipe.loader import LoadedRecipe
from workbench.runner.plan import Plan


def scores_table(loaded: LoadedRecipe, plan: Plan) -> Table | None:
    """Rows: metric names; columns: evaluate stages (with the model stage each measured). None if none ran."""
    columns: list[tuple[str, dict[str, float]]] = []
    for stage in plan.stages:
        if stage.kind != "evaluate" or not plan.store.is_done(stage.name, stage.hash):
            continue
        info = plan.store.read_info(stage.name, stage.hash)
        config = loaded.stages[stage.name]
        model = getattr(config, "from_", None) or getattr(config, "model", None) or "?"
        columns.append((f"{stage.name}\n({model})", info.get("metrics", {})))
    if not columns:
        return None
    table = Table(title="evaluation scores by stage")
    table.add_column("metric")
    for title, _ in columns:
        table.add_column(title, justify="right")
    # suite metrics only (`suite/metric`); throughput (`eval/...`) is not a score
    names = sorted({name for _, metrics in columns for name in metrics if "/" in name and not name.startswith("eval/")})
    for name in names:
        table.add_row(name, *(f"{metrics[name]:.4f}" if name in metrics else "-" for _, metrics in columns))
    return table
