"""One table of every finished evaluate stage's scores, side by side, for the end of a run."""

from __future__ import annotations

from rich.table import Table

from workbench.recipe.loaded import LoadedRecipe


def scores_table(
    loaded: LoadedRecipe, evaluations: dict[str, dict[str, float]], width: int | None = None
) -> Table | None:
    """Rows: metric names; columns: evaluate stages (with the model each measured). None if there are none.

    A row is the full `suite/metric` name a gate uses. When those names would not fit in `width` (a terminal's
    columns), the rows are grouped under one line per suite and name only the metric, instead of names cut short.
    """
    if not evaluations:
        return None
    headers = []
    for name in evaluations:
        config = loaded.stages[name]
        headers.append((name, getattr(config, "from_", None) or getattr(config, "model", None) or "?"))
    # suite metrics only (`suite/metric`); throughput (`eval/...`) is not a score
    names = sorted({n for metrics in evaluations.values() for n in metrics if "/" in n and not n.startswith("eval/")})
    cells = {n: [_value(m.get(n)) for m in evaluations.values()] for n in names}
    columns = [max(len(stage), len(model) + 2, *(len(c[i]) for c in cells.values())) for i, (stage, model) in
               enumerate(headers)]  # fmt: skip
    needed = max(map(len, names), default=6) + sum(columns) + 3 * len(columns) + 4  # cells, padding and rules
    grouped = width is not None and needed > width
    table = Table(title="evaluation scores by stage")
    table.add_column("suite / metric" if grouped else "metric", no_wrap=True)
    for stage, model in headers:
        table.add_column(f"{stage}\n({model})", justify="right", no_wrap=True)
    suite = None
    for name in names:
        if grouped and name.split("/", 1)[0] != suite:
            suite = name.split("/", 1)[0]
            table.add_row(f"[bold]{suite}/[/]", *("" for _ in headers))
        table.add_row(f"  {name.split('/', 1)[1]}" if grouped else name, *cells[name])
    return table


def _value(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if abs(value) >= 1000 else f"{value:.4f}"
