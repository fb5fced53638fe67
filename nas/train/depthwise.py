"""Depthwise convolutions whose weight gradient is computed without oneDNN's, where that is slow.

On CPU, oneDNN's weight gradient of a depthwise convolution is slow beyond 3x3 kernels: for the
Fashion-MNIST baseline's 5x5 depthwise layers it took 2-9 ms per layer at batch 128 (8.9 ms for the
576-channel 4x4 one) on an Intel Xeon (model 167, AVX-512, 2 threads), and 68 ms for that layer on an
AMD EPYC with AVX2 only (family 23), where a 4x4 map under a 5x5 kernel takes a slow path. Two
replacements, each exact up to the order of the sums:

* **shifted** (:func:`depthwise_weight_grad`): a sum over the kernel's taps of (output gradient x
  shifted input), reduced over batch and space. Inductor turns it into one vectorised loop (1.2 ms for
  that layer on the Intel Xeon); eagerly it is slower than oneDNN, so it runs only inside a compiled
  model (:func:`nas.train.compiled.compiled_model`).
* **batched** (:func:`depthwise_weight_grad_batched`): per channel, the product of the output gradient
  and the input over the batch (one batched matrix multiply, C x (HoWo x N) @ (N x HW)), whose entries
  are then summed by tap. Its cost grows with the map's area squared, so it wins on small maps: on the
  AMD EPYC (AVX2, 2 threads, batch 128) 7.7 against 68 ms for the 576-channel 4x4 layer, 9.1 against
  12.3 ms for the 240-channel 7x7 one, but 11 against 1.4 ms for a 3x3 kernel on a 14x14 map.
  :func:`batched_pays` is the rule measured there; the trainer uses it, compiled or not, on CPUs without
  AVX-512, and compiled (beside the shifted one) on AMD's Zen 5 (:func:`nas.train.cpu.small_map_depthwise`).

A model's layers are patched in for a training by :mod:`nas.train.layer_patches`; the supernet calls
:func:`depthwise_conv`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nas.train.reductions import as_rows, channel_sums

SHIFTED, BATCHED = "shifted", "batched"

# The shifted weight gradient sums each tap in two stages (:func:`nas.train.reductions.channel_sums`)
# where the output map has at least this many rows (batch x height x width). Measured (AMD EPYC family
# 26, 2 threads, fp32, batch 128, compiled, one layer): 240 channels 5x5 on 7x7 0.59 against 1.25 ms,
# 72 channels 3x3 stride 2 from 14x14 0.17 against 0.25 ms, 16 channels 3x3 stride 2 from 28x28 0.11
# against 0.24 ms; on 4x4 output maps (2,048 rows: 576 channels 5x5 on 4x4, 288 channels 5x5 stride 2
# from 7x7) 0.45 against 0.43 ms and 0.41 against 0.28 ms, so those keep one stage.
TWO_STAGE_MIN_ROWS = 4096


def _tap_sum(product: torch.Tensor) -> torch.Tensor:
    """Per-channel sum of an (N, C, Ho, Wo) product: in two stages over large maps, else in one."""
    n, _, out_h, out_w = product.shape
    if n * out_h * out_w < TWO_STAGE_MIN_ROWS:
        return product.sum((0, 2, 3))
    return channel_sums(as_rows(product))


def depthwise_weight_grad(x: torch.Tensor, grad: torch.Tensor, kernel: int, stride: int,
                          padding: int) -> torch.Tensor:
    """Weight gradient of a depthwise ``kernel`` x ``kernel`` convolution, as a sum over its taps.

    ``x`` is the layer's input (N, C, H, W), ``grad`` the gradient of its output (N, C, Ho, Wo).
    """
    out_h, out_w = grad.shape[2], grad.shape[3]
    padded = F.pad(x, (padding, padding, padding, padding))
    rows, cols = stride * (out_h - 1) + 1, stride * (out_w - 1) + 1
    taps = [_tap_sum(grad * padded[:, :, i:i + rows:stride, j:j + cols:stride])
            for i in range(kernel) for j in range(kernel)]
    return torch.stack(taps, 1).reshape(x.shape[1], 1, kernel, kernel)


def _tap_index(height: int, width: int, out_h: int, out_w: int, kernel: int, stride: int,
               padding: int) -> torch.Tensor:
    """(kernel*kernel, out_h*out_w): for each tap and output position, the flat index of the
    (output position, input position) pair it multiplies, or ``out_h*out_w*height*width`` (a zero
    appended past the end) where the tap falls on the padding. A few small tensor operations, built
    each call (a cache would be a call torch.compile warns about)."""
    tap_rows = torch.arange(kernel).repeat_interleave(kernel)[:, None]
    tap_cols = torch.arange(kernel).repeat(kernel)[:, None]
    out_rows = torch.arange(out_h).repeat_interleave(out_w)[None, :]
    out_cols = torch.arange(out_w).repeat(out_h)[None, :]
    rows, cols = out_rows * stride + tap_rows - padding, out_cols * stride + tap_cols - padding
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    flat = (out_rows * out_w + out_cols) * (height * width) + rows * width + cols
    return torch.where(inside, flat, out_h * out_w * height * width)


def depthwise_weight_grad_batched(x: torch.Tensor, grad: torch.Tensor, kernel: int, stride: int,
                                  padding: int) -> torch.Tensor:
    """The same weight gradient as :func:`depthwise_weight_grad`, from one batched matrix multiply:
    for each channel, every (output position, input position) product summed over the batch, then the
    pairs of each tap summed."""
    n, channels, height, width = x.shape
    out_h, out_w = grad.shape[2], grad.shape[3]
    g = grad.permute(1, 0, 2, 3).contiguous().view(channels, n, out_h * out_w)
    xs = x.permute(1, 0, 2, 3).contiguous().view(channels, n, height * width)
    pairs = torch.bmm(g.transpose(1, 2), xs).view(channels, -1)
    pairs = torch.cat([pairs, pairs.new_zeros(channels, 1)], 1)  # the padding's zero
    index = _tap_index(height, width, out_h, out_w, kernel, stride, padding)
    return pairs[:, index].sum(2).view(channels, 1, kernel, kernel)


def batched_pays(size: int, kernel: int, stride: int) -> bool:
    """Whether :func:`depthwise_weight_grad_batched` beats oneDNN for a layer on a ``size`` x ``size``
    input: a kernel of 5 or more, stride 1, on a map of at most 7x7 (measured as above)."""
    return kernel >= 5 and stride == 1 and size <= 7


def depthwise_conv(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int, small_maps: bool,
                   shifted: bool = False) -> torch.Tensor:
    """A depthwise convolution (no bias) and the weight gradient it takes: with ``small_maps``, while
    gradients are recorded, the batched one for a large kernel on a small map (:func:`batched_pays`);
    otherwise the shifted one with ``shifted`` (inside a compiled model), else aten's. The trainer's
    patched layers and the supernet's sliced ones both call it."""
    if small_maps and torch.is_grad_enabled() and batched_pays(x.shape[-1], weight.shape[-1], stride):
        return DepthwiseConv.apply(x, weight, stride, padding, BATCHED)
    if shifted:
        return DepthwiseConv.apply(x, weight, stride, padding, SHIFTED)
    return F.conv2d(x, weight, None, stride, padding, 1, x.shape[1])


class DepthwiseConv(torch.autograd.Function):
    """A depthwise convolution (no bias, square kernel, 'same'-style padding) whose weight gradient
    is computed by ``method`` (``shifted`` or ``batched``); its forward and input gradient are aten's."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int,
                method: str = SHIFTED) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding, ctx.method = stride, padding, method
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
            weight_grad = depthwise_weight_grad_batched if ctx.method == BATCHED else depthwise_weight_grad
            grad_w = weight_grad(x, grad, weight.shape[-1], stride, padding)
        return grad_x, grad_w, None, None, None
