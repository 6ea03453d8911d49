"""Gates: conditions on an evaluate stage's metrics that decide whether a recipe goes on.

A gate is one comparison, parsed by a small grammar (never `eval`'d):

    gate      := METRIC OP reference
    METRIC    := suite "/" metric            e.g. tool_use/ast_accuracy
    OP        := ">=" | ">" | "<=" | "<" | "=="
    reference := NUMBER                      absolute:  tool_use/ast_accuracy >= 0.8
               | STAGE [("+" | "-") NUMBER]  relative:  json_schema/valid_rate >= eval_sft - 0.02

A relative gate compares with the same metric of an earlier evaluate stage, so "no regression
against SFT" is `metric >= eval_sft - margin`.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

from workbench.errors import WorkbenchError

_NAME = r"[A-Za-z][A-Za-z0-9_\-]*"
_NUMBER = r"\d+(?:\.\d+)?|\.\d+"
_GATE = re.compile(
    rf"^\s*(?P<metric>[A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-/]+)\s*(?P<op>>=|<=|==|>|<)\s*"
    rf"(?:(?P<number>-?(?:{_NUMBER}))|(?P<stage>{_NAME})?\s*(?:(?P<sign>[+-])\s*(?P<margin>{_NUMBER}))?)\s*$"
)
_OPERATORS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}


class GateFailed(WorkbenchError):
    """A gate failed: the recipe stops; the message is the table of passed and failed gates."""


@dataclass(frozen=True)
class Gate:
    """One parsed gate."""

    text: str
    metric: str
    op: str
    threshold: float | None
    """The bound of an absolute gate."""
    stage: str | None
    """The earlier stage a relative gate compares with."""
    margin: float = 0.0
    """Added to the other stage's value (negative for `- 0.02`)."""

    @property
    def suite(self) -> str:
        return self.metric.split("/", 1)[0]


@dataclass(frozen=True)
class GateResult:
    gate: str
    value: float | None
    """This stage's value of the metric (None: not measured)."""
    bound: float | None
    """What it was compared with (None: the reference stage did not measure it)."""
    passed: bool


def parse_gate(text: str) -> Gate:
    """Parse one gate; a malformed one is a `ValueError` saying what the grammar expects."""
    match = _GATE.match(text)
    if match is None or not (match["number"] or match["stage"]):
        raise ValueError(
            f"cannot parse gate {text!r}: expected 'suite/metric OP NUMBER' or 'suite/metric OP STAGE [+|- NUMBER]' "
            "with OP one of >=, >, <=, <, =="
        )
    if match["number"]:
        return Gate(text, match["metric"], match["op"], float(match["number"]), None)
    margin = float(match["margin"] or 0.0) * (-1 if match["sign"] == "-" else 1)
    return Gate(text, match["metric"], match["op"], None, match["stage"], margin)


def check_gates(gates: list[Gate], metrics: dict[str, float], others: dict[str, dict[str, float]]) -> list[GateResult]:
    """Evaluate every gate; a metric missing on either side fails its gate (never passes silently)."""
    results = []
    for gate in gates:
        value = metrics.get(gate.metric)
        if gate.stage is None:
            bound = gate.threshold
        else:
            reference = others.get(gate.stage, {}).get(gate.metric)
            bound = None if reference is None else reference + gate.margin
        ok = value is not None and bound is not None and not math.isnan(value)
        results.append(GateResult(gate.text, value, bound, bool(ok and _OPERATORS[gate.op](value, bound))))
    return results


def gate_table(stage: str, results: list[dict]) -> str:
    """A plain-text table of gate results for the terminal and the error message."""
    rows = [("gate", "value", "bound", "result")]
    for result in results:
        value = "not measured" if result["value"] is None else f"{result['value']:.4f}"
        bound = "not measured" if result["bound"] is None else f"{result['bound']:.4f}"
        rows.append((result["gate"], value, bound, "PASS" if result["passed"] else "FAIL"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    failed = sum(not r["passed"] for r in results)
    return f"stage '{stage}': {failed} of {len(results)} gates failed\n" + "\n".join(lines)
