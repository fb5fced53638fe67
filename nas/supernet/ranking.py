"""Rank agreement without scipy: Kendall's tau-b (pandas needs scipy for it) and Spearman's rho (pandas), and how
far a tau measured on a few networks can be trusted (a bootstrap interval over the networks)."""

from __future__ import annotations

import math
import random
from typing import Sequence

import numpy as np
import pandas as pd


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b of two equally long sequences (NaN when either is constant)."""
    if len(a) != len(b):
        raise ValueError("kendall_tau: the sequences differ in length")
    upper = np.triu_indices(len(a), k=1)  # every pair once
    sa = np.sign(np.subtract.outer(np.asarray(a, float), np.asarray(a, float)))[upper]
    sb = np.sign(np.subtract.outer(np.asarray(b, float), np.asarray(b, float)))[upper]
    denominator = math.sqrt(float(np.count_nonzero(sa)) * float(np.count_nonzero(sb)))
    return float(np.dot(sa, sb)) / denominator if denominator else float("nan")


def spearman_rho(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho (average ranks for ties; NaN when either is constant), as pandas computes it."""
    if len(a) != len(b):
        raise ValueError("spearman_rho: the sequences differ in length")
    return float(pd.Series(a, dtype=float).corr(pd.Series(b, dtype=float), method="spearman"))


def kendall_tau_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95, resamples: int = 1000,
                         seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``kendall_tau(a, b)``: the networks are resampled with replacement
    ``resamples`` times (seeded). On 30 networks it spans about +-0.25 around a tau near 0 (+-0.15 near
    0.6): a tau measured on so few networks is a rough figure, and two taus closer than that are not
    told apart."""
    if len(a) != len(b):
        raise ValueError("kendall_tau_interval: the sequences differ in length")
    a, b = np.asarray(a, float), np.asarray(b, float)
    return _bootstrap(len(a), lambda picked: kendall_tau(a[picked], b[picked]), level, resamples, seed)


def kendall_tau_gain_interval(old: Sequence[float], new: Sequence[float], truth: Sequence[float],
                              level: float = 0.95, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Paired percentile bootstrap interval of ``kendall_tau(new, truth) - kendall_tau(old, truth)``: how
    much better one predictor ranks the same networks than another. Both are computed on the same
    resamples, so the networks' shared luck cancels and the interval is narrower than the two taus'
    own intervals suggest."""
    if not len(old) == len(new) == len(truth):
        raise ValueError("kendall_tau_gain_interval: the sequences differ in length")
    old, new, truth = np.asarray(old, float), np.asarray(new, float), np.asarray(truth, float)
    return _bootstrap(len(truth), lambda picked: kendall_tau(new[picked], truth[picked])
                      - kendall_tau(old[picked], truth[picked]), level, resamples, seed)


def _bootstrap(n: int, statistic, level: float, resamples: int, seed: int) -> tuple[float, float]:
    """Percentile interval of ``statistic(indices)`` over ``resamples`` seeded resamples of ``range(n)``
    with replacement (NaN results, from constant resamples, are left out)."""
    if not 0 < level < 1 or resamples < 1:
        raise ValueError("the bootstrap's level must lie in (0, 1) and resamples be positive")
    rng = random.Random(seed)
    values = []
    for _ in range(resamples):
        value = statistic([rng.randrange(n) for _ in range(n)])
        if not math.isnan(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    values.sort()
    tail = (1 - level) / 2
    return values[int(tail * len(values))], values[min(len(values) - 1, int((1 - tail) * len(values)))]


def tau_ceiling(tau_repeat: float, seeds: int = 1) -> float:
    """The Kendall tau a perfect predictor would reach against the mean of ``seeds`` trainings per network,
    given ``tau_repeat``, the tau between two trainings of the same networks (seeds s and s + 1).

    For normally distributed figures tau = (2 / pi) asin(r) (Greiner's relation), so two trainings
    correlate at r1 = sin(pi tau_repeat / 2): the share of one training's variance that is the
    networks' own. The mean of k trainings keeps k r1 / (1 + (k - 1) r1) (Spearman-Brown), and a
    predictor that knew the networks' true quality would correlate with it at the square root of that."""
    if not -1 <= tau_repeat <= 1 or seeds < 1:
        raise ValueError("tau_ceiling: tau_repeat must lie in [-1, 1] and seeds be positive")
    r1 = max(0.0, math.sin(math.pi * tau_repeat / 2))
    reliability = seeds * r1 / (1 + (seeds - 1) * r1)
    return 2 / math.pi * math.asin(math.sqrt(reliability))
