"""From the sum of a network's table entries to its end-to-end latency.

Each entry was timed as its own graph, so it carries one call's fixed cost (``session.run``,
input/output handling, layout reorders at the graph's edges) that a whole network pays once. The
calibration removes it and fits what is left on a few whole networks measured end to end::

    predicted = a * (sum of entries - n_units * overhead) + b

``overhead`` is the measured latency of a trivial graph (one ReLU on one value) with the same
protocol; ``a`` and ``b`` are a least-squares fit over the calibration networks. The same networks
fit the MAdds baseline (``ms = slope * MAdds + intercept``) that validation compares against.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from nas.spec.arch import ArchSpec
from nas.spec.count import count_madds

CALIBRATION_NETWORKS = 10
MODEL = "a * (sum_ms - n_units * overhead_ms) + b"


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


def reduced_sum(sum_ms: float, n_units: int, overhead_ms: float) -> float:
    return sum_ms - n_units * overhead_ms


def fit_line(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope and intercept; a non-positive slope (noise) falls back to slope 1."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) >= 2 and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        if slope > 0:
            return float(slope), float(intercept)
    return 1.0, float(np.mean(y - x))


def fit_calibration(specs: Sequence[ArchSpec], terms: Sequence[tuple[float, int]], measured_ms: Sequence[float],
                    overhead_ms: float) -> dict:
    """The calibration record stored in a table's meta.json."""
    reduced = [reduced_sum(s, n, overhead_ms) for s, n in terms]
    a, b = fit_line(reduced, measured_ms)
    madds = [count_madds(spec) for spec in specs]
    slope, intercept = fit_line(madds, measured_ms)
    fitted = np.asarray(reduced) * a + b
    return {
        "model": MODEL,
        "overhead_ms": overhead_ms,
        "a": a,
        "b": b,
        "networks": [spec.hash for spec in specs],
        "specs": [spec.to_string() for spec in specs],
        "measured_ms": list(map(float, measured_ms)),
        "sum_ms": [float(s) for s, _ in terms],
        "fit_max_abs_error": float(np.max(np.abs(fitted / np.asarray(measured_ms) - 1))),
        "madds_baseline": {"slope_ms_per_madd": slope, "intercept_ms": intercept},
    }


def apply_calibration(calibration: dict | None, sum_ms: float, n_units: int) -> float:
    if not calibration:
        return sum_ms
    reduced = reduced_sum(sum_ms, n_units, calibration["overhead_ms"])
    return calibration["a"] * reduced + calibration["b"]


def madds_prediction(calibration: dict, spec: ArchSpec) -> float:
    base = calibration["madds_baseline"]
    return base["slope_ms_per_madd"] * count_madds(spec) + base["intercept_ms"]
