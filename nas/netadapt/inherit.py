"""Weight inheritance: a shrunk network keeps the channels whose producing filters have the
largest L2 norm, and every tensor that carries those channels keeps the same indices (bit-exact).

A *channel set* lists the tensor slots ``(state-dict key, dim)`` that carry one set of channels and
the *producer* tensors whose rows (dim 0) make those channels. Sets come from the spec:

* each bottleneck group (stem or a block's projection, plus every residual projection adding into
  the same channels): producer convs + BN, the inputs of the blocks reading them (their expand conv,
  or, for blocks without one, their whole depthwise/SE/projection-input path) and the last stage's
  input conv;
* each expansion layer: expand conv + BN, depthwise conv + BN, SE fc1 input / fc2 output, projection
  input;
* each SE squeeze (its width follows the expansion width): fc1 output, fc2 input.

Channels are ranked by the summed squared L2 norm of all producer rows of the set (one consistent
score for a residual group), the top ``k`` are kept in their original order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from nas.errors import NasError
from nas.netadapt.proposals import width_groups
from nas.spec.arch import ArchSpec

BN_KEYS = ("weight", "bias", "running_mean", "running_var")


@dataclass
class ChannelSet:
    name: str
    producers: list[str] = field(default_factory=list)
    slots: list[tuple[str, int]] = field(default_factory=list)

    def add_conv_bn(self, prefix: str, produces: bool = True) -> None:
        """A ConvNormAct's output channels: conv rows and its BN vectors."""
        self.slots.append((f"{prefix}.conv.weight", 0))
        self.slots.extend((f"{prefix}.bn.{k}", 0) for k in BN_KEYS)
        if produces:
            self.producers.append(f"{prefix}.conv.weight")


def _add_expanded_path(cset: ChannelSet, spec: ArchSpec, i: int) -> None:
    """Slots of block ``i`` that carry its expansion channels (depthwise, SE in/out, projection input)."""
    p = f"blocks.{i}"
    cset.add_conv_bn(f"{p}.depthwise", produces=False)
    if spec.blocks[i].se:
        cset.slots += [(f"{p}.se.fc1.weight", 1), (f"{p}.se.fc2.weight", 0), (f"{p}.se.fc2.bias", 0)]
    cset.slots.append((f"{p}.project.conv.weight", 1))


def channel_sets(spec: ArchSpec) -> list[ChannelSet]:
    sets: list[ChannelSet] = []
    for group in width_groups(spec):
        if group.kind == "expand":
            i = group.producer
            cset = ChannelSet(group.name)
            cset.add_conv_bn(f"blocks.{i}.expand")
            _add_expanded_path(cset, spec, i)
            sets.append(cset)
            continue
        cset = ChannelSet(group.name)
        cset.add_conv_bn("stem" if group.producer < 0 else f"blocks.{group.producer}.project")
        for j in group.blocks:
            cset.add_conv_bn(f"blocks.{j}.project")
        after = (group.blocks[-1] if group.blocks else group.producer) + 1
        readers = list(group.blocks) + ([after] if after < len(spec.blocks) else [])
        for j in readers:
            if spec.blocks[j].has_expand:
                cset.slots.append((f"blocks.{j}.expand.conv.weight", 1))
            else:
                _add_expanded_path(cset, spec, j)
        if after >= len(spec.blocks):
            cset.slots.append(("last.conv.conv.weight", 1))
        sets.append(cset)
    for i, block in enumerate(spec.blocks):
        if block.se:
            p = f"blocks.{i}.se"
            sets.append(ChannelSet(f"se:b{i}", [f"{p}.fc1.weight"],
                                   [(f"{p}.fc1.weight", 0), (f"{p}.fc1.bias", 0), (f"{p}.fc2.weight", 1)]))
    return sets


def channel_scores(cset: ChannelSet, state: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed squared L2 norm of every producer row (float64, one value per channel)."""
    total = None
    for key in cset.producers:
        rows = state[key].detach().to(torch.float64).flatten(1).pow(2).sum(dim=1)
        total = rows if total is None else total + rows
    return total


def keep_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest scores (ties: lower index first), in ascending order."""
    order = torch.argsort(scores, descending=True, stable=True)
    return order[:k].sort().values


def kept_channels(old_spec: ArchSpec, state: dict[str, torch.Tensor],
                  new_shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Channel set name -> kept indices for going from ``old_spec``'s weights to ``new_shapes``."""
    kept = {}
    for cset in channel_sets(old_spec):
        key, dim = cset.slots[0]
        old, new = state[key].shape[dim], new_shapes[key][dim]
        if new > old:
            raise NasError(f"{cset.name}: cannot grow from {old} to {new} channels by inheritance")
        kept[cset.name] = keep_indices(channel_scores(cset, state), new)
    return kept


def inherit_state(old_spec: ArchSpec, state: dict[str, torch.Tensor], new_spec: ArchSpec) -> dict[str, torch.Tensor]:
    """State dict for ``new_spec`` (same structure, narrower or equal widths) from ``old_spec``'s."""
    from nas.models import build_model

    if len(new_spec.blocks) != len(old_spec.blocks):
        raise NasError("weight inheritance needs the same number of blocks")
    template = build_model(new_spec, seed=0).state_dict()
    if set(template) != set(state):
        raise NasError("weight inheritance needs the same layers (expand convs, SE) in both networks")
    shapes = {k: v.shape for k, v in template.items()}
    kept = kept_channels(old_spec, state, shapes)
    slot_index = {}
    for cset in channel_sets(old_spec):
        for slot in cset.slots:
            slot_index[slot] = kept[cset.name]
    new_state = {}
    for key, tensor in state.items():
        out = tensor
        for dim in range(tensor.dim()):
            index = slot_index.get((key, dim))
            if index is not None and index.numel() != out.shape[dim]:
                out = out.index_select(dim, index)
        if out.shape != shapes[key]:
            raise NasError(f"weight inheritance: {key} has shape {tuple(out.shape)}, expected {tuple(shapes[key])}")
        new_state[key] = out.clone()
    return new_state


def shrink_model(old_spec: ArchSpec, model: torch.nn.Module, new_spec: ArchSpec) -> torch.nn.Module:
    """A new network for ``new_spec`` that inherits ``model``'s weights (``model`` is untouched)."""
    from nas.models import build_model

    state = {k: v.detach() for k, v in model.state_dict().items()}
    new_model = build_model(new_spec, seed=0)
    new_model.load_state_dict(inherit_state(old_spec, state, new_spec), strict=True)
    return new_model
