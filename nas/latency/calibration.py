"""From a network's table entries to its end-to-end latency.

Each entry was timed as its own graph. A whole network differs from the sum of its units by what
the units do to each other (caches, layouts, one call instead of many), and a table of another
device (``nas lut adapt``) differs from this one by how each kind of unit runs on the two CPUs. Both
are fitted on a few whole networks measured end to end::

    predicted = sum over unit classes c of  w_c * (sum of the network's entries of class c)

The classes are the stem, the last stage, the head, and the blocks by SE (on/off), activation
family (hard-swish or ReLU/ReLU6) and input resolution (:func:`unit_class`); a class that none of the
fitted networks has is weighted by the common scale. The weights are a ridge regression pulled
toward one common scale ``s`` (the median of measured / summed over the networks) as strongly as
``RIDGE`` networks would: with few networks, or classes that vary little between them, every weight
stays near ``s``; a class whose cost really differs in context moves away from it.

Chosen by measuring (docs/benchmarks.md, "Calibration and adaptation"): the former two-parameter line
``a * (sum - n_units * overhead) + b`` on 10 networks measured once followed their noise (73 % of
held-out networks within ±5 %, where the bare sum reached 89 % and seven classes without the
resolution 87 %). With 10 networks from three source tables (this machine's, an AMD EPYC's, another
Intel Xeon's; ``benchmarks/latency_correction.py``), classes by SE, activation and resolution put
92 / 96 / 92 % of held-out networks within ±5 % (ρ 0.984 / 0.988 / 0.975), seven classes 88 / 88 /
86 % (0.978 / 0.984 / 0.975), one scale 84 / 84 / 80 % (0.974 / 0.974 / 0.975); classes by kernel
as well (47) or by kernel instead of SE and activation did no better.

The same networks fit the MAdds baseline (``ms = slope * MAdds + intercept``) that validation
compares against.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from nas.latency.keys import UnitKey
from nas.spec.arch import ArchSpec
from nas.spec.count import count_madds

CALIBRATION_NETWORKS = 20  # whole networks a build fits its calibration on (measured: 20 beat 10 by ~2 pt within ±5 %)
MODEL = "per-class ridge toward one scale; blocks by SE, activation and resolution"
RIDGE = 2.0  # the pull toward the common scale, worth this many networks
CLASS_NAME = re.compile(r"stem|last|head|block_se[01]_(hswish|relu)_r\d{1,5}")

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


def unit_class(key: UnitKey) -> str:
    """The calibration class of a unit, e.g. ``block_se1_hswish_r14`` (or ``stem``, ``last``, ``head``)."""
    if key.kind != "block":
        return key.kind
    return f"block_se{int(key.se)}_{'hswish' if key.act == 'hswish' else 'relu'}_r{key.size}"


def class_sums(entries: Entries) -> dict[str, float]:
    """A network's summed entries per class."""
    sums: dict[str, float] = {}
    for key, ms in entries:
        cls = unit_class(key)
        sums[cls] = sums.get(cls, 0.0) + ms
    return sums


def fit_line(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope and intercept; a non-positive slope (noise) falls back to slope 1."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) >= 2 and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        if slope > 0:
            return float(slope), float(intercept)
    return 1.0, float(np.mean(y - x))


def fit_class_weights(sums: np.ndarray, measured_ms: np.ndarray, ridge: float = RIDGE) -> tuple[float, np.ndarray]:
    """(common scale, per-class weights): ridge regression of measured on the class sums (one column
    per class), pulled toward the common scale."""
    scale = float(np.median(measured_ms / sums.sum(axis=1)))
    strength = ridge * float(np.mean(sums ** 2))  # ~ `ridge` networks' worth of evidence for each class
    eye = np.eye(sums.shape[1])
    weights = np.linalg.solve(sums.T @ sums + strength * eye, sums.T @ measured_ms + strength * scale * np.ones(len(eye)))
    return scale, np.clip(weights, 0.25 * scale, 4.0 * scale)


def fit_calibration(specs: Sequence[ArchSpec], entries: Sequence[Entries], measured_ms: Sequence[float],
                    overhead_ms: float) -> dict:
    """The calibration record stored in a table's meta.json (``overhead_ms``, one trivial call's
    cost on the device, is kept for information)."""
    measured = np.asarray(measured_ms, float)
    per_network = [class_sums(e) for e in entries]
    classes = sorted({cls for sums in per_network for cls in sums})
    sums = np.array([[network.get(cls, 0.0) for cls in classes] for network in per_network])
    scale, weights = fit_class_weights(sums, measured)
    fitted = sums @ weights
    slope, intercept = fit_line([count_madds(spec) for spec in specs], measured)
    return {
        "model": MODEL,
        "ridge": RIDGE,
        "scale": scale,
        "class_weights": dict(zip(classes, map(float, weights))),
        "overhead_ms": overhead_ms,
        "networks": [spec.hash for spec in specs],
        "specs": [spec.to_string() for spec in specs],
        "measured_ms": list(map(float, measured)),
        "sum_ms": [float(s) for s in sums.sum(axis=1)],
        "fit_max_abs_error": float(np.max(np.abs(fitted / measured - 1))),
        "madds_baseline": {"slope_ms_per_madd": slope, "intercept_ms": intercept},
    }


def apply_calibration(calibration: dict | None, entries: Entries) -> float:
    """Predicted end-to-end latency (ms) of a network with these entries; the bare sum without a
    calibration."""
    if not calibration:
        return float(sum(ms for _, ms in entries))
    weights, scale = calibration["class_weights"], calibration["scale"]
    return float(sum(weights.get(unit_class(key), scale) * ms for key, ms in entries))


def madds_prediction(calibration: dict, spec: ArchSpec) -> float:
    base = calibration["madds_baseline"]
    return base["slope_ms_per_madd"] * count_madds(spec) + base["intercept_ms"]
