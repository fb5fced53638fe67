"""The paper's named networks as specs (torch-free), with torchvision's width-multiplier rule.

Rows are the paper's tables (../shared/reference/mobilenetv3.md): (kernel, exp, out, SE, NL, stride).
``width_mult`` scales every layer, the 16-filter stem and the 1280/1024 head included, with
``make_divisible(c * width_mult, 8)``; the last stage is 6x the last block's width. Small's last
stage has no SE, as in torchvision (the paper puts one there: ``last_se=True`` gives the paper's).
"""

from __future__ import annotations

import math
from typing import Callable

from nas.spec.arch import ArchSpec, BlockSpec, HeadSpec, LastStageSpec, SpecError, StemSpec, make_divisible

Row = tuple[int, int, int, bool, str, int]  # kernel, exp, out, se, act, stride

LARGE_ROWS: tuple[Row, ...] = (
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hswish", 2),
    (3, 200, 80, False, "hswish", 1),
    (3, 184, 80, False, "hswish", 1),
    (3, 184, 80, False, "hswish", 1),
    (3, 480, 112, True, "hswish", 1),
    (3, 672, 112, True, "hswish", 1),
    (5, 672, 160, True, "hswish", 2),
    (5, 960, 160, True, "hswish", 1),
    (5, 960, 160, True, "hswish", 1),
)

SMALL_ROWS: tuple[Row, ...] = (
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hswish", 2),
    (5, 240, 40, True, "hswish", 1),
    (5, 240, 40, True, "hswish", 1),
    (5, 120, 48, True, "hswish", 1),
    (5, 144, 48, True, "hswish", 1),
    (5, 288, 96, True, "hswish", 2),
    (5, 576, 96, True, "hswish", 1),
    (5, 576, 96, True, "hswish", 1),
)


MAX_WIDTH_MULT = 64


def _scale(channels: int, width_mult: float) -> int:
    return make_divisible(channels * width_mult, 8)


def spec_from_rows(rows: tuple[Row, ...], head_hidden: int, *, width_mult: float = 1.0, num_classes: int = 1000,
                   resolution: int = 224, in_channels: int = 3, stem_stride: int = 2, last_se: bool = False,
                   dropout: float = 0.2) -> ArchSpec:
    """Build a spec from paper-table rows, scaled torchvision's way."""
    if (isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not math.isfinite(width_mult)
            or not 0 < width_mult <= MAX_WIDTH_MULT):
        raise SpecError(f"width_mult: must be a number in (0, {MAX_WIDTH_MULT}], got {width_mult!r}")
    stem = StemSpec(out_channels=_scale(16, width_mult), kernel=3, stride=stem_stride, act="hswish")
    channels = stem.out_channels
    blocks = []
    for kernel, exp, out, se, act, stride in rows:
        block = BlockSpec(in_channels=channels, exp_channels=_scale(exp, width_mult),
                          out_channels=_scale(out, width_mult), kernel=kernel, stride=stride, se=se, act=act)
        blocks.append(block)
        channels = block.out_channels
    return ArchSpec(
        resolution=resolution, in_channels=in_channels, num_classes=num_classes, stem=stem, blocks=tuple(blocks),
        last=LastStageSpec(out_channels=6 * channels, act="hswish", se=last_se),
        head=HeadSpec(hidden=_scale(head_hidden, width_mult), act="hswish", dropout=dropout),
    )


def mobilenetv3_large(width_mult: float = 1.0, num_classes: int = 1000, resolution: int = 224,
                      in_channels: int = 3, **kwargs) -> ArchSpec:
    return spec_from_rows(LARGE_ROWS, 1280, width_mult=width_mult, num_classes=num_classes,
                          resolution=resolution, in_channels=in_channels, **kwargs)


def mobilenetv3_small(width_mult: float = 1.0, num_classes: int = 1000, resolution: int = 224,
                      in_channels: int = 3, **kwargs) -> ArchSpec:
    return spec_from_rows(SMALL_ROWS, 1024, width_mult=width_mult, num_classes=num_classes,
                          resolution=resolution, in_channels=in_channels, **kwargs)


NAMED_NETWORKS: dict[str, Callable[..., ArchSpec]] = {
    "mobilenetv3-large": mobilenetv3_large,
    "mobilenetv3-small": mobilenetv3_small,
}


def named_spec(name: str, **options) -> ArchSpec:
    """A named network; unknown names raise an error listing the known ones."""
    try:
        factory = NAMED_NETWORKS[name]
    except KeyError:
        raise SpecError(f"unknown network {name!r} (known: {', '.join(NAMED_NETWORKS)})") from None
    return factory(**{k: v for k, v in options.items() if v is not None})
