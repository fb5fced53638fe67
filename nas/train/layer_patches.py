"""Training-time forwards of layers whose default CPU kernels are slow, patched in for one training.

Each patched forward computes the same function as the layer's own, with the same parameters, so the
model, its checkpoints and its export are untouched; only the kernels the training calls change:

* squeeze-and-excitation: its two 1x1 convolutions act on a 1x1 map, and oneDNN's convolution is
  ~4x slower there than the same product as a matrix multiply (forward + backward at batch 128: 1.4 ms
  against 0.36 ms for the 576->144 layer in fp32, 1.8 against 0.32 ms in bf16; Intel Xeon model 167,
  2 threads). The trainer runs them as ``F.linear`` on the pooled vector.
* grouped convolutions under bf16 autocast run in fp32: their bf16 backward is slow in oneDNN. In a
  compiled model, depthwise ones of stride 1 stay in bf16 (:func:`keeps_bf16`).
* depthwise convolutions in a compiled model run through :class:`nas.train.depthwise.DepthwiseConv`
  with the shifted weight gradient, which inductor fuses; where ``small_maps`` is asked for (compiled
  or not), those with a large kernel on a small map use its batched weight gradient
  (:func:`nas.train.depthwise.depthwise_conv`).
* BatchNorm layers in a compiled model compute their batch statistics and gradients as two-stage
  sums (:mod:`nas.train.batchnorm`), which inductor splits across the threads better than its own.
"""

from __future__ import annotations

import contextlib
import types
from typing import Callable, Iterator

import torch
import torch.nn as nn

from nas.models.layers import SqueezeExcite, squeeze_excite_gate
from nas.train.batchnorm import batch_norm_forward, patchable as patchable_batchnorm
from nas.train.depthwise import depthwise_conv


def is_depthwise(module: nn.Module) -> bool:
    """A grouped Conv2d with one input channel per group, square kernel and stride, no bias."""
    return (isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels
            and module.groups == module.out_channels and module.bias is None
            and module.kernel_size[0] == module.kernel_size[1] and module.stride[0] == module.stride[1]
            and isinstance(module.padding, tuple) and module.padding[0] == module.padding[1]
            and module.dilation == (1, 1) and module.padding_mode == "zeros")


def keeps_bf16(module: nn.Module, shifted: bool) -> bool:
    """Whether a grouped convolution stays in bf16 under autocast: a depthwise one of stride 1 in a
    compiled model (``shifted``), whose weight gradient is then not oneDNN's. oneDNN's bf16 forward and
    input gradient are as fast as fp32's or faster at stride 1, and every tensor around the layer
    (its BatchNorm, activation and their gradients) is then half the bytes; at stride 2 oneDNN's bf16
    input gradient is about 100x slower (AMD EPYC family 26, 2 threads, batch 128, channels-last:
    20 against 0.19 ms at 288 channels 5x5 from 7x7), and with it in fp32 from upcast tensors the
    whole step gained nothing. The whole compiled bf16 step, stride-1 depthwise layers in bf16 against
    all in fp32, the same CPU: 1.01-1.06x with its depthwise rule, 1.07x with the tap sum for every
    depthwise layer (the Zen 4's and the Intel Xeon's); 10 epochs of the Fashion-MNIST baseline, three
    seeds: test 92.07 against 91.91 % on average."""
    return shifted and is_depthwise(module) and module.stride[0] == 1


def _depthwise_forward(fp32: bool, shifted: bool, small_maps: bool) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    def forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False) if fp32 else contextlib.nullcontext():
            x = x.float() if fp32 else x
            if (shifted or small_maps) and module.bias is None:  # a BatchNorm-folded copy has a bias
                return depthwise_conv(x, module.weight, module.stride[0], module.padding[0], small_maps, shifted)
            return type(module).forward(module, x)
    return forward


def _squeeze_excite_forward(module: SqueezeExcite, x: torch.Tensor) -> torch.Tensor:
    """:meth:`SqueezeExcite.forward` with its 1x1 convolutions as matrix products on the pooled vector."""
    return x * squeeze_excite_gate(x, module.fc1.weight, module.fc1.bias, module.fc2.weight, module.fc2.bias)


def _patchable_se(module: nn.Module) -> bool:
    return (type(module) is SqueezeExcite and "forward" not in vars(module)
            and all(fc.kernel_size == (1, 1) and fc.groups == 1 and fc.bias is not None
                    for fc in (module.fc1, module.fc2)))


@contextlib.contextmanager
def patched_layers(model: nn.Module, fp32: bool, shifted: bool, small_maps: bool = False,
                   batchnorm: bool = False, bf16_depthwise: bool = True) -> Iterator[None]:
    """Within the block, the model's squeeze-and-excitation layers run as matrix products, its grouped
    convolutions outside autocast in fp32 (``fp32``; with ``bf16_depthwise``, not those
    :func:`keeps_bf16` keeps in bf16) and its depthwise ones through
    :func:`depthwise_conv`: those with a large kernel on a small map with the batched weight gradient
    (``small_maps``), the others with the shifted one (``shifted``); its BatchNorm layers train with
    two-stage sums (``batchnorm``). Each module's own ``forward`` is restored after."""
    patched = []
    for module in model.modules():
        forward = None
        if _patchable_se(module):
            forward = _squeeze_excite_forward
        elif batchnorm and patchable_batchnorm(module):
            forward = batch_norm_forward
        elif (fp32 or shifted or small_maps) and isinstance(module, nn.Conv2d) and module.groups > 1:
            depthwise = is_depthwise(module)
            in_fp32 = fp32 and not (bf16_depthwise and keeps_bf16(module, shifted))
            forward = _depthwise_forward(in_fp32, shifted and depthwise, small_maps and depthwise)
        if forward is not None:
            module.forward = types.MethodType(forward, module)  # bound: copies call their own weights
            patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward
