"""Compiled training: the depthwise weight gradient against aten's, the compile settings, and the
fall-back to eager steps when torch.compile fails."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.errors import NasError
from nas.experiment import TrainSection
from nas.models import build_model
from nas.train import TrainConfig, train
from nas.train.trainer import fold_batchnorm
from nas.train import compiled as compiled_mod
from nas.train.compiled import resolve_compile
from nas.train.depthwise import (BATCHED, SHIFTED, TWO_STAGE_MIN_ROWS, DepthwiseConv, batched_pays,
                                 depthwise_weight_grad, depthwise_weight_grad_batched)
from nas.train.layer_patches import is_depthwise, patched_layers
from nas.train.cpu import LONG_TRAINING_STEPS
from tests.test_trainer import toy_splits, tiny_spec


def aten_grads(x, weight, grad, stride, padding):
    x, weight = x.clone().requires_grad_(), weight.clone().requires_grad_()
    out = F.conv2d(x, weight, None, stride, padding, 1, x.shape[1])
    return torch.autograd.grad(out, (x, weight), grad)


@pytest.mark.parametrize("kernel, stride, size", [(3, 1, 7), (5, 1, 4), (5, 2, 7), (7, 2, 14), (7, 1, 3)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("method", [SHIFTED, BATCHED])
def test_depthwise_gradients_match_aten(kernel, stride, size, channels_last, method):
    gen = torch.Generator().manual_seed(kernel * 10 + stride)
    x = torch.randn(3, 6, size, size, generator=gen, dtype=torch.float64)
    weight = torch.randn(6, 1, kernel, kernel, generator=gen, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    padding = (kernel - 1) // 2
    out_size = (size + 2 * padding - kernel) // stride + 1
    grad = torch.randn(3, 6, out_size, out_size, generator=gen, dtype=torch.float64)
    want_x, want_w = aten_grads(x, weight, grad, stride, padding)
    weight_grad = depthwise_weight_grad_batched if method == BATCHED else depthwise_weight_grad
    torch.testing.assert_close(weight_grad(x, grad, kernel, stride, padding), want_w)
    xr, wr = x.clone().requires_grad_(), weight.clone().requires_grad_()
    out = DepthwiseConv.apply(xr, wr, stride, padding, method)
    torch.testing.assert_close(out, F.conv2d(x, weight, None, stride, padding, 1, 6))
    got_x, got_w = torch.autograd.grad(out, (xr, wr), grad)
    torch.testing.assert_close(got_x, want_x)
    torch.testing.assert_close(got_w, want_w)


@pytest.mark.parametrize("kernel, stride", [(3, 1), (5, 2)])
def test_shifted_weight_gradient_sums_large_maps_in_two_stages_and_matches_aten(kernel, stride):
    """Output maps of at least TWO_STAGE_MIN_ROWS rows take the two-stage sums: the same gradient."""
    gen = torch.Generator().manual_seed(kernel)
    size, padding = 18, (kernel - 1) // 2
    out_size = (size + 2 * padding - kernel) // stride + 1
    batch = TWO_STAGE_MIN_ROWS // out_size ** 2 + 1
    x = torch.randn(batch, 3, size, size, generator=gen, dtype=torch.float64)
    x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(3, 1, kernel, kernel, generator=gen, dtype=torch.float64)
    grad = torch.randn(batch, 3, out_size, out_size, generator=gen, dtype=torch.float64)
    assert batch * out_size ** 2 >= TWO_STAGE_MIN_ROWS
    torch.testing.assert_close(depthwise_weight_grad(x, grad, kernel, stride, padding),
                               aten_grads(x, weight, grad, stride, padding)[1])


@pytest.mark.parametrize("method", [SHIFTED, BATCHED])
def test_depthwise_function_passes_gradcheck(method):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 1, 5, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: DepthwiseConv.apply(a, b, 2, 2, method), (x, weight))


def test_compiled_trainings_take_the_batched_weight_gradient_beside_the_tap_sum_on_amd_family_26_and_newer_only():
    from nas.train.cpu import small_map_depthwise

    avx512 = frozenset({"avx2", "avx512f", "avx512bw", "avx512_bf16"})
    zen5, zen4, xeon = ("AuthenticAMD", 26), ("AuthenticAMD", 25), ("GenuineIntel", 6)
    assert small_map_depthwise(avx512, compiled=True, family=zen5)
    assert small_map_depthwise(avx512, compiled=True, family=("AuthenticAMD", 27))
    assert not small_map_depthwise(avx512, compiled=False, family=zen5)  # eager: oneDNN's elsewhere
    assert not small_map_depthwise(avx512, compiled=True, family=zen4)
    assert not small_map_depthwise(avx512, compiled=True, family=xeon)
    assert not small_map_depthwise(avx512, compiled=True, family=("", None))
    for family in (zen4, xeon, ("", None)):  # without AVX-512 always, compiled or not
        assert small_map_depthwise(frozenset({"avx2", "fma"}), compiled=False, family=family)


def test_the_batched_weight_gradient_is_used_for_large_kernels_on_small_maps_only():
    assert batched_pays(4, 5, 1) and batched_pays(7, 7, 1)
    assert not batched_pays(14, 5, 1) and not batched_pays(7, 3, 1) and not batched_pays(7, 5, 2)
    from nas.train.cpu import small_map_depthwise

    assert small_map_depthwise(frozenset({"avx2", "fma"}))
    assert not small_map_depthwise(frozenset({"avx2", "avx512f", "avx512bw"}))
    model = nn.Sequential(nn.Conv2d(4, 4, 5, 1, 2, groups=4, bias=False), nn.Conv2d(4, 4, 3, 1, 1, groups=4, bias=False))
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    want = torch.autograd.grad(model(x).square().sum(), (x, *model.parameters()))
    calls = []
    original = DepthwiseConv.apply
    with patched_layers(model, fp32=False, shifted=False, small_maps=True), \
            pytest.MonkeyPatch.context() as mp:
        mp.setattr(DepthwiseConv, "apply", lambda *a: calls.append(a[-1]) or original(*a))
        got = torch.autograd.grad(model(x).square().sum(), (x, *model.parameters()))
    assert calls == [BATCHED]  # the 5x5 layer on a 6x6 map; the 3x3 one keeps aten's
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_only_true_depthwise_layers_are_patched():
    assert is_depthwise(nn.Conv2d(8, 8, 5, 2, 2, groups=8, bias=False))
    assert not is_depthwise(nn.Conv2d(8, 8, 5, 2, 2, groups=8, bias=True))
    assert not is_depthwise(nn.Conv2d(8, 16, 3, 1, 1, groups=8, bias=False))
    assert not is_depthwise(nn.Conv2d(8, 8, 3, 1, 1, groups=1, bias=False))
    model = build_model(tiny_spec())
    depthwise = [m for m in model.modules() if is_depthwise(m)]
    assert depthwise
    gen = torch.Generator().manual_seed(0)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):  # folding gives non-zero biases
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=gen))
        bn.bias.data.copy_(torch.randn(bn.num_features, generator=gen))
    x = torch.randn(2, 1, 8, 8)
    model.eval()
    with torch.inference_mode():
        want, want_folded = model(x), fold_batchnorm(model)(x)
        with patched_layers(model, fp32=False, shifted=True):
            assert all("forward" in vars(m) for m in depthwise)
            torch.testing.assert_close(model(x), want)
            torch.testing.assert_close(fold_batchnorm(model)(x), want_folded)  # the folded copy has biases
    assert not any("forward" in vars(m) for m in model.modules())


def grouped_convolutions() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(8, 8, 5, 1, 2, groups=8, bias=False),  # depthwise, stride 1
                         nn.Conv2d(8, 8, 3, 2, 1, groups=8, bias=False),  # depthwise, stride 2
                         nn.Conv2d(8, 8, 3, 1, 1, groups=4, bias=False))  # grouped, not depthwise


def assert_close_to_bf16(got, want):
    for g, w in zip(got, want):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, w, rtol=0.05, atol=0.05 * w.abs().max().item())


def test_stride_one_depthwise_layers_stay_in_bf16_only_in_a_compiled_model():
    """Under bf16 autocast grouped convolutions run in fp32, except depthwise ones of stride 1 in a
    compiled model (``shifted``), which stay in bf16; their gradients stay those of fp32 to bf16's
    precision."""
    model = grouped_convolutions()
    x = torch.randn(4, 8, 9, 9)
    want = torch.autograd.grad(model(x).square().sum(), tuple(model.parameters()))
    for shifted, bf16_depthwise, dtypes in ((True, True, [torch.bfloat16, torch.float32, torch.float32]),
                                            (True, False, [torch.float32] * 3),  # as forced by the benchmark
                                            (False, True, [torch.float32] * 3)):
        with patched_layers(model, fp32=True, shifted=shifted, bf16_depthwise=bf16_depthwise):
            outputs = []
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = x
                for layer in model:
                    out = layer(out)
                    outputs.append(out.dtype)
            got = torch.autograd.grad(out.float().square().sum(), tuple(model.parameters()))
        assert outputs == dtypes, shifted
        assert_close_to_bf16(got, want)


@pytest.mark.slow
def test_compiled_bf16_depthwise_layers_give_the_fp32_gradients_to_bf16_precision():
    model = grouped_convolutions()
    x = torch.randn(4, 8, 9, 9).contiguous(memory_format=torch.channels_last)
    want = torch.autograd.grad(model(x).square().sum(), tuple(model.parameters()))
    with patched_layers(model, fp32=True, shifted=True), torch.autocast("cpu", dtype=torch.bfloat16):
        out = torch.compile(model)(x)
    assert out.dtype == torch.float32  # the last two layers in fp32
    assert_close_to_bf16(torch.autograd.grad(out.square().sum(), tuple(model.parameters())), want)


def test_squeeze_excite_as_matrix_products_matches_its_convolutions():
    """The patched SE computes the layer's own function: same output, same parameter and input gradients."""
    from nas.models.layers import SqueezeExcite

    torch.manual_seed(0)
    se = SqueezeExcite(24, 8).double()
    x = torch.randn(5, 24, 3, 3, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(x)

    def run():
        inputs = x.clone().requires_grad_()
        out = se(inputs)
        grads = torch.autograd.grad(out, (inputs, *se.parameters()), grad)
        return out, grads

    want_out, want_grads = run()
    with patched_layers(se, fp32=False, shifted=False):
        assert "forward" in vars(se)
        out, grads = run()
    assert "forward" not in vars(se)
    torch.testing.assert_close(out, want_out)
    for got, want in zip(grads, want_grads):
        torch.testing.assert_close(got, want)


def test_compile_settings(monkeypatch):
    assert resolve_compile("off", 10**6) is False
    assert resolve_compile("on", 1) is True
    assert resolve_compile("auto", LONG_TRAINING_STEPS - 1) is False
    monkeypatch.setattr(compiled_mod, "compiler_available", lambda: False)
    assert resolve_compile("auto", LONG_TRAINING_STEPS) is False
    monkeypatch.setattr(compiled_mod, "compiler_available", lambda: True)
    assert resolve_compile("auto", LONG_TRAINING_STEPS) is True
    with pytest.raises(NasError, match="compile"):
        TrainConfig(steps=5, compile="yes")
    with pytest.raises(NasError, match="compile"):
        TrainSection(compile="maybe").validate()
    section = TrainSection(compile="off", precision="bf16")
    assert (section.config().compile, section.config().precision) == ("off", "bf16")


class BrokenCompiled(nn.Module):
    """What a torch.compile that fails on its first call looks like to the trainer."""

    def forward(self, x):
        raise RuntimeError("C++ compile error: cannot find Python.h\nmore lines")


def test_failed_compile_trains_eagerly(monkeypatch, capsys):
    """The failed first step is redone eagerly: the same weights as an eager training, one line said."""
    monkeypatch.setattr(torch, "compile", lambda model: BrokenCompiled())
    models = {}
    for setting in ("on", "off"):
        torch.manual_seed(0)
        models[setting] = build_model(tiny_spec())
        config = TrainConfig(steps=6, batch_size=16, lr=0.05, threads=1, eval_every=None, compile=setting)
        result = train(models[setting], toy_splits(), config, progress=False)
        assert result.steps == 6 and not result.compiled
    assert capsys.readouterr().err.splitlines() == [
        "torch.compile failed (RuntimeError: C++ compile error: cannot find Python.h); training eagerly"]
    for (key, a), b in zip(models["on"].state_dict().items(), models["off"].state_dict().values()):
        assert torch.equal(a, b), key
    assert not any("forward" in vars(m) for m in models["on"].modules())
