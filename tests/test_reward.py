import math

import pytest

from nas.errors import NasError
from nas.reward import PRESETS, Reward, mnas_reward

# Hand-computed: 2**-0.07 = 0.9526380, 0.5**-0.07 = 1.0497166, 2**-0.15 = 0.9012505, 0.5**-0.15 = 1.1095694
CASES = [
    # preset, accuracy, latency, target, expected
    ("soft", 0.8, 0.2, 0.1, 0.8 * 0.9526380),   # above T: twice as slow costs ~4.7 %
    ("soft", 0.8, 0.1, 0.1, 0.8),               # at T: the accuracy itself
    ("soft", 0.8, 0.05, 0.1, 0.8 * 1.0497166),  # below T: a small bonus
    ("hard", 0.8, 0.05, 0.1, 0.8),              # below T: no bonus
    ("hard", 0.8, 0.1, 0.1, 0.8),
    ("hard", 0.8, 0.2, 0.1, 0.4),               # above T: accuracy * T / LAT
    ("mnv3_small", 0.9, 2.0, 1.0, 0.9 * 0.9012505),
    ("mnv3_small", 0.9, 0.5, 1.0, 0.9 * 1.1095694),
]


@pytest.mark.parametrize("preset,acc,lat,target,expected", CASES)
def test_reward_matches_hand_computed_values(preset, acc, lat, target, expected):
    assert Reward.preset(preset, target)(acc, lat) == pytest.approx(expected, abs=2e-7)


def test_presets_are_the_papers_exponents():
    assert PRESETS == {"soft": (-0.07, -0.07), "hard": (0.0, -1.0), "mnv3_small": (-0.15, -0.15)}


def test_custom_exponents_switch_at_the_target():
    assert mnas_reward(0.5, 4.0, 2.0, alpha=-0.5, beta=-2.0) == pytest.approx(0.5 * 2 ** -2.0)
    assert mnas_reward(0.5, 1.0, 2.0, alpha=-0.5, beta=-2.0) == pytest.approx(0.5 * 0.5 ** -0.5)
    # Continuous at T, and more latency never helps.
    r = Reward(2.0, -0.5, -2.0)
    assert r(0.5, 2.0 - 1e-9) == pytest.approx(r(0.5, 2.0 + 1e-9), rel=1e-6)
    values = [r(0.5, lat) for lat in (0.5, 1.0, 2.0, 3.0, 8.0)]
    assert values == sorted(values, reverse=True)


@pytest.mark.parametrize("target", [0, -1.0, math.inf])
def test_bad_target_is_refused(target):
    with pytest.raises(NasError, match="target"):
        Reward(target)


def test_positive_exponent_and_unknown_preset_are_refused():
    with pytest.raises(NasError, match="alpha"):
        Reward(1.0, alpha=0.1)
    with pytest.raises(NasError, match="unknown reward preset"):
        Reward.preset("medium", 1.0)
    with pytest.raises(NasError, match="latency"):
        mnas_reward(0.9, 0.0, 1.0, -0.07, -0.07)
