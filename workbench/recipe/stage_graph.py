"""The stage graph (each stage -> the stages whose output it reads): its cycles and its run order."""

from __future__ import annotations

import heapq
from graphlib import CycleError, TopologicalSorter


def find_cycle(graph: dict[str, list[str]]) -> list[str]:
    """One dependency cycle, from a stage to the stage that reads it and back (empty: none)."""
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as error:
        return list(reversed(error.args[1]))
    return []


def stable_order(graph: dict[str, list[str]]) -> list[str]:
    """Inputs before the stages that use them; otherwise the recipe's order: at each step the earliest stage whose
    inputs are done runs next, so a gate written early stops the recipe before unrelated later stages run."""
    position = {name: index for index, name in enumerate(graph)}
    sorter = TopologicalSorter(graph)
    sorter.prepare()
    ready: list[tuple[int, str]] = []
    order: list[str] = []
    while sorter.is_active():
        for name in sorter.get_ready():
            heapq.heappush(ready, (position[name], name))
        _, name = heapq.heappop(ready)
        order.append(name)
        sorter.done(name)
    return order
