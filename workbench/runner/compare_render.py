"""A comparison of two runs for the terminal (rich tables) and as one self-contained HTML page."""

from __future__ import annotations

import base64
import html

from rich.console import Console
from rich.table import Table

from workbench.runner.compare import Comparison


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _delta(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4f}"


def _verdict(passed: bool | None) -> str:
    return "-" if passed is None else "PASS" if passed else "FAIL"


def _name(run) -> str:
    return f"{run.info.run_name} ({run.info.run_id[:8]})"


def stage_rows(comparison: Comparison) -> list[list[str]]:
    rows = []
    for change in comparison.stages:
        fields = "; ".join(f"{key}: {a!r} -> {b!r}" for key, a, b in change.fields) or ""
        rows.append([change.stage, change.change, change.status_a, change.status_b, fields])
    return rows


def metric_rows(comparison: Comparison) -> list[list[str]]:
    return [[m.stage, m.metric, _number(m.a), _number(m.b), _delta(m.delta)] for m in comparison.metrics]


def gate_rows(comparison: Comparison) -> list[list[str]]:
    return [[g["stage"], g["gate"], _number(g["value"]), _number(g["bound"]), _verdict(g["passed_a"]),
             _verdict(g["passed"])] for g in comparison.gates]  # fmt: skip


def flip_rows(comparison: Comparison) -> list[list[str]]:
    return [[f.stage, f.suite, f"{f.task}#{f.doc_id}", f"{f.a:g}", f"{f.b:g}", f.prompt[-160:]]
            for f in comparison.flips]  # fmt: skip


SECTIONS = (
    ("Stages", ["stage", "change", "A", "B", "config fields (A -> B)"], stage_rows),
    ("Metrics", ["stage", "metric", "A", "B", "B - A"], metric_rows),
    ("Gates (B's)", ["stage", "gate", "value in B", "bound in B", "A", "B"], gate_rows),
    ("Samples whose score flipped", ["stage", "suite", "sample", "A", "B", "prompt (end)"], flip_rows),
)


def print_comparison(comparison: Comparison, console: Console) -> None:
    console.print(f"A: {_name(comparison.a)}\nB: {_name(comparison.b)}")
    changed = comparison.changed
    console.print(f"changed stages: {', '.join(changed) if changed else 'none'}")
    for title, header, rows in SECTIONS:
        body = rows(comparison)
        if not body:
            console.print(f"{title}: none")
            continue
        table = Table(title=title, title_justify="left")
        for column in header:
            table.add_column(column, overflow="fold")
        for row in body:
            table.add_row(*row)
        console.print(table)


def comparison_html(comparison: Comparison) -> str:
    """One page: the four tables and both runs' figures (embedded, so the file travels alone)."""
    parts = [
        "<!doctype html><meta charset='utf-8'><title>workbench compare</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f3f3f3}"
        ".flip{color:#a00}img{max-width:48%;margin:4px;border:1px solid #ddd}</style>",
        f"<h1>workbench compare</h1><p>A: {html.escape(_name(comparison.a))}<br>B: {html.escape(_name(comparison.b))}</p>",
        f"<p>Changed stages: {html.escape(', '.join(comparison.changed) or 'none')}</p>",
    ]
    for title, header, rows in SECTIONS:
        body = rows(comparison)
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if not body:
            parts.append("<p>none</p>")
            continue
        parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in body]
        parts.append("</table>")
    for label, figures in comparison.figures.items():
        if figures:
            parts.append(f"<h2>Figures of {label}</h2>")
            parts += [f"<img alt='{html.escape(name)}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"
                      for name, data in sorted(figures.items())]  # fmt: skip
    return "\n".join(parts) + "\n"
