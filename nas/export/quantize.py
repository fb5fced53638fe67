"""int8 ONNX by onnxruntime's static quantisation (QDQ), calibrated on real images, and accuracy
of an ONNX file on a data set (to report what int8 costs).

Per-tensor weights by default: per-channel quantisation of MobileNetV3 has been reported to lose
much more accuracy. Activations are uint8 and weights int8 ("U8S8"), the fast combination of
onnxruntime's x86 kernels: measured here, S8S8 QDQ ran ~10x slower than fp32 while U8S8 matched it.
On x86 CPUs without VNNI, weights use 7 bits (``reduce_range``) to avoid the U8S8 saturation issue.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from nas.errors import NasError
from nas.export.onnx import INPUT_NAME, read_metadata, run_onnx, session, set_metadata


@dataclass(frozen=True)
class QuantConfig:
    """How the int8 model is made. ``images`` are drawn (seeded) from the calibration split."""

    images: int = 300
    batch_size: int = 32
    per_channel: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.images < 1 or self.batch_size < 1:
            raise NasError(f"calibration needs at least one image and a batch size >= 1, got "
                           f"images={self.images} batch_size={self.batch_size}")


def calibration_batches(dataset: Any, config: QuantConfig) -> Iterator[np.ndarray]:
    """Normalised float32 batches of ``config.images`` images of ``dataset`` (seeded choice)."""
    import torch

    from nas.data import Normalizer

    n = min(config.images, len(dataset))
    if n == 0:
        raise NasError("the calibration split is empty")
    generator = torch.Generator().manual_seed(config.seed)
    chosen = torch.randperm(len(dataset), generator=generator)[:n]
    normalize = Normalizer(dataset.mean, dataset.std)
    for start in range(0, n, config.batch_size):
        yield normalize(dataset.images.index_select(0, chosen[start:start + config.batch_size])).numpy()


def quantize_int8(fp32_path: str | Path, out_path: str | Path, calibration: Any,
                  config: QuantConfig = QuantConfig()) -> Path:
    """Write a static int8 (QDQ) version of the fp32 ONNX model, calibrated on ``calibration``
    (an :class:`nas.data.ImageDataset`); the fp32 file's metadata is carried over."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = calibration_batches(calibration, config)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="nas-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=config.per_channel, reduce_range=needs_reduce_range(),
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    n = min(config.images, len(calibration))
    set_metadata(out_path, read_metadata(fp32_path) | {
        "quantization": describe(config, n)})
    return out_path


def describe(config: QuantConfig, images: int) -> str:
    weights = "per-channel" if config.per_channel else "per-tensor"
    bits = "7-bit (reduce_range, no VNNI)" if needs_reduce_range() else "int8"
    return (f"onnxruntime static quantisation, QDQ, uint8 activations, {bits} {weights} weights, "
            f"MinMax calibration on {images} images")


def needs_reduce_range() -> bool:
    """True on x86 CPUs without VNNI, where U8S8 products can saturate (onnxruntime's advice)."""
    import platform

    from nas.latency.standalone_measure import isa_flags

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    return not any("vnni" in flag for flag in isa_flags())


def onnx_predictions(path: str | Path, dataset: Any, limit: int | None = None, batch_size: int = 256,
                     threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(predicted classes, true labels) of an ONNX classifier on the first ``limit`` images."""
    import torch

    from nas.data import eval_batches

    sess = session(path, threads)
    data = dataset if limit is None or limit >= len(dataset) else dataset.select(torch.arange(limit))
    predicted, labels = [], []
    for images, batch_labels in eval_batches(data, batch_size):
        predicted.append(run_onnx(sess, images.numpy()).argmax(1))
        labels.append(batch_labels.numpy())
    if not predicted:
        raise NasError("cannot measure accuracy on an empty split")
    return np.concatenate(predicted), np.concatenate(labels)
