"""Parameters and multiply-adds counted from a spec, layer by layer, with no forward pass.

MAdds count the multiply-adds of conv and linear layers (BN, activations, pooling and residual
adds are free, as in the papers). Params count every weight and bias, BN affine parameters
included (running statistics are buffers, not parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

from nas.spec.arch import ArchSpec, BlockSpec, conv_output_size, se_channels

ACT_SHORT = {"relu": "RE", "relu6": "R6", "hswish": "HS"}


@dataclass(frozen=True)
class LayerCount:
    """One row of the paper-style layer table."""

    input: str          # e.g. "112x112x16"
    operator: str       # e.g. "bneck 3x3"
    exp: int | None
    out: int
    se: bool
    act: str | None
    stride: int
    params: int
    madds: int


def _conv_bn(cin: int, cout: int, k: int, groups: int = 1) -> int:
    return cin // groups * cout * k * k + 2 * cout


def _se(channels: int) -> tuple[int, int]:
    """(params, madds) of an SE module on ``channels`` channels (1x1 convs with bias)."""
    sq = se_channels(channels)
    return channels * sq + sq + sq * channels + channels, 2 * channels * sq


def block_counts(block: BlockSpec, size: int) -> tuple[int, int]:
    """(params, madds) of one inverted residual at input spatial size ``size``."""
    out_size = conv_output_size(size, block.kernel, block.stride)
    params = madds = 0
    if block.has_expand:
        params += _conv_bn(block.in_channels, block.exp_channels, 1)
        madds += size * size * block.in_channels * block.exp_channels
    params += _conv_bn(block.exp_channels, block.exp_channels, block.kernel, groups=block.exp_channels)
    madds += out_size * out_size * block.exp_channels * block.kernel * block.kernel
    if block.se:
        p, m = _se(block.exp_channels)
        params, madds = params + p, madds + m
    params += _conv_bn(block.exp_channels, block.out_channels, 1)
    madds += out_size * out_size * block.exp_channels * block.out_channels
    return params, madds


def layer_table(spec: ArchSpec) -> list[LayerCount]:
    rows: list[LayerCount] = []
    r, s = spec.resolution, spec.stem
    size = conv_output_size(r, s.kernel, s.stride)
    rows.append(LayerCount(f"{r}x{r}x{spec.in_channels}", f"conv2d {s.kernel}x{s.kernel}", None, s.out_channels,
                           False, ACT_SHORT[s.act], s.stride, _conv_bn(spec.in_channels, s.out_channels, s.kernel),
                           size * size * spec.in_channels * s.out_channels * s.kernel * s.kernel))
    for _, bsize, b in spec.iter_blocks():
        params, madds = block_counts(b, bsize)
        rows.append(LayerCount(f"{bsize}x{bsize}x{b.in_channels}", f"bneck {b.kernel}x{b.kernel}", b.exp_channels,
                               b.out_channels, b.se, ACT_SHORT[b.act], b.stride, params, madds))
    size = spec.final_size
    cin, last = spec.feature_channels, spec.last
    params, madds = _conv_bn(cin, last.out_channels, 1), size * size * cin * last.out_channels
    if last.se:
        p, m = _se(last.out_channels)
        params, madds = params + p, madds + m
    rows.append(LayerCount(f"{size}x{size}x{cin}", "conv2d 1x1", None, last.out_channels, last.se,
                           ACT_SHORT[last.act], 1, params, madds))
    rows.append(LayerCount(f"{size}x{size}x{last.out_channels}", f"avg pool {size}x{size}", None,
                           last.out_channels, False, None, 1, 0, 0))
    features, head = last.out_channels, spec.head
    if head.hidden:
        rows.append(LayerCount(f"1x1x{features}", "conv2d 1x1, no BN", None, head.hidden, False,
                               ACT_SHORT[head.act], 1, features * head.hidden + head.hidden, features * head.hidden))
        features = head.hidden
    rows.append(LayerCount(f"1x1x{features}", "conv2d 1x1, no BN", None, spec.num_classes, False, None, 1,
                           features * spec.num_classes + spec.num_classes, features * spec.num_classes))
    return rows


def count_params(spec: ArchSpec) -> int:
    return sum(row.params for row in layer_table(spec))


def count_madds(spec: ArchSpec) -> int:
    return sum(row.madds for row in layer_table(spec))
