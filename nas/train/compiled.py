"""Compiled training steps: ``torch.compile`` of the model, with a depthwise weight gradient it can fuse.

On CPU, oneDNN's weight gradient of a depthwise convolution is slow beyond 3x3 kernels: for the
Fashion-MNIST baseline's 5x5 depthwise layers it took 2-9 ms per layer at batch 128 (8.9 ms for the
576-channel 4x4 one), and the 5x5 depthwise backward was about a quarter of the training step (Intel Xeon
model 167, 2 threads, torch.profiler). Written as a sum over the
kernel's taps of (output gradient x shifted input), reduced over batch and space, inductor turns it
into one vectorised loop (1.2 ms for that layer). Eagerly that sum is slower than oneDNN, so the
depthwise layers use it only inside a compiled model (:func:`compiled_model`; the layers are patched
by :mod:`nas.train.layer_patches`).

``torch.compile`` costs tens of seconds on the first step (a C++ compiler builds the kernels; the
compiled graphs are cached on disk for later runs of the same shapes), so ``compile: auto`` uses it
only for trainings of at least :data:`nas.train.cpu.LONG_TRAINING_STEPS` steps, and only where a C++ compiler is found.
Any failure to compile falls back to the eager model with one line on stderr.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.train.cpu import LONG_TRAINING_STEPS



@functools.lru_cache(maxsize=1)
def compiler_available() -> bool:
    """Whether inductor can build CPU kernels here: a C++ compiler on PATH (or in $CXX)."""
    names = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
    return any(name and shutil.which(name) for name in names)


def resolve_compile(setting: str, total_steps: int) -> bool:
    """``on`` / ``off`` as given; ``auto`` compiles long trainings where a C++ compiler exists."""
    if setting == "off":
        return False
    if setting == "on":
        return True
    return total_steps >= LONG_TRAINING_STEPS and compiler_available()


def depthwise_weight_grad(x: torch.Tensor, grad: torch.Tensor, kernel: int, stride: int,
                          padding: int) -> torch.Tensor:
    """Weight gradient of a depthwise ``kernel`` x ``kernel`` convolution, as a sum over its taps.

    ``x`` is the layer's input (N, C, H, W), ``grad`` the gradient of its output (N, C, Ho, Wo).
    """
    out_h, out_w = grad.shape[2], grad.shape[3]
    padded = F.pad(x, (padding, padding, padding, padding))
    rows, cols = stride * (out_h - 1) + 1, stride * (out_w - 1) + 1
    taps = [(grad * padded[:, :, i:i + rows:stride, j:j + cols:stride]).sum((0, 2, 3))
            for i in range(kernel) for j in range(kernel)]
    return torch.stack(taps, 1).reshape(x.shape[1], 1, kernel, kernel)


class DepthwiseConv(torch.autograd.Function):
    """A depthwise convolution (no bias, square kernel, 'same'-style padding) whose weight gradient
    is :func:`depthwise_weight_grad`; its forward and input gradient are aten's."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, None, stride, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        stride, padding = ctx.stride, ctx.padding
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [stride, stride], [padding, padding], [1, 1], False, [0, 0], x.shape[1],
                [True, False, False])[0]
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = depthwise_weight_grad(x, grad, weight.shape[-1], stride, padding)
        return grad_x, grad_w, None, None


# Each architecture trained in one process is another compilation of ``Network.forward``; past this
# many, a first step fails (and trains eagerly, see the trainer) rather than silently running the
# shifted depthwise gradient uncompiled, where it is slower than oneDNN's.
RECOMPILE_LIMIT = 64


def compiled_model(model: nn.Module) -> nn.Module | None:
    """``torch.compile(model)``, or None (with one line on stderr) when this torch cannot compile.

    Random ops (dropout) use aten's generator, so a compiled training draws the same masks as an
    eager one and a seed means the same training either way."""
    try:
        import torch._dynamo.config as dynamo_config
        import torch._inductor.config as inductor_config

        inductor_config.fallback_random = True
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
        dynamo_config.fail_on_recompile_limit_hit = True
        return torch.compile(model)
    except Exception as exc:  # noqa: BLE001 - any failure means: train eagerly
        warn_eager(exc)
        return None


def warn_eager(exc: BaseException) -> None:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    print(f"torch.compile failed ({type(exc).__name__}: {first}); training eagerly", file=sys.stderr, flush=True)
