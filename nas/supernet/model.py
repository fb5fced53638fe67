"""A weight-sharing supernet over a search space, and the standard model of one of its members.

The supernet holds, per stage, as many blocks as the deepest choice, each sized for the largest
input width, expansion width, output width and kernel the space allows at that position. A member
spec of the space is a *slice* of it:

- kernel: the centre crop of the largest depthwise kernel;
- expansion and width: the first channels of every weight, bias and BatchNorm entry;
- depth: the first blocks of each stage;
- SE per block on or off (the SE weights are sized for the largest expansion width and sliced);
- activation per block: applied by name, it has no weights.

:func:`extract` copies a member's slice into ``nas.models.build_model(spec)``, so that scoring,
fine-tuning and export use the standard model. :func:`sliced` is the one slicing rule both use.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from nas.errors import NasError
from nas.models.blocks import Head, LastStage, Stem
from nas.models.builder import Network, build_model, init_weights
from nas.models.layers import ConvNormAct, SqueezeExcite
from nas.spec import ArchSpec, BlockSpec, SearchSpace, SpaceError
from nas.spec.arch import se_channels
from nas.spec.space import expansion_width

_ACTIVATIONS = {"relu": F.relu, "relu6": F.relu6, "hswish": F.hardswish}


def sliced(tensor: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """The part of ``tensor`` a smaller candidate uses: the first entries along the first two
    dimensions (output, input channels) and the centre crop along the others (kernel height, width)."""
    index = []
    for dim, size in enumerate(shape):
        start = 0 if dim < 2 else (tensor.shape[dim] - size) // 2
        index.append(slice(start, start + size))
    return tensor[tuple(index)]


def largest_spec(space: SearchSpace) -> ArchSpec:
    return space.decode(space.largest_assignment())


def smallest_spec(space: SearchSpace) -> ArchSpec:
    return space.decode(space.smallest_assignment())


def _batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, channels: int) -> torch.Tensor:
    """``bn`` on its first ``channels`` entries (in training, their running statistics are updated in place)."""
    training = bn.training and bn.track_running_stats
    if training and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
    return F.batch_norm(x, bn.running_mean[:channels], bn.running_var[:channels], bn.weight[:channels],
                        bn.bias[:channels], training, bn.momentum, bn.eps)


def _conv(layer: ConvNormAct, x: torch.Tensor, out_channels: int, kernel: int = 1, stride: int = 1,
          groups: int = 1) -> torch.Tensor:
    """The conv + BN of ``layer`` sliced to ``out_channels`` outputs, the input's channels and ``kernel``."""
    in_per_group = x.shape[1] // groups
    weight = sliced(layer.conv.weight, (out_channels, in_per_group, kernel, kernel))
    y = F.conv2d(x, weight, None, stride, (kernel - 1) // 2, 1, groups)
    return _batch_norm(layer.bn, y, out_channels)


class SuperBlock(nn.Module):
    """An inverted residual sized for the largest candidate at its position; ``forward`` runs the
    slice ``spec`` describes. Its parameter names are those of :class:`nas.models.blocks.InvertedResidual`."""

    def __init__(self, in_channels: int, exp_channels: int, out_channels: int, kernel: int, stride: int,
                 expands: bool, has_se: bool) -> None:
        super().__init__()
        self.stride = stride
        self.expand = ConvNormAct(in_channels, exp_channels, 1) if expands else None
        self.depthwise = ConvNormAct(exp_channels, exp_channels, kernel, stride, groups=exp_channels)
        self.se = SqueezeExcite(exp_channels, se_channels(exp_channels)) if has_se else None
        self.project = ConvNormAct(exp_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, spec: BlockSpec) -> torch.Tensor:
        act = _ACTIVATIONS[spec.act]
        exp = spec.exp_channels
        y = act(_conv(self.expand, x, exp)) if spec.has_expand else x
        y = act(_conv(self.depthwise, y, exp, spec.kernel, spec.stride, groups=exp))
        if spec.se:
            y = y * self._gate(y, exp, spec.se_channels)
        y = _conv(self.project, y, spec.out_channels)
        return x + y if spec.residual else y

    def _gate(self, y: torch.Tensor, exp: int, squeeze: int) -> torch.Tensor:
        se = self.se
        scale = y.mean((2, 3), keepdim=True)
        scale = F.relu(F.conv2d(scale, sliced(se.fc1.weight, (squeeze, exp, 1, 1)), se.fc1.bias[:squeeze]))
        return F.hardsigmoid(F.conv2d(scale, sliced(se.fc2.weight, (exp, squeeze, 1, 1)), se.fc2.bias[:exp]))


def _block_bounds(space: SearchSpace) -> list[list[dict[str, int]]]:
    """Per stage and block: the largest input, expansion and output widths and kernel, and whether
    any choice has a 1x1 expansion conv or SE."""
    bounds, previous = [], (space.stem.out_channels,)
    for st in space.stages:
        stage = []
        for j in range(st.max_depth):
            ins = previous if j == 0 else st.width
            stage.append({"in": max(ins), "out": max(st.width), "kernel": max(st.kernel),
                          "stride": st.stride if j == 0 else 1,
                          "exp": max(expansion_width(c, r) for c in ins for r in st.expansion),
                          "expands": any(r != 1 for r in st.expansion), "se": True in st.se})
        bounds.append(stage)
        previous = st.width
    return bounds


class Supernet(nn.Module):
    """stem -> stages of :class:`SuperBlock` -> last stage -> head, for every member of ``space``.

    :meth:`set_active` picks the member the forward pass runs (the largest one at first)."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space
        self.largest = largest_spec(space)
        self.stem = Stem(space.stem, space.in_channels)
        self.stages = nn.ModuleList(
            nn.ModuleList(SuperBlock(b["in"], b["exp"], b["out"], b["kernel"], b["stride"], b["expands"], b["se"])
                          for b in stage)
            for stage in _block_bounds(space))
        self.last = LastStage(space.last, max(space.stages[-1].width))
        self.head = Head(space.head, self.largest.classifier_in, space.num_classes)
        init_weights(self)
        self.set_active(self.largest)

    def set_active(self, spec: ArchSpec) -> None:
        """Run ``spec`` from now on; a spec that is not a member of the space: one NasError line."""
        self.active_spec, self.active = spec, stage_blocks(self.space, spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for blocks, specs in zip(self.stages, self.active):
            for block, spec in zip(blocks, specs):
                x = block(x, spec)
        last = self.last
        y = _conv(last.conv, x, last.conv.conv.out_channels)
        y = last.conv.act(y)
        if last.se is not None:
            y = last.se(y)
        return self.head(y.mean((2, 3)))


def stage_blocks(space: SearchSpace, spec: ArchSpec) -> list[tuple[BlockSpec, ...]]:
    """``spec``'s blocks cut into the space's stages; NasError when ``spec`` is not a member."""
    try:
        assignment = space.encode(spec)
    except SpaceError as exc:
        raise NasError(f"the supernet cannot run this network: {exc}") from None
    out, start = [], 0
    for i in range(len(space.stages)):
        depth = assignment[f"s{i}.depth"]
        out.append(tuple(spec.blocks[start:start + depth]))
        start += depth
    return out


def supernet_key(space: SearchSpace, spec: ArchSpec) -> dict[str, str]:
    """Block prefix of the standard model -> the supernet's (``blocks.4.`` -> ``stages.2.1.``)."""
    names, n = {}, 0
    for i, blocks in enumerate(stage_blocks(space, spec)):
        for j in range(len(blocks)):
            names[f"blocks.{n}."] = f"stages.{i}.{j}."
            n += 1
    return names


@torch.no_grad()
def extract(supernet: Supernet, spec: ArchSpec) -> Network:
    """``build_model(spec)`` holding ``spec``'s slice of the supernet's weights and BN statistics."""
    prefixes = supernet_key(supernet.space, spec)
    model = build_model(spec)
    source = supernet.state_dict()
    for key, target in model.state_dict().items():
        name = key
        if key.startswith("blocks."):
            prefix = ".".join(key.split(".")[:2]) + "."
            name = prefixes[prefix] + key[len(prefix):]
        target.copy_(sliced(source[name], target.shape))
    return model
