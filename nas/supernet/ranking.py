"""Rank agreement without scipy: Kendall's tau-b and Spearman's rho (ties get average ranks)."""

from __future__ import annotations

import math
from typing import Sequence


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b of two equally long sequences (NaN when either is constant)."""
    if len(a) != len(b):
        raise ValueError("kendall_tau: the sequences differ in length")
    concordant = ties_a = ties_b = 0
    pairs = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            sa, sb = _sign(a[i] - a[j]), _sign(b[i] - b[j])
            pairs += 1
            concordant += sa * sb
            ties_a += sa == 0
            ties_b += sb == 0
    denominator = math.sqrt((pairs - ties_a) * (pairs - ties_b))
    return concordant / denominator if denominator else float("nan")


def average_ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman_rho(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho: Pearson's correlation of the average ranks (NaN when either is constant)."""
    if len(a) != len(b):
        raise ValueError("spearman_rho: the sequences differ in length")
    ra, rb = average_ranks(a), average_ranks(b)
    n = len(ra)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return cov / var if var else float("nan")
