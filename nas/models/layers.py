"""Small composable modules: activations by name, conv-norm-act, squeeze-and-excitation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# BatchNorm as in torchvision's MobileNetV3 (eps 1e-3); momentum 0.1 (PyTorch's default) so that
# the short proxy trainings of the search get usable running statistics.
BN_EPS = 1e-3
BN_MOMENTUM = 0.1

_ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish}


def activation(name: str) -> nn.Module:
    """ReLU, ReLU6 or hard-swish ``x * ReLU6(x + 3) / 6`` by name."""
    return _ACTIVATIONS[name]()


class ConvNormAct(nn.Module):
    """kxk conv (no bias) + BatchNorm + optional activation, 'same' padding."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 act: str | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = activation(act) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Global average pool -> 1x1 conv (squeeze) -> ReLU -> 1x1 conv (excite) -> hard-sigmoid -> scale."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.relu(self.fc1(scale))))


def squeeze_excite_gate(x: torch.Tensor, fc1_weight: torch.Tensor, fc1_bias: torch.Tensor, fc2_weight: torch.Tensor,
                        fc2_bias: torch.Tensor) -> torch.Tensor:
    """The gate (N, C, 1, 1) :class:`SqueezeExcite` multiplies ``x`` by, with its 1x1 convolutions as matrix
    products on the pooled vector: the same function, ~4x faster on CPU in training (nas.train.layer_patches)."""
    hidden = F.relu(F.linear(x.mean((2, 3)), fc1_weight.flatten(1), fc1_bias))
    return F.hardsigmoid(F.linear(hidden, fc2_weight.flatten(1), fc2_bias))[:, :, None, None]
