"""OpenAI-style assistant `tool_calls` rewritten as LFM2's own call syntax in the turn's content.

Chat exports in OpenAI's format carry an assistant's calls beside its text:
`{"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
"function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}` (arguments a JSON string or an
object). LFM2 writes them in the text, `<|tool_call_start|>[get_weather(city="Paris")]<|tool_call_end|>`, the
form `workbench.evaluation.scorers.tool_calls.parse_tool_calls` reads back; content before the calls is kept
before the block.
"""

from __future__ import annotations

import json
import keyword
import math
from typing import Any

from workbench.evaluation.scorers.tool_calls import TOOL_CALL_END, TOOL_CALL_START


class ToolCallsError(ValueError):
    """A malformed `tool_calls` value; the message is a short phrase for a data report."""


def openai_tool_calls_to_lfm2(tool_calls: Any) -> str:
    """The LFM2 call block for a list of OpenAI tool calls; raises `ToolCallsError` for a malformed one."""
    if not isinstance(tool_calls, list):
        raise ToolCallsError("not a list")
    try:
        calls = ", ".join(_call(entry) for entry in tool_calls)
    except RecursionError:
        raise ToolCallsError("arguments nested too deeply") from None
    return f"{TOOL_CALL_START}[{calls}]{TOOL_CALL_END}"


def has_tool_calls(message: dict) -> bool:
    """Whether a turn carries OpenAI tool calls (a missing, null or empty `tool_calls` carries none)."""
    calls = message.get("tool_calls")
    return calls is not None and not (isinstance(calls, list) and not calls)


def tool_calls_problem(message: dict) -> str | None:
    """Why a turn's `tool_calls` cannot be rewritten (a phrase read after 'N records ...'), or None."""
    if not has_tool_calls(message):
        return None
    if message.get("role") != "assistant":
        return "with 'tool_calls' on a turn that is not the assistant's"
    try:
        openai_tool_calls_to_lfm2(message["tool_calls"])
    except ToolCallsError as error:
        return f"with malformed 'tool_calls' ({error})"
    return None


def lfm2_turn(message: dict) -> dict:
    """The turn with its tool calls appended to its content as an LFM2 call block, without `tool_calls`;
    a turn without the key is returned as is. Raises `ToolCallsError` for malformed calls."""
    if "tool_calls" not in message:
        return message
    turn = {key: value for key, value in message.items() if key != "tool_calls"}
    if has_tool_calls(message):
        text = message.get("content") or ""
        turn["content"] = (text if text.strip() else "") + openai_tool_calls_to_lfm2(message["tool_calls"])
    return turn


def _call(entry: Any) -> str:
    function = entry.get("function") if isinstance(entry, dict) else None
    if not isinstance(function, dict):
        raise ToolCallsError("a call without a 'function' object")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise ToolCallsError("a call without a function name")
    if not all(part.isidentifier() and not keyword.iskeyword(part) for part in name.split(".")):
        raise ToolCallsError("a function name that is not a Python name")
    arguments = _arguments(function.get("arguments", {}))
    for argument in arguments:
        if not argument.isidentifier() or keyword.iskeyword(argument):
            raise ToolCallsError("an argument name that is not a Python name")
    rendered = ", ".join(f"{argument}={_literal(value)}" for argument, value in arguments.items())
    return f"{name}({rendered})"


def _arguments(arguments: Any) -> dict:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments, parse_constant=_not_finite)
        except (json.JSONDecodeError, RecursionError):
            raise ToolCallsError("arguments that are not valid JSON") from None
    if not isinstance(arguments, dict):
        raise ToolCallsError("arguments that are not a JSON object")
    return arguments


def _not_finite(constant: str) -> Any:
    raise ToolCallsError(f"an argument value {constant}, which is not a literal")


def _literal(value: Any) -> str:
    """A Python literal `ast.literal_eval` reads back as `value` (strings double-quoted, as LFM2 writes them)."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ToolCallsError(f"an argument value {value}, which is not a literal")
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(_literal, value)) + "]"
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise ToolCallsError("an argument object with a key that is not a string")
        return "{" + ", ".join(f"{_literal(key)}: {_literal(item)}" for key, item in value.items()) + "}"
    raise ToolCallsError(f"an argument value of type {type(value).__name__}")
