"""Inter-annotator agreement on nominal labels: pairwise percent agreement and Krippendorff's alpha."""

from __future__ import annotations

from itertools import combinations

import numpy as np


def percent_agreement(items: list[list[str]]) -> float | None:
    """Share of annotator pairs, within each item, that gave the same label (items with >= 2 labels)."""
    agreeing = total = 0
    for labels in items:
        for first, second in combinations(labels, 2):
            agreeing += first == second
            total += 1
    return agreeing / total if total else None


def krippendorff_alpha(by_annotator: dict[str, dict[str, str]]) -> float | None:
    """Nominal Krippendorff's alpha over `{annotator: {item: label}}`; None when it is undefined (fewer
    than two labels on any item, or a single label value in all the data)."""
    import krippendorff

    items = sorted({item for labels in by_annotator.values() for item in labels})
    values = sorted({label for labels in by_annotator.values() for label in labels.values()})
    if len(values) < 2 or not items:
        return None
    code = {label: index for index, label in enumerate(values)}
    matrix = np.full((len(by_annotator), len(items)), np.nan)
    for row, labels in enumerate(by_annotator.values()):
        for column, item in enumerate(items):
            if item in labels:
                matrix[row, column] = code[labels[item]]
    if not (np.sum(~np.isnan(matrix), axis=0) >= 2).any():
        return None
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal"))
