"""ONNX export with metadata, and the check that onnxruntime computes what PyTorch computes.

The graph has one input ``input`` (float32 NCHW, already normalised: ``(x / 255 - mean) / std``)
and one output ``logits``; the batch axis is dynamic. Metadata (spec string, hash, classes, input
shape, normalisation) is stored as ONNX ``metadata_props``, readable without torch through
``onnxruntime.InferenceSession(path).get_modelmeta().custom_metadata_map``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import NasError

from nas.models.onnx import OPSET
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
TOLERANCE = 1e-4  # max abs difference allowed between an exported model and PyTorch


class ExportCheckError(NasError):
    """An exported file does not reproduce the PyTorch model (or fails the ONNX checker)."""


def export_onnx(model: Any, spec: Any, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Export ``model`` (built from ``spec``) to ``path`` with opset 17, a dynamic batch axis and
    ``metadata`` as model properties."""
    from nas.models.onnx import to_onnx

    path = Path(path)
    to_onnx(model, (1, spec.in_channels, spec.resolution, spec.resolution), path, input_name=INPUT_NAME,
            output_name=OUTPUT_NAME, dynamic_batch=True)
    if metadata:
        set_metadata(path, metadata)
    return path


def set_metadata(path: str | Path, metadata: dict[str, str]) -> None:
    """Add (or replace) string properties in an ONNX file's ``metadata_props``."""
    import onnx

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props} | {k: str(v) for k, v in metadata.items()}
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ONNX file's metadata properties (onnxruntime only, no torch needed)."""
    return dict(session(path).get_modelmeta().custom_metadata_map)


def session(path: str | Path, threads: int = 1) -> Any:
    """An onnxruntime CPU session with explicit thread counts (for checks and accuracy, not timing;
    latency is measured by :mod:`nas.latency`)."""
    from nas.latency.standalone_measure import ort_session

    return ort_session(str(path), threads)


def run_onnx(sess: Any, x: np.ndarray) -> np.ndarray:
    return sess.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})[0]


def random_batch(spec: Any, batch: int = 4, seed: int = 0) -> np.ndarray:
    """A fixed standard-normal batch shaped like normalised inputs of ``spec``."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, spec.in_channels, spec.resolution, spec.resolution), dtype=np.float32)


def torch_outputs(model: Any, x: np.ndarray) -> np.ndarray:
    import torch

    model.eval()
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def check_onnx(path: str | Path, model: Any, spec: Any, batch: int = 4, seed: int = 0,
               tolerance: float = TOLERANCE, expected: np.ndarray | None = None) -> float:
    """Run ``onnx.checker`` and compare onnxruntime with PyTorch on a random batch.

    Returns the max abs difference; raises :class:`ExportCheckError` above ``tolerance``.
    ``expected`` (PyTorch's outputs on ``random_batch(spec, batch, seed)``) saves a forward pass.
    """
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportCheckError(f"{path} fails onnx.checker: {str(exc).splitlines()[0]}") from None
    x = random_batch(spec, batch, seed)
    expected = torch_outputs(model, x) if expected is None else expected
    diff = max_abs_diff(run_onnx(session(path), x), expected)
    if not diff <= tolerance:
        raise ExportCheckError(f"{path}: onnxruntime and PyTorch outputs differ by {diff:.3g} (> {tolerance:g})")
    return diff


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        raise ExportCheckError(f"output shapes differ: {a.shape} vs {b.shape}")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
