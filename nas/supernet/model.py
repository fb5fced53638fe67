"""A weight-sharing supernet over a search space, and the standard model of one of its members.

The supernet holds, per stage, as many blocks as the deepest choice, each sized for the largest
input width, expansion width, output width and kernel the space allows at that position. A member
spec of the space is a *slice* of it:

- kernel: the centre crop of the largest depthwise kernel, or (``kernel_transform``, OFA's elastic
  kernel) a chain of centre crops 7 -> 5 -> 3, each followed by a learned linear map of the taps
  (one per block and size pair, starting as the identity);
- expansion and width: the first channels of every weight, bias and BatchNorm entry
  (:func:`reorder_channels` sorts a block's hidden channels by importance, so that the first are the
  ones that matter most);
- depth: the first blocks of each stage;
- SE per block on or off (the SE weights are sized for the largest expansion width and sliced);
- activation per block: applied by name, it has no weights.

:func:`extract` copies a member's slice into ``nas.models.build_model(spec)``, so that scoring,
fine-tuning and export use the standard model. :func:`sliced` and :meth:`SuperBlock.depthwise_weight`
are the slicing rules both use.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from nas.errors import NasError
from nas.models.blocks import Head, LastStage, Stem
from nas.models.builder import Network, build_model, init_weights
from nas.models.layers import ConvNormAct, SqueezeExcite, squeeze_excite_gate
from nas.spec import ArchSpec, BlockSpec, SearchSpace, SpaceError
from nas.spec.arch import se_channels
from nas.spec.space import expansion_width
from nas.train.cpu import small_map_depthwise
from nas.train.depthwise import depthwise_conv

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


def _conv(layer: ConvNormAct, x: torch.Tensor, out_channels: int) -> torch.Tensor:
    """The 1x1 conv + BN of ``layer`` sliced to ``out_channels`` outputs and the input's channels."""
    weight = sliced(layer.conv.weight, (out_channels, x.shape[1], 1, 1))
    return _batch_norm(layer.bn, F.conv2d(x, weight), out_channels)


class SuperBlock(nn.Module):
    """An inverted residual sized for the largest candidate at its position; ``forward`` runs the
    slice ``spec`` describes. Its parameter names are those of :class:`nas.models.blocks.InvertedResidual`
    (plus ``kernel_maps`` with the kernel transform)."""

    def __init__(self, in_channels: int, exp_channels: int, out_channels: int, kernels: tuple[int, ...],
                 stride: int, expands: bool, has_se: bool, kernel_transform: bool = False,
                 reorderable: bool = False) -> None:
        super().__init__()
        self.stride = stride
        self.kernels = tuple(sorted(set(kernels), reverse=True))  # the largest first
        self.reorderable = reorderable
        self.expand = ConvNormAct(in_channels, exp_channels, 1) if expands else None
        self.depthwise = ConvNormAct(exp_channels, exp_channels, self.kernels[0], stride, groups=exp_channels)
        self.se = SqueezeExcite(exp_channels, se_channels(exp_channels)) if has_se else None
        self.project = ConvNormAct(exp_channels, out_channels, 1)
        self.kernel_maps = nn.ParameterDict({
            f"{big}to{small}": nn.Parameter(torch.eye(small * small))
            for big, small in zip(self.kernels, self.kernels[1:])}) if kernel_transform else None

    def depthwise_weight(self, channels: int, kernel: int) -> torch.Tensor:
        """The depthwise kernel of a member with ``channels`` hidden channels and a ``kernel`` x
        ``kernel`` kernel: the centre crop of the largest, or with the kernel transform, each smaller
        size the linear map of the centre of the next larger one."""
        weight = self.depthwise.conv.weight[:channels]
        if self.kernel_maps is None:
            return sliced(weight, (channels, 1, kernel, kernel))
        for big, small in zip(self.kernels, self.kernels[1:]):
            if weight.shape[-1] <= kernel:
                break
            centre = sliced(weight, (channels, 1, small, small)).reshape(channels, small * small)
            weight = F.linear(centre, self.kernel_maps[f"{big}to{small}"]).reshape(channels, 1, small, small)
        return weight

    def forward(self, x: torch.Tensor, spec: BlockSpec) -> torch.Tensor:
        act = _ACTIVATIONS[spec.act]
        exp = spec.exp_channels
        y = act(_conv(self.expand, x, exp)) if spec.has_expand else x
        y = depthwise_conv(y, self.depthwise_weight(exp, spec.kernel), spec.stride, (spec.kernel - 1) // 2,
                           small_map_depthwise())
        y = act(_batch_norm(self.depthwise.bn, y, exp))
        if spec.se:
            y = y * self._gate(y, exp, spec.se_channels)
        y = _conv(self.project, y, spec.out_channels)
        return x + y if spec.residual else y

    def _gate(self, y: torch.Tensor, exp: int, squeeze: int) -> torch.Tensor:
        se = self.se
        return squeeze_excite_gate(y, sliced(se.fc1.weight, (squeeze, exp, 1, 1)), se.fc1.bias[:squeeze],
                                   sliced(se.fc2.weight, (exp, squeeze, 1, 1)), se.fc2.bias[:exp])

    def hidden_channel_tensors(self) -> list[tuple[torch.Tensor, int]]:
        """(tensor, dimension) of every weight, bias and BatchNorm entry indexed by a hidden channel."""
        out: list[tuple[torch.Tensor, int]] = []
        for layer in (self.expand, self.depthwise):
            bn = layer.bn
            out += [(layer.conv.weight, 0), (bn.weight, 0), (bn.bias, 0), (bn.running_mean, 0), (bn.running_var, 0)]
        if self.se is not None:
            out += [(self.se.fc1.weight, 1), (self.se.fc2.weight, 0), (self.se.fc2.bias, 0)]
        return out + [(self.project.conv.weight, 1)]


def _block_bounds(space: SearchSpace) -> list[list[dict[str, int]]]:
    """Per stage and block: the largest input, expansion and output widths, the kernels, whether any
    choice has a 1x1 expansion conv or SE, and whether every choice has the expansion conv."""
    bounds, previous = [], (space.stem.out_channels,)
    for st in space.stages:
        stage = []
        for j in range(st.max_depth):
            ins = previous if j == 0 else st.width
            stage.append({"in": max(ins), "out": max(st.width), "kernels": tuple(st.kernel),
                          "stride": st.stride if j == 0 else 1,
                          "exp": max(expansion_width(c, r) for c in ins for r in st.expansion),
                          "expands": any(r != 1 for r in st.expansion), "se": True in st.se,
                          # a ratio-1 member's hidden channels are its input's: they cannot be re-ordered
                          "reorderable": all(r != 1 for r in st.expansion)})
        bounds.append(stage)
        previous = st.width
    return bounds


class Supernet(nn.Module):
    """stem -> stages of :class:`SuperBlock` -> last stage -> head, for every member of ``space``.

    :meth:`set_active` picks the member the forward pass runs (the largest one at first);
    ``kernel_transform``: OFA's learned kernel maps instead of plain centre crops."""

    def __init__(self, space: SearchSpace, kernel_transform: bool = False) -> None:
        super().__init__()
        self.space = space
        self.largest = largest_spec(space)
        self.stem = Stem(space.stem, space.in_channels)
        self.stages = nn.ModuleList(
            nn.ModuleList(SuperBlock(b["in"], b["exp"], b["out"], b["kernels"], b["stride"], b["expands"], b["se"],
                                     kernel_transform, b["reorderable"])
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


DEPTHWISE_WEIGHT = ".depthwise.conv.weight"


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
        if name.startswith("stages.") and name.endswith(DEPTHWISE_WEIGHT):
            block = supernet.get_submodule(name[:-len(DEPTHWISE_WEIGHT)])
            target.copy_(block.depthwise_weight(target.shape[0], target.shape[-1]))
        else:
            target.copy_(sliced(source[name], target.shape))
    return model


@torch.no_grad()
def reorder_channels(supernet: Supernet, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Sort the hidden channels of every block that always has its expansion conv by importance, the
    L1 norm of the projection's weights on each (OFA's channel re-organisation), most important first.
    The largest member computes the same function as before; a narrower one, which keeps the first
    channels, keeps the most important ones. The optimizer's per-parameter state (momentum, Adam's
    moments) is permuted with its parameter. Returns how many blocks changed order."""
    changed = 0
    for block in (b for stage in supernet.stages for b in stage if b.reorderable):
        importance = block.project.conv.weight.abs().sum(dim=(0, 2, 3))
        order = torch.argsort(importance, descending=True, stable=True)
        if torch.equal(order, torch.arange(order.numel())):
            continue
        for tensor, dim in block.hidden_channel_tensors():
            _permute(tensor, dim, order, optimizer)
        changed += 1
    return changed


def _permute(tensor: torch.Tensor, dim: int, order: torch.Tensor, optimizer: torch.optim.Optimizer | None) -> None:
    tensor.copy_(tensor.index_select(dim, order))
    state = optimizer.state.get(tensor) if optimizer is not None else None
    for value in (state or {}).values():
        if isinstance(value, torch.Tensor) and value.shape == tensor.shape:
            value.copy_(value.index_select(dim, order))
