"""One table of every finished evaluate stage's scores, side by side, for the end of a run."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table

from workbench.recipe.loaded import LoadedRecipe

TITLE = "evaluation scores by stage"


def scores_table(
    loaded: LoadedRecipe, evaluations: dict[str, dict[str, float]], width: int | None = None
) -> RenderableType | None:
    """Rows: metric names; columns: scoring stages (with the model each measured). None if there are none.

    A row is the full `suite/metric` name a gate uses. When those names would not fit in `width` (a terminal's
    columns), the rows are grouped under one line per suite and name only the metric; when the stages still do
    not fit side by side, they are split over several tables. Nothing is cut short.
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
    columns = [
        max(len(stage), len(model) + 2, *(len(c[i]) for c in cells.values())) + 3
        for i, (stage, model) in enumerate(headers)
    ]  # fmt: skip  (cell, padding and rule)
    full = max(map(len, names), default=6) + 4
    grouped = width is not None and full + sum(columns) > width
    label = max((len(f"  {n.split('/', 1)[1]}") for n in names), default=6) + 4 if grouped else full
    chunks: list[list[int]] = [[]]
    for index, column in enumerate(columns):
        if chunks[-1] and width is not None and label + sum(columns[i] for i in chunks[-1]) + column > width:
            chunks.append([])
        chunks[-1].append(index)
    tables = [_table(headers, names, cells, chunk, grouped, TITLE if n == 0 else f"{TITLE} (continued)")
              for n, chunk in enumerate(chunks)]  # fmt: skip
    return tables[0] if len(tables) == 1 else Group(*tables)


def _table(headers, names: list[str], cells: dict[str, list[str]], chunk: list[int], grouped: bool, title: str):
    table = Table(title=title)
    table.add_column("suite / metric" if grouped else "metric", no_wrap=True)
    for index in chunk:
        stage, model = headers[index]
        table.add_column(f"{stage}\n({model})", justify="right", no_wrap=True)
    suite = None
    for name in names:
        if grouped and name.split("/", 1)[0] != suite:
            suite = name.split("/", 1)[0]
            table.add_row(f"[bold]{suite}/[/]", *("" for _ in chunk))
        table.add_row(f"  {name.split('/', 1)[1]}" if grouped else name, *(cells[name][i] for i in chunk))
    return table


def _value(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if abs(value) >= 1000 else f"{value:.4f}"
