"""PyYAML's syntax errors as one problem each, in words that say what to fix."""

from __future__ import annotations

import yaml

from workbench.errors import Problem


def yaml_problem(display: str, error: yaml.YAMLError) -> Problem:
    """PyYAML's reason in words that say what to fix, at the line to fix (where a bracket or quote was opened,
    not the end of the file where the parser noticed)."""
    mark = getattr(error, "problem_mark", None)
    context_mark = getattr(error, "context_mark", None)
    reason = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None) or ""
    if "mapping values are not allowed" in reason:
        reason = (
            "unexpected ':' (is this line indented deeper than the key above it? a value containing ': ' must be "
            "quoted)"
        )
    elif reason.startswith(("expected <block end>", "expected key")) or "block mapping" in reason:
        reason = (
            "this line is not lined up with the lines above it (keys of one mapping start in the same column: a "
            "stage's fields under its 'name', list items under their key)"
        )
    elif "'\\t'" in reason:  # PyYAML writes the tab escaped
        reason = "a tab character: YAML indents with spaces only"
    elif "could not find expected ':'" in reason and context_mark is not None:
        reason, mark = "a line without 'key: value' inside a mapping (a missing ':'?)", context_mark
    elif context.startswith("while parsing a flow") and context_mark is not None:
        bracket = "[" if "sequence" in context else "{"
        reason, mark = f"the '{bracket}' opened on this line is not closed ({reason})", context_mark
    elif context.startswith("while scanning a quoted scalar") and context_mark is not None:
        reason, mark = "the quote opened on this line is not closed", context_mark
    return Problem(display, mark.line + 1 if mark else 1, "", f"invalid YAML: {reason}")
