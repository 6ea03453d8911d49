"""Where a problem points: its path as the user reads it (`sft.from`, not `stages[1].from`) and the path whose
line the problem shows."""

from __future__ import annotations

import re
from typing import Any

from workbench.api.config import NAME_PATTERN


def format_path(path: tuple) -> str:
    """('stages', 2, 'from') -> 'stages[2].from'."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def named_path(data: Any, path: tuple) -> str:
    """`stages[1].from` as `sft.from` when stage 1 has a valid name no earlier stage has."""
    stages = data.get("stages") if isinstance(data, dict) else None
    if len(path) >= 2 and path[0] == "stages" and isinstance(path[1], int) and isinstance(stages, list):
        index = path[1]
        entry = stages[index] if index < len(stages) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        earlier = [e.get("name") for e in stages[:index] if isinstance(e, dict)]
        if isinstance(name, str) and re.match(NAME_PATTERN, name) and name not in earlier:
            return format_path((name, *path[2:]))
    return format_path(path)


def locate(data: Any, path: tuple, message: str) -> tuple[tuple, tuple]:
    """(path to report, path of the line) for a problem reported on a whole mapping or list whose message quotes
    one of its keys or values (`ties takes no parameter 'densty'`): the line of that key or value, so the problem
    points at what to fix. Unchanged when no quoted name, or more than one, is found exactly once."""
    node: Any = data
    for part in path:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return path, path
    if not isinstance(node, (dict, list)):
        return path, path
    quoted = set(re.findall(r"'([^']+)'", message))
    found: dict[str, list[tuple[tuple, tuple]]] = {}

    def walk(value: Any, below: tuple) -> None:
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, entry in items:
            if not below and key in ("name", "kind"):
                continue
            if isinstance(key, str) and key in quoted:
                found.setdefault(key, []).append((path + below, path + below + (key,)))
            if isinstance(entry, str) and entry in quoted:
                found.setdefault(entry, []).append((path + below + (key,),) * 2)
            if isinstance(entry, (dict, list)):
                walk(entry, below + (key,))

    walk(node, ())
    targets = {hits[0] for hits in found.values() if len(hits) == 1}
    return targets.pop() if len(targets) == 1 else (path, path)
