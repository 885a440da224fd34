"""Scoring a stitched partition against ground truth."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping


def pairwise_precision_recall(
    predicted: Mapping[str, str], truth: Mapping[str, str]
) -> tuple[float, float]:
    """Pairwise precision and recall of an identifier -> person partition.

    A pair of identifiers is positive when both are in the same person. Only the
    identifiers in ``truth`` count; one missing from ``predicted`` is a person of
    its own there. With no positive pair on a side, that side's score is 1.0.
    Linear time: pairs are counted from cluster sizes (a contingency table).
    """
    pred_sizes: Counter[tuple[str, str]] = Counter()
    true_sizes: Counter[str] = Counter()
    both: Counter[tuple[tuple[str, str], str]] = Counter()
    for ident, true_person in truth.items():
        person = predicted.get(ident)
        cluster = ("p", person) if person is not None else ("solo", ident)
        pred_sizes[cluster] += 1
        true_sizes[true_person] += 1
        both[(cluster, true_person)] += 1

    def pairs(sizes: Iterable[int]) -> int:
        return sum(n * (n - 1) // 2 for n in sizes)

    true_pos = pairs(both.values())
    pred_pos = pairs(pred_sizes.values())
    real_pos = pairs(true_sizes.values())
    precision = true_pos / pred_pos if pred_pos else 1.0
    recall = true_pos / real_pos if real_pos else 1.0
    return precision, recall
