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

from workbench.api.config import RecipeView
from workbench.errors import did_you_mean

_NAME = r"[A-Za-z][A-Za-z0-9_\-]*"
_NUMBER = r"\d+(?:\.\d+)?|\.\d+"
_GATE = re.compile(
    rf"^\s*(?P<metric>[A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-/]+)\s*(?P<op>>=|<=|==|>|<)\s*"
    rf"(?:(?P<number>-?(?:{_NUMBER}))|(?P<stage>{_NAME})?\s*(?:(?P<sign>[+-])\s*(?P<margin>{_NUMBER}))?)\s*$"
)
_OPERATORS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}


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


def metric_problem(metric: str, suite: str, recipe: RecipeView) -> str | None:
    """Why `metric` cannot come from `suite` (a metric name it does not report), or None; a suite whose metrics
    are unknown before running (a stock lm-eval task) is given the benefit of the doubt."""
    known = recipe.members("suite", suite)
    if known is None or metric in known:
        return None
    return f"suite '{suite}' reports no metric '{metric}'{did_you_mean(metric, known)}; it reports: {', '.join(known)}"


def gate_problems(
    gates: list[str],
    suites: list[str],
    compare: list[str],
    recipe: RecipeView,
    field: tuple = ("gates",),
    suites_field: str = "suites",
    extra: dict[str, list[str] | None] | None = None,
) -> None:
    """Report, at `field[i]`, every gate that cannot be checked: a suite the stage does not run, a metric its suite
    does not report, a comparison with a stage that is not in `compare`, is not an evaluate stage or does not run
    the gate's suite (each with a did-you-mean). `suites_field` names where the stage lists `suites`; `extra` maps
    what else the stage measures (`deploy`) to its metric names."""
    evaluate_stages = recipe.stages_of_kind("evaluate")
    extra = extra or {}
    measured = [*suites, *extra]
    for index, text in enumerate(gates):
        where = (*field, index)
        try:
            gate = parse_gate(text)
        except ValueError:
            continue  # the schema reported it
        if gate.suite not in measured:
            hint = did_you_mean(gate.suite, measured) or (f" ({suites_field}: {', '.join(suites)})" if suites else "")
            which = "'suites' does not list" if suites_field == "suites" else "this stage does not run"
            if gate.suite == "deploy":
                which = "this stage does not measure (add `deploy:` and evaluate an export stage)"
            recipe.problem(where, f"gate {text!r} uses suite '{gate.suite}', which {which}{hint}")
        if gate.suite in extra:
            known = extra[gate.suite]
            problem = None
            if known is not None and gate.metric not in known:
                problem = (
                    f"'{gate.suite}' reports no metric '{gate.metric}'{did_you_mean(gate.metric, known)}; "
                    f"it reports: {', '.join(known)}"
                )
        else:
            problem = metric_problem(gate.metric, gate.suite, recipe) if gate.suite in suites else None
        if problem:
            recipe.problem(where, problem)
        if gate.stage is not None:
            _comparison_problem(gate, where, compare, evaluate_stages, recipe)


def _comparison_problem(
    gate: Gate, where: tuple, compare: list[str], evaluate_stages: list[str], recipe: RecipeView
) -> None:
    """A relative gate's stage: an evaluate stage, listed in `compare`, that runs the gate's suite."""
    text, stage = gate.text, gate.stage
    kind = recipe.kind_of(stage)
    if stage in compare and kind == "evaluate":
        other = recipe.config_of(stage)
        runs = getattr(other, "suites", None)
        if isinstance(runs, list) and hasattr(other, "measured_groups"):
            runs = [*runs, *other.measured_groups()]
        if isinstance(runs, list) and gate.suite not in runs:
            recipe.problem(
                where,
                f"gate {text!r} compares with '{stage}', which does not run suite '{gate.suite}' "
                f"(it runs: {', '.join(runs)}); compare with an evaluate stage that does",
            )
        return
    if stage in compare:
        return  # not an evaluate stage: reported at `compare` itself
    if kind == "evaluate":
        recipe.problem(where, f"gate {text!r} compares with '{stage}', which is not in 'compare': list it in 'compare'")
    elif kind is not None:
        article = "an" if kind[:1] in "aeiou" else "a"
        recipe.problem(
            where,
            f"gate {text!r} compares with '{stage}', which is {article} {kind} stage; "
            "a gate compares with an evaluate stage listed in 'compare'",
        )
    elif hint := did_you_mean(stage, compare):
        recipe.problem(where, f"gate {text!r} compares with '{stage}', which is not in 'compare'{hint}")
    elif hint := did_you_mean(stage, evaluate_stages):
        recipe.problem(
            where, f"gate {text!r} compares with '{stage}', which is not in 'compare'{hint[:-1]} list it there too)"
        )
    else:
        candidates = ", ".join(evaluate_stages) or "none"
        recipe.problem(
            where,
            f"gate {text!r} compares with '{stage}', which is not in 'compare' nor a stage of this recipe "
            f"(evaluate stages: {candidates})",
        )
