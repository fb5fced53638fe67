"""The one ONNX exporter: table units, the networks a table is calibrated and validated on, and the
models ``nas export`` ships all go through :func:`to_onnx`, so the graph a table prices is the graph
that ships (the TorchScript-based exporter, opset 17; ``dynamo=False`` needs no onnxscript)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

OPSET = 17


def to_onnx(module: "nn.Module", input_shape: tuple[int, ...], target: str | Path | None = None,
            input_name: str = "input", output_name: str = "output", dynamic_batch: bool = False) -> bytes:
    """Export ``module`` (eval mode) traced at ``input_shape``; returns the ONNX bytes and writes them
    to ``target`` when given (atomically). ``dynamic_batch`` makes axis 0 of input and output dynamic."""
    import torch

    from nas.io import write_bytes_atomic
    from nas.threads import torch_threads

    buffer = io.BytesIO()
    axes = {input_name: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None
    # tracing runs a forward pass; one thread is 4x faster for the tiny unit graphs
    with torch_threads(1), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated
        torch.onnx.export(module.eval(), (torch.zeros(input_shape),), buffer, dynamo=False, opset_version=OPSET,
                          input_names=[input_name], output_names=[output_name], dynamic_axes=axes)
    data = buffer.getvalue()
    if target is not None:
        write_bytes_atomic(target, data)
    return data
