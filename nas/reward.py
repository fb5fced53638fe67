"""The MnasNet reward: accuracy traded against latency around a target.

``reward = ACC * (LAT / T) ** w`` with ``w = alpha`` when ``LAT <= T`` and ``w = beta`` otherwise
(Tan et al., MnasNet, eq. 2). Presets:

- ``soft``: alpha = beta = -0.07 (MnasNet: twice the latency costs about 5 % relative accuracy);
- ``hard``: alpha = 0, beta = -1 (no bonus under the target, a steep penalty above it);
- ``mnv3_small``: alpha = beta = -0.15 (MobileNetV3-Small's search, small models gain more per ms).

Two-objective (Pareto) search does not use this number to rank trials, but it is still recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nas.errors import NasError

PRESETS: dict[str, tuple[float, float]] = {
    "soft": (-0.07, -0.07),
    "hard": (0.0, -1.0),
    "mnv3_small": (-0.15, -0.15),
}


def mnas_reward(accuracy: float, latency_ms: float, target_ms: float, alpha: float, beta: float) -> float:
    """``accuracy * (latency_ms / target_ms) ** (alpha if latency_ms <= target_ms else beta)``."""
    if not target_ms > 0:
        raise NasError(f"latency target must be > 0 ms, got {target_ms}")
    if not latency_ms > 0 or not math.isfinite(latency_ms):
        raise NasError(f"latency must be a positive number of ms, got {latency_ms}")
    exponent = alpha if latency_ms <= target_ms else beta
    return accuracy * (latency_ms / target_ms) ** exponent


@dataclass(frozen=True)
class Reward:
    """A reward function with its target and exponents; call it with (accuracy, latency_ms)."""

    target_ms: float
    alpha: float = -0.07
    beta: float = -0.07

    def __post_init__(self) -> None:
        if not (isinstance(self.target_ms, (int, float)) and self.target_ms > 0 and math.isfinite(self.target_ms)):
            raise NasError(f"latency target must be > 0 ms, got {self.target_ms}")
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value > 0:
                raise NasError(f"reward {name} must be a number <= 0, got {value!r}")

    @classmethod
    def preset(cls, name: str, target_ms: float) -> "Reward":
        if name not in PRESETS:
            raise NasError(f"unknown reward preset {name!r}; choose one of {', '.join(PRESETS)}")
        alpha, beta = PRESETS[name]
        return cls(target_ms, alpha, beta)

    def __call__(self, accuracy: float, latency_ms: float) -> float:
        return mnas_reward(accuracy, latency_ms, self.target_ms, self.alpha, self.beta)

    def to_dict(self) -> dict[str, float]:
        return {"target_ms": float(self.target_ms), "alpha": float(self.alpha), "beta": float(self.beta)}
