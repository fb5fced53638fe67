"""The builder: module structure and parameter counts agree with the spec; operators are exact."""

import random

import pytest
import torch
from torch import nn

from nas.models import build_model, count_module_params
from nas.models.blocks import InvertedResidual
from nas.models.layers import SqueezeExcite, activation
from nas.spec import BlockSpec, count_params, load_space, mobilenetv3_large, mobilenetv3_small


@pytest.mark.slow
def test_params_of_module_equal_spec_count_for_100_samples(space_file):
    space = load_space(space_file)
    rng = random.Random(0)
    for _ in range(100):
        spec = space.sample(rng)
        assert count_module_params(build_model(spec)) == count_params(spec), spec.to_string()


@pytest.mark.parametrize("factory", [mobilenetv3_large, mobilenetv3_small])
@pytest.mark.parametrize("width_mult", [0.5, 1.0])
def test_named_networks_forward(factory, width_mult):
    spec = factory(width_mult=width_mult, num_classes=10, resolution=64, in_channels=1)
    model = build_model(spec).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 10)
    assert count_module_params(model) == count_params(spec)


def test_hard_swish_and_hard_sigmoid_are_exact():
    x = torch.linspace(-8, 8, 1001)
    relu6 = lambda t: t.clamp(0, 6)  # noqa: E731
    assert torch.allclose(activation("hswish")(x), x * relu6(x + 3) / 6, atol=1e-6)
    assert torch.allclose(activation("relu6")(x), relu6(x))
    se = SqueezeExcite(8, 8)
    assert torch.allclose(se.gate(x), relu6(x + 3) / 6, atol=1e-6)


def test_squeeze_excite_semantics():
    torch.manual_seed(0)
    se = SqueezeExcite(16, 8).eval()
    x = torch.randn(2, 16, 5, 5)
    pooled = x.mean((2, 3), keepdim=True)
    gate = (se.fc2(torch.relu(se.fc1(pooled))) + 3).clamp(0, 6) / 6
    assert torch.allclose(se(x), x * gate, atol=1e-6)


def test_residual_only_when_stride_one_and_same_width():
    torch.manual_seed(0)
    same = InvertedResidual(BlockSpec(16, 48, 16, 3, 1, False, "relu")).eval()
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        body = same.project(same.depthwise(same.expand(x)))
        assert torch.allclose(same(x), x + body, atol=1e-6)
    assert not InvertedResidual(BlockSpec(16, 48, 16, 3, 2, False, "relu")).residual
    assert not InvertedResidual(BlockSpec(16, 48, 24, 3, 1, False, "relu")).residual
    assert InvertedResidual(BlockSpec(16, 16, 16, 3, 1, False, "relu")).expand is None


def test_build_seed_is_deterministic():
    spec = mobilenetv3_small(num_classes=10, resolution=32, in_channels=1)
    a, b = build_model(spec, seed=3), build_model(spec, seed=3)
    for (na, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), na
    c = build_model(spec, seed=4)
    assert not torch.equal(a.stem.conv.weight, c.stem.conv.weight)


def test_depthwise_and_bn_layout():
    model = build_model(mobilenetv3_small())
    block = model.blocks[1]
    assert block.depthwise.conv.groups == 72 and block.depthwise.conv.bias is None
    assert isinstance(block.depthwise.bn, nn.BatchNorm2d) and block.depthwise.bn.eps == 1e-3
    assert isinstance(model.stem.act, nn.Hardswish) and model.stem.conv.out_channels == 16
