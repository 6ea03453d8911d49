"""Chat records in the other shapes exports use, read as `messages` before any check sees them.

- ShareGPT (as LLaMA-Factory and axolotl read it): `{"conversations": [{"from": "human", "value": "..."}, ...]}`
  with an optional top-level `system` text and `tools` (a list, or that list as a JSON string). Turns from
  `human`/`gpt`/`system`/`observation` become user/assistant/system/tool turns; a `function_call` turn (its
  value the call as JSON, `{"name": ..., "arguments": {...}}`, or a list of them) becomes an assistant turn
  with OpenAI `tool_calls`, which the chat checks then write as an LFM2 call block like any other.
- OpenAI content parts: `"content": [{"type": "text", "text": "..."}, ...]` becomes the parts' text joined
  in order (as chat templates render parts: no separator).
- `tools` written as its JSON text, in any record, becomes the list it holds.

Anything else is left as it is, so the checks report it in the record's own terms: an unknown `from`
keeps its name as the role (`unknown role ("bot", ...)`), a content part that is not text (an image) keeps
the list (`'content' is a list of parts with image_url, not text`).
"""

from __future__ import annotations

import json
from typing import Any

SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "system": "system",
    "observation": "tool",
    "tool": "tool",
    "function_response": "tool",
}
FUNCTION_CALL = "function_call"


def is_sharegpt(data: dict) -> bool:
    """A ShareGPT record: `conversations` and no `messages`."""
    return "messages" not in data and isinstance(data.get("conversations"), list)


def as_messages(data: dict) -> dict:
    """`data` with ShareGPT `conversations` as `messages` and text-part contents as text; other records unchanged.
    Never raises: what cannot be converted stays as it was, for the checks to report."""
    if is_sharegpt(data):
        data = _from_sharegpt(data)
    data = _parsed_tools(data)
    if isinstance(data.get("messages"), list):
        data = {**data, "messages": [_joined_parts(message) for message in data["messages"]]}
    return data


def as_pair_messages(data: dict) -> dict:
    """A preference record's ShareGPT `conversations` as its `messages` and ShareGPT `chosen`/`rejected` turns
    (`{"from": "gpt", "value": ...}`, as LLaMA-Factory writes pairs) as chat turns; text parts joined in every
    turn. Other records unchanged."""
    if is_sharegpt(data) and "prompt" not in data:
        data = _from_sharegpt(data)
    out = dict(_parsed_tools(data))  # a copy: the caller's record stays as read
    for key in ("prompt", "messages", "chosen", "rejected"):
        value = out.get(key)
        if isinstance(value, dict):
            out[key] = _joined_parts(_sharegpt_turn(value))
        elif isinstance(value, list):
            out[key] = [_joined_parts(_sharegpt_turn(turn)) for turn in value]
    return out


def _from_sharegpt(data: dict) -> dict:
    out = {key: value for key, value in data.items() if key not in ("conversations", "system")}
    system = data.get("system")
    messages = [{"role": "system", "content": system}] if isinstance(system, str) and system.strip() else []
    messages += [_sharegpt_turn(turn) for turn in data["conversations"]]
    out["messages"] = messages
    return out


def _parsed_tools(data: dict) -> dict:
    """`tools` written as its JSON text (as ShareGPT exports and Parquet datasets such as xLAM's store it) as the
    list it holds; an empty string as no tools."""
    tools = data.get("tools")
    if not isinstance(tools, str):
        return data
    out = dict(data)
    if not tools.strip():
        del out["tools"]
    elif isinstance(parsed := _json(tools), list):
        out["tools"] = parsed  # a string that is not a JSON list stays, for the checks to report
    return out


def _sharegpt_turn(turn: Any) -> Any:
    if not isinstance(turn, dict) or "from" not in turn:
        return turn  # reported by the checks as it is
    speaker, value = turn["from"], turn.get("value")
    if speaker == FUNCTION_CALL:
        return {"role": "assistant", "content": None, "tool_calls": _sharegpt_calls(value)}
    role = SHAREGPT_ROLES.get(speaker, speaker) if isinstance(speaker, str) else speaker
    return {"role": role, "content": value}


def _sharegpt_calls(value: Any) -> Any:
    """OpenAI `tool_calls` for a ShareGPT function_call value; the value itself when it is not a call, so the
    tool-call check names what is wrong with it."""
    calls = _json(value) if isinstance(value, str) else value
    calls = [calls] if isinstance(calls, dict) else calls
    if not isinstance(calls, list) or not all(isinstance(call, dict) for call in calls):
        return value
    return [{"type": "function", "function": call} for call in calls]


def _json(text: str) -> Any:
    """The JSON value in `text`, or None when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return None


def _joined_parts(message: Any) -> Any:
    """A message whose content is a list of text parts, with their texts joined; any other message as it is."""
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list) or not content or not all(map(_is_text_part, content)):
        return message
    return {**message, "content": "".join(part["text"] for part in content)}


def _is_text_part(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
