"""Rank agreement without scipy: Kendall's tau-b (pandas needs scipy for it) and Spearman's rho (pandas)."""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd


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


def spearman_rho(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho (average ranks for ties; NaN when either is constant), as pandas computes it."""
    if len(a) != len(b):
        raise ValueError("spearman_rho: the sequences differ in length")
    return float(pd.Series(a, dtype=float).corr(pd.Series(b, dtype=float), method="spearman"))
