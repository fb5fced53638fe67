"""The network's parts, each built from its spec dataclass."""

from __future__ import annotations

import torch
from torch import nn

from nas.models.layers import ConvNormAct, SqueezeExcite, activation
from nas.spec.arch import BlockSpec, HeadSpec, LastStageSpec, StemSpec, se_channels


class Stem(ConvNormAct):
    def __init__(self, spec: StemSpec, in_channels: int) -> None:
        super().__init__(in_channels, spec.out_channels, spec.kernel, spec.stride, act=spec.act)


class InvertedResidual(nn.Module):
    """[1x1 expand + BN + NL] -> kxk depthwise + BN + NL -> [SE] -> 1x1 project + BN; residual add
    when stride 1 and in == out. Attributes ``expand`` and ``se`` are None when absent."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        self.spec = spec
        self.expand = ConvNormAct(spec.in_channels, spec.exp_channels, 1, act=spec.act) if spec.has_expand else None
        self.depthwise = ConvNormAct(spec.exp_channels, spec.exp_channels, spec.kernel, spec.stride,
                                     groups=spec.exp_channels, act=spec.act)
        self.se = SqueezeExcite(spec.exp_channels, spec.se_channels) if spec.se else None
        self.project = ConvNormAct(spec.exp_channels, spec.out_channels, 1, act=None)
        self.residual = spec.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.depthwise(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.residual else y


class LastStage(nn.Module):
    """1x1 conv + BN + NL [+ SE], then global average pooling to a vector."""

    def __init__(self, spec: LastStageSpec, in_channels: int) -> None:
        super().__init__()
        self.conv = ConvNormAct(in_channels, spec.out_channels, 1, act=spec.act)
        self.se = SqueezeExcite(spec.out_channels, se_channels(spec.out_channels)) if spec.se else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.se is not None:
            x = self.se(x)
        return x.mean((2, 3))


class Head(nn.Sequential):
    """Linear(hidden) + NL + dropout + Linear(classes); just Linear(classes) when hidden == 0."""

    def __init__(self, spec: HeadSpec, in_features: int, num_classes: int) -> None:
        if spec.hidden:
            layers = [nn.Linear(in_features, spec.hidden), activation(spec.act), nn.Dropout(spec.dropout),
                      nn.Linear(spec.hidden, num_classes)]
        else:
            layers = [nn.Dropout(spec.dropout), nn.Linear(in_features, num_classes)]
        super().__init__(*layers)
