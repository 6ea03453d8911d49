"""The stage graph (each stage -> the stages whose output it reads): its cycles and its run order."""

from __future__ import annotations

from graphlib import CycleError, TopologicalSorter


def find_cycle(graph: dict[str, list[str]]) -> list[str]:
    """One dependency cycle, from a stage to the stage that reads it and back (empty: none)."""
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as error:
        return list(reversed(error.args[1]))
    return []


def stable_order(graph: dict[str, list[str]]) -> list[str]:
    """Inputs before the stages that use them; stages that become ready together keep the recipe's order."""
    position = {name: index for index, name in enumerate(graph)}
    sorter = TopologicalSorter(graph)
    sorter.prepare()
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        order += ready
        sorter.done(*ready)
    return order
