"""BatchNorm's two-stage training step (nas.train.batchnorm) against nn.BatchNorm2d."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from nas.train.batchnorm import BatchNormTraining, batch_norm_forward, patchable
from nas.train.layer_patches import patched_layers
from nas.train.reductions import channel_sums, row_blocks


def test_row_blocks_divide_the_rows():
    assert [row_blocks(n) for n in (6272, 2048, 100, 98, 49, 1)] == [16, 16, 4, 2, 1, 1]


def test_channel_sums_are_the_column_sums():
    rows = torch.randn(6 * 49, 5, dtype=torch.float64)
    torch.testing.assert_close(channel_sums(rows), rows.sum(0))


def reference_and_patched(channels: int, momentum: float = 0.1) -> tuple[nn.BatchNorm2d, nn.BatchNorm2d]:
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(channels, eps=1e-3, momentum=momentum).double()
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.uniform_(-0.5, 0.5)
        ref.running_var.uniform_(0.5, 2.0)
    bn = nn.BatchNorm2d(channels, eps=1e-3, momentum=momentum).double()
    bn.load_state_dict(ref.state_dict())
    return ref, bn


@pytest.mark.parametrize("shape", [(8, 6, 7, 7), (3, 5, 4, 4), (5, 4, 3, 1)])
@pytest.mark.parametrize("channels_last", [True, False])
def test_training_step_matches_batchnorm2d(shape, channels_last):
    """Output, input and parameter gradients, running statistics and the batch count, over two steps."""
    ref, bn = reference_and_patched(shape[1])
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):
        x = torch.randn(shape, generator=gen, dtype=torch.float64) * 3 + 1
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        grad = torch.randn(shape, generator=gen, dtype=torch.float64)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        want, got = ref(xa), batch_norm_forward(bn, xb)
        torch.testing.assert_close(got, want)
        want_grads = torch.autograd.grad(want, (xa, ref.weight, ref.bias), grad)
        got_grads = torch.autograd.grad(got, (xb, bn.weight, bn.bias), grad)
        for a, b in zip(got_grads, want_grads):
            torch.testing.assert_close(a, b)
    for name, buffer in ref.named_buffers():
        torch.testing.assert_close(dict(bn.named_buffers())[name], buffer)
    assert int(bn.num_batches_tracked) == 2


def test_bf16_input_gives_bf16_output_and_fp32_statistics():
    ref, bn = reference_and_patched(8)
    ref, bn = ref.float(), bn.float()
    x = torch.randn(16, 8, 5, 5).bfloat16().contiguous(memory_format=torch.channels_last)
    got = batch_norm_forward(bn, x)
    assert got.dtype == torch.bfloat16 and bn.running_mean.dtype == torch.float32
    torch.testing.assert_close(got.float(), ref(x.float()), atol=0.03, rtol=0.02)
    torch.testing.assert_close(bn.running_var, ref.running_var, atol=1e-2, rtol=1e-2)


def test_function_passes_gradcheck():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.rand(3, generator=gen, dtype=torch.float64).add(0.5).requires_grad_()
    bias = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, w, b: BatchNormTraining.apply(a, w, b, 1e-3)[0], (x, weight, bias))


def test_evaluation_and_one_value_per_channel_take_the_modules_own_forward():
    ref, bn = reference_and_patched(4)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    ref.eval(), bn.eval()
    torch.testing.assert_close(batch_norm_forward(bn, x), ref(x))
    assert int(bn.num_batches_tracked) == 0
    bn.train()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        batch_norm_forward(bn, torch.randn(1, 4, 1, 1, dtype=torch.float64))


def test_only_plain_batchnorm_with_weights_statistics_and_momentum_is_patched():
    plain = nn.BatchNorm2d(4)
    others = [nn.BatchNorm2d(4, affine=False), nn.BatchNorm2d(4, track_running_stats=False),
              nn.BatchNorm2d(4, momentum=None), nn.SyncBatchNorm(4), nn.BatchNorm1d(4)]
    assert patchable(plain) and not any(patchable(m) for m in others)
    model = nn.Sequential(plain, *others[:3])
    with patched_layers(model, fp32=False, shifted=False, batchnorm=True):
        assert "forward" in vars(plain) and not any("forward" in vars(m) for m in others[:3])
    assert "forward" not in vars(plain)
    with patched_layers(model, fp32=False, shifted=False):
        assert "forward" not in vars(plain)


@pytest.mark.slow
def test_compiled_training_step_matches_batchnorm2d():
    """The patched layer inside torch.compile: the same output and gradients as aten's, in fp32."""
    ref, bn = reference_and_patched(16)
    ref, bn = ref.float(), bn.float()
    model = nn.Sequential(bn, nn.Hardswish())
    x = torch.randn(32, 16, 7, 7).contiguous(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    want = nn.functional.hardswish(ref(xa))
    with patched_layers(model, fp32=False, shifted=False, batchnorm=True):
        got = torch.compile(model)(xb)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    grad = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad(got, (xb, bn.weight, bn.bias), grad),
                    torch.autograd.grad(want, (xa, ref.weight, ref.bias), grad)):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(bn.running_var, ref.running_var)
