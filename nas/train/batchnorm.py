"""BatchNorm's training step with its per-channel sums in two stages, for compiled trainings.

Inductor's CPU code for ``nn.BatchNorm2d`` on a channels-last tensor reduces its statistics one slice
of 16-32 channels at a time over all rows (batch x height x width). :class:`BatchNormTraining` computes
the training forward and its backward (written out, as aten's, from the saved input and batch
statistics) with the per-channel sums over row blocks first and then over the blocks
(:func:`nas.train.reductions.channel_sums`), which inductor splits across the threads by block; the
running statistics are updated as ``nn.BatchNorm2d`` does.

Measured (AMD EPYC family 26 model 2, 2 threads, idle; ``benchmarks/train_throughput.py --compile
--batchnorm``, side by side): the compiled training step of the Fashion-MNIST baseline 1.03-1.17x as
fast in bf16 (five runs) and 1.18x in fp32; whole 2-epoch trainings in bf16 0.92-1.08x, median 1.04x
(five alternating pairs, the machine's own spread about ±12 %); its BatchNorm + hard-swish layers
alone, forward and backward at batch 128 in bf16, 1.19 against 1.44 ms at 240 channels on 7x7. Eager,
aten's kernels are faster (BatchNorm alone, forward and backward, same CPU: 0.78 against 4.6 ms at 240
channels on 7x7 in bf16, 2.1 against 3.4 ms in fp32), so the trainer patches it in for compiled
trainings only (:mod:`nas.train.layer_patches`).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from nas.train.reductions import as_rows, channel_sums


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) as (N*H*W, C) in fp32 or wider: a view for a channels-last tensor of that dtype."""
    return as_rows(x).to(torch.promote_types(x.dtype, torch.float32))


def _from_rows(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N*H*W, C) back to ``like``'s shape and dtype, channels-last."""
    n, c, h, w = like.shape
    return rows.to(like.dtype).view(n, h, w, c).permute(0, 3, 1, 2)


class BatchNormTraining(torch.autograd.Function):
    """``F.batch_norm`` in training mode on an (N, C, H, W) input: returns the output (in the input's
    dtype, channels-last), the batch mean and the biased batch variance. Statistics and gradients
    are computed in fp32 (in float64 for a float64 input)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float):
        rows = _as_rows(x)
        count = rows.shape[0]
        mean = channel_sums(rows) / count
        var = channel_sums((rows - mean) ** 2) / count
        invstd = torch.rsqrt(var + eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.mark_non_differentiable(mean, var)
        return _from_rows((rows - mean) * invstd * weight + bias, x), mean, var

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _grad_mean: torch.Tensor, _grad_var: torch.Tensor):
        x, weight, mean, invstd = ctx.saved_tensors
        rows, grad_rows = _as_rows(x), _as_rows(grad)
        count = rows.shape[0]
        normalised = (rows - mean) * invstd
        grad_bias = channel_sums(grad_rows)
        grad_weight = channel_sums(grad_rows * normalised)
        grad_x = (weight * invstd) * (grad_rows - grad_bias / count - normalised * (grad_weight / count))
        return _from_rows(grad_x, x), grad_weight, grad_bias, None


def patchable(module: nn.Module) -> bool:
    """A plain ``nn.BatchNorm2d`` with weights, running statistics and a momentum."""
    return (type(module) is nn.BatchNorm2d and module.affine and module.track_running_stats
            and module.momentum is not None and "forward" not in vars(module))


def batch_norm_forward(module: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``: in training, through :class:`BatchNormTraining`, updating the running statistics
    and ``num_batches_tracked`` as ``nn.BatchNorm2d`` does; otherwise the module's own forward."""
    count = x.numel() // x.shape[1] if x.dim() == 4 else 0
    if not module.training or count < 2:  # evaluation, or a shape BatchNorm2d itself rejects
        return type(module).forward(module, x)
    y, mean, var = BatchNormTraining.apply(x, module.weight, module.bias, module.eps)
    with torch.no_grad():
        momentum = module.momentum
        module.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        module.running_var.mul_(1 - momentum).add_(var * (count / (count - 1)), alpha=momentum)
        module.num_batches_tracked.add_(1)
    return y
