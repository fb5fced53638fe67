"""From a network's table entries to its end-to-end latency.

Each entry was timed as its own graph. A whole network differs from the sum of its units by what
the units do to each other, and a table of another device (``nas lut adapt``) differs from this one
by how the two CPUs run the same units. Both are fitted on a few whole networks measured end to end::

    predicted = a * (sum of the network's entries) + b * (its weights, millions) + c * (its units)

``b`` is what a network pays for its weights not staying in cache: a unit timed alone keeps its few
weights cached from one call to the next, a whole network streams all of them each inference.
``c`` is a fixed cost per unit that a unit's own graph has and a network does not (or the other way
round). The three are a least-squares fit on the calibration networks (20 for a build, 10 by default
for ``nas lut adapt``); with fewer than ``MIN_FIT_NETWORKS``, or a fit that is not usable (``a`` not
positive, a fitted latency not positive), the model is the common scale ``a = s`` (the median of
measured / summed), ``b = c = 0``. A prediction never goes below ``MIN_SHARE`` of the scaled sum.

Chosen by measuring (docs/benchmarks.md, "Calibration and adaptation"): 50 + 50 networks measured
three times in one interleaved run on an Intel Xeon (model 167, 2 cores), the rounds agreeing with
each other at 98-100 % within ±5 %, ρ 0.995-0.997. Fitted on 10 networks and judged on the other 50,
this model put 100 % of them within ±5 % (ρ 0.995) with this machine's table and 98 % (ρ 0.995) with
an AMD EPYC's table, where a weight per unit class (19 classes: blocks by SE, activation and
resolution) reached 84 % (0.987) and 88 % (0.991), and one scale 62 % (0.982) and 68 % (0.983). At 224x224
(MobileNetV3-Small space, 20 networks) it reached 98 % (ρ 0.995), the classes 96 % (0.995). The
networks' latency divided by their summed entries correlates 0.75 with their parameter count: the
weights are what the sum misses.

The same networks fit the MAdds baseline (``ms = slope * MAdds + intercept``) that validation
compares against.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from nas.latency.keys import UnitKey
from nas.spec.arch import ArchSpec
from nas.spec.count import count_madds, count_params

CALIBRATION_NETWORKS = 20  # whole networks a build fits its calibration on (measured: 20 beat 10 by ~2 pt within ±5 %)
MODEL = "a * units + b * weights + c * unit count (least squares)"
COEFFICIENTS = ("units", "params_m", "n_units")  # the three features, in order (see network_features)
MAX_CALIBRATION_NETWORKS = 1000  # a table's meta.json holds at most this many
MIN_FIT_NETWORKS = 5  # fewer calibration networks than this: one common scale
MIN_SHARE = 0.25  # a prediction is at least this share of the scaled sum (a guard for networks far outside the fit)

Entries = Sequence[tuple[UnitKey, float]]  # a network's units and their table latencies (ms)


def overhead_onnx() -> bytes:
    """A graph that does (almost) nothing: its latency is the fixed cost of one call."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["output"])], "overhead",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def network_features(spec: ArchSpec, entries: Entries) -> np.ndarray:
    """(summed entries in ms, parameters in millions, number of units) of one network."""
    return np.array([sum(ms for _, ms in entries), count_params(spec) / 1e6, len(entries)], float)


def fit_line(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope and intercept; a non-positive slope (noise) falls back to slope 1."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) >= 2 and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        if slope > 0:
            return float(slope), float(intercept)
    return 1.0, float(np.mean(y - x))


def fit_coefficients(features: np.ndarray, measured_ms: np.ndarray) -> tuple[float, np.ndarray]:
    """(common scale, coefficients ``a, b, c``): least squares of measured on the features (one row
    per network), or the common scale alone when the networks are too few or the fit is unusable."""
    scale = float(np.median(measured_ms / features[:, 0]))
    alone = np.array([scale, 0.0, 0.0])
    if len(measured_ms) < MIN_FIT_NETWORKS or np.linalg.matrix_rank(features) < features.shape[1]:
        return scale, alone
    coefficients = np.linalg.lstsq(features, measured_ms, rcond=None)[0]
    if coefficients[0] <= 0 or np.any(features @ coefficients <= 0) or not np.all(np.isfinite(coefficients)):
        return scale, alone
    return scale, coefficients


def fit_calibration(specs: Sequence[ArchSpec], entries: Sequence[Entries], measured_ms: Sequence[float],
                    overhead_ms: float) -> dict:
    """The calibration record stored in a table's meta.json (``overhead_ms``, one trivial call's
    cost on the device, is kept for information)."""
    measured = np.asarray(measured_ms, float)
    features = np.array([network_features(spec, e) for spec, e in zip(specs, entries)])
    scale, coefficients = fit_coefficients(features, measured)
    calibration = {"model": MODEL, "scale": scale, "coefficients": dict(zip(COEFFICIENTS, map(float, coefficients)))}
    fitted = np.array([apply_calibration(calibration, spec, e) for spec, e in zip(specs, entries)])
    slope, intercept = fit_line([count_madds(spec) for spec in specs], measured)
    return calibration | {
        "overhead_ms": overhead_ms,
        "networks": [spec.hash for spec in specs],
        "specs": [spec.to_string() for spec in specs],
        "measured_ms": list(map(float, measured)),
        "sum_ms": [float(s) for s in features[:, 0]],
        "fit_max_abs_error": float(np.max(np.abs(fitted / measured - 1))),
        "madds_baseline": {"slope_ms_per_madd": slope, "intercept_ms": intercept},
    }


def refit_calibration(calibration: dict, entries_of: Callable[[ArchSpec], Entries]) -> dict:
    """A calibration of any model fitted again with this one, from the networks and measured latencies
    it stores (``entries_of(spec)``: the spec's entries in the table)."""
    specs = [ArchSpec.from_string(s) for s in calibration["specs"]]
    return fit_calibration(specs, [entries_of(s) for s in specs], calibration["measured_ms"],
                           float(calibration.get("overhead_ms") or 0.0))


def apply_calibration(calibration: dict | None, spec: ArchSpec, entries: Entries) -> float:
    """Predicted end-to-end latency (ms) of ``spec`` with these entries; the bare sum without a
    calibration."""
    if not calibration:
        return float(sum(ms for _, ms in entries))
    features = network_features(spec, entries)
    coefficients = np.array([calibration["coefficients"][name] for name in COEFFICIENTS])
    return float(max(features @ coefficients, MIN_SHARE * calibration["scale"] * features[0]))


def madds_prediction(calibration: dict, spec: ArchSpec) -> float:
    base = calibration["madds_baseline"]
    return base["slope_ms_per_madd"] * count_madds(spec) + base["intercept_ms"]
