import math

import pandas as pd
import pytest

from nas.supernet.ranking import kendall_tau, kendall_tau_interval, spearman_rho, tau_ceiling


def test_perfect_reversed_and_known_values():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert spearman_rho([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman_rho([0.5, 0.1, 0.5], [2.5, 1.0, 2.5]) == pytest.approx(1.0)  # ties share their average rank
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))


def test_ties_match_pandas_tau_b_and_spearman():
    pytest.importorskip("scipy")  # pandas' Kendall needs it (scipy is not a dependency of nas)
    a = [0.71, 0.74, 0.74, 0.70, 0.78, 0.75, 0.72, 0.72]
    b = [0.80, 0.83, 0.81, 0.79, 0.86, 0.86, 0.80, 0.82]
    s = pd.DataFrame({"a": a, "b": b})
    assert kendall_tau(a, b) == pytest.approx(s.corr(method="kendall").loc["a", "b"])
    assert spearman_rho(a, b) == pytest.approx(s.corr(method="spearman").loc["a", "b"])


def test_tau_interval_brackets_the_estimate_and_narrows_with_more_networks():
    import random

    assert kendall_tau_interval([1, 2, 3, 4, 5], [2, 4, 6, 8, 10]) == (1.0, 1.0)  # every resample agrees fully
    rng = random.Random(3)
    widths = []
    for n in (30, 200):
        a = [rng.random() for _ in range(n)]
        b = [x + rng.gauss(0, 0.3) for x in a]
        low, high = kendall_tau_interval(a, b, resamples=200)
        assert low < kendall_tau(a, b) < high
        assert kendall_tau_interval(a, b, resamples=200) == (low, high)  # seeded
        widths.append(high - low)
    assert 0.15 < widths[0] < 0.6 and widths[1] < widths[0] / 2  # about 1/sqrt(n)


@pytest.mark.parametrize("kwargs", [{"level": 1.0}, {"level": 0}, {"resamples": 0}])
def test_tau_interval_refuses_bad_settings(kwargs):
    with pytest.raises(ValueError):
        kendall_tau_interval([1, 2, 3], [1, 2, 3], **kwargs)


def test_tau_ceiling_is_what_a_perfect_predictor_reaches_against_noisy_trainings():
    import numpy as np

    rng = np.random.default_rng(0)
    quality = rng.normal(size=1500)  # the networks' true quality, and two noisy trainings of each
    first, second = (quality + rng.normal(scale=0.8, size=quality.size) for _ in range(2))
    tau_repeat = kendall_tau(first, second)
    assert tau_ceiling(tau_repeat) == pytest.approx(kendall_tau(quality, first), abs=0.03)
    assert tau_ceiling(tau_repeat, seeds=2) == pytest.approx(kendall_tau(quality, (first + second) / 2), abs=0.03)
    assert tau_ceiling(1.0) == 1.0 and tau_ceiling(0.0) == 0.0 and tau_ceiling(-0.2) == 0.0
    with pytest.raises(ValueError):
        tau_ceiling(1.5)


def test_the_gain_interval_is_paired_and_brackets_the_gain():
    import random

    from nas.supernet.ranking import kendall_tau_gain_interval

    rng = random.Random(5)
    truth = [rng.random() for _ in range(30)]
    better = [x + rng.gauss(0, 0.1) for x in truth]
    worse = [x + rng.gauss(0, 0.4) for x in truth]
    gain = kendall_tau(better, truth) - kendall_tau(worse, truth)
    low, high = kendall_tau_gain_interval(worse, better, truth, resamples=300)
    assert 0 < low < gain < high  # a clear gain is told apart from none
    # pairing: narrower than the difference of the two unpaired intervals would allow
    (bl, bh), (wl, wh) = (kendall_tau_interval(x, truth, resamples=300) for x in (better, worse))
    assert high - low < (bh - bl) + (wh - wl)
    assert kendall_tau_gain_interval(worse, worse, truth, resamples=50) == (0.0, 0.0)  # no gain, on every resample
    with pytest.raises(ValueError):
        kendall_tau_gain_interval(worse, better, truth[:-1])
