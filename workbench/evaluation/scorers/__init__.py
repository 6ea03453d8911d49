"""Scorers for evaluation suites: pure functions from a model output (and gold) to a score."""

from workbench.evaluation.scorers.json_output import (
    ExtractResult,
    JsonScore,
    extract_json,
    schema_validator,
    score_json,
)
from workbench.evaluation.scorers.tool_calls import (
    Category,
    ParseResult,
    ToolCall,
    ToolCallScore,
    parse_tool_calls,
    score_tool_calls,
)

__all__ = [
    "Category",
    "ExtractResult",
    "JsonScore",
    "ParseResult",
    "ToolCall",
    "ToolCallScore",
    "extract_json",
    "parse_tool_calls",
    "schema_validator",
    "score_json",
    "score_tool_calls",
]
