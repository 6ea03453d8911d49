"""Safe YAML loading that remembers the line of every key and list item.

Errors must point at `file:line`, so we compose the node tree once and record, for every path
into the data (a tuple of keys and list indices), the line where it starts. Duplicate mapping
keys, which `yaml.safe_load` would silently collapse, are reported instead.
"""

from __future__ import annotations

from typing import Any

import yaml

Path_ = tuple[str | int, ...]


class LineMap:
    """Maps a data path such as ('stages', 2, 'from') to a 1-based line number."""

    def __init__(self) -> None:
        self._lines: dict[Path_, int] = {}

    def record(self, path: Path_, line: int) -> None:
        self._lines.setdefault(path, line)

    def line_of(self, path: Path_) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            line = self._lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None


def load_yaml_with_lines(text: str) -> tuple[Any, LineMap, list[tuple[int, Path_, str]]]:
    """Parse `text` safely; return (data, line map, [(line, path, duplicate-key message)]).

    Raises yaml.YAMLError on syntax errors (the caller turns its mark into file:line).
    """
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    data = yaml.safe_load(text)
    lines = LineMap()
    duplicates: list[tuple[int, Path_, str]] = []
    if node is not None:
        lines.record((), node.start_mark.line + 1)
        _walk(node, (), lines, duplicates)
    return data, lines, duplicates


def _walk(node: yaml.Node, path: Path_, lines: LineMap, duplicates: list[tuple[int, Path_, str]]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            line = key_node.start_mark.line + 1
            if key == "<<":  # merge key: its entries belong to this mapping
                _walk(value_node, path, lines, duplicates)
                continue
            if key in seen:
                message = f"duplicate key '{key}' (first at line {seen[key]}); YAML would keep only the last"
                duplicates.append((line, path, message))
                continue
            seen[key] = line
            lines.record(path + (key,), line)
            _walk(value_node, path + (key,), lines, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.record(path + (index,), item.start_mark.line + 1)
            _walk(item, path + (index,), lines, duplicates)
