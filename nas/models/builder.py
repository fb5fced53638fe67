"""The one way from a spec to an ``nn.Module``."""

from __future__ import annotations

import torch
from torch import nn

from nas.models.blocks import Head, InvertedResidual, LastStage, Stem
from nas.spec.arch import ArchSpec


class Network(nn.Module):
    """stem -> blocks -> last stage (pooled) -> head. ``spec`` is kept for reference only."""

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        self.spec = spec
        self.stem = Stem(spec.stem, spec.in_channels)
        self.blocks = nn.Sequential(*(InvertedResidual(b) for b in spec.blocks))
        self.last = LastStage(spec.last, spec.feature_channels)
        self.head = Head(spec.head, spec.classifier_in, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.last(self.blocks(self.stem(x))))


def init_weights(model: nn.Module) -> None:
    """torchvision's MobileNetV3 initialisation."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def build_model(spec: ArchSpec, seed: int | None = None) -> Network:
    """Build the network a spec describes (freshly initialised; ``seed`` makes it deterministic)."""
    if seed is None:
        model = Network(spec)
        init_weights(model)
        return model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Network(spec)
        init_weights(model)
    return model


def count_module_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
