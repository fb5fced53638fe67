"""The runtimes a unit or network can be timed on: onnxruntime (default) and PyTorch eager.

A *runner* is a zero-argument callable doing one batch-1 inference on a fixed input; the timing
protocol (``standalone_measure.time_interleaved``) only ever sees runners.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from nas.latency.standalone_measure import fixed_input, ort_runner, ort_session

if TYPE_CHECKING:
    from torch import nn

RUNTIMES = ("onnxruntime", "torch")

Runner = Callable[[], object]


def onnx_runner(model: bytes | str | Path, threads: int, seed: int = 0) -> Runner:
    """Runner for an ONNX graph (bytes or file) on onnxruntime with the protocol's session options."""
    return ort_runner(ort_session(model, threads), seed)


def torch_runner(module: "nn.Module", input_shape: tuple[int, ...], threads: int, seed: int = 0) -> Runner:
    """Runner for a module in PyTorch eager mode (inference_mode, ``threads`` intra-op threads)."""
    import torch

    torch.set_num_threads(threads)
    module = module.eval()
    x = torch.from_numpy(fixed_input(input_shape, seed))

    def run() -> object:
        with torch.inference_mode():
            return module(x)

    return run


def runtime_version(runtime: str) -> str:
    """Installed version of a runtime, read from package metadata (no import of torch)."""
    from importlib.metadata import version

    return version("torch" if runtime == "torch" else "onnxruntime")
