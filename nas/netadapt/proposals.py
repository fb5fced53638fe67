"""NetAdapt proposals on specs (pure data, no torch): width groups, shrunk specs, minimal cuts.

A *width group* is a set of channel counts that must change together:

* ``expand`` group: the expansion width of one block that has a 1x1 expand conv
  (``exp != in``); shrinking it touches that block only.
* ``bottleneck`` group: the channels produced by the stem or by one block, plus every following
  block chained to them by residual adds (stride 1, ``in == out``): all of them carry the same
  channels, so they shrink together. The next block's input (or the last stage's input) follows.

Blocks without an expand conv (``exp == in``) run their depthwise conv on their input channels,
so their ``exp`` always follows their input width (it stays equal to ``in``).

A shrink is valid only if it keeps the network's structure: the same blocks keep (or lack) an
expand conv and the same blocks keep (or lack) a residual add; every width stays >= 8. A proposal
for a group is the smallest cut, in steps of 8 channels, whose predicted saving is >= delta.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable, Protocol

from nas.spec.arch import ArchSpec

STEP = 8
MIN_WIDTH = 8


class Predictor(Protocol):
    """Anything that predicts a network's latency in milliseconds from its spec."""

    def predict(self, spec: ArchSpec) -> float: ...


@dataclass(frozen=True)
class Group:
    """Channels that shrink together. ``producer`` is -1 for the stem; ``blocks`` are the blocks
    whose widths the group sets (for ``expand``: the one block whose ``exp`` it is)."""

    kind: str                 # "expand" | "bottleneck"
    producer: int             # block index (or -1 = stem) whose layer produces the channels
    blocks: tuple[int, ...]   # expand: (i,); bottleneck: residual blocks sharing the width

    @property
    def name(self) -> str:
        if self.kind == "expand":
            return f"exp:b{self.producer}"
        first = "stem" if self.producer < 0 else f"b{self.producer}"
        return f"width:{first}" + (f"-b{self.blocks[-1]}" if self.blocks else "")

    def width(self, spec: ArchSpec) -> int:
        if self.kind == "expand":
            return spec.blocks[self.producer].exp_channels
        if self.producer < 0:
            return spec.stem.out_channels
        return spec.blocks[self.producer].out_channels


@dataclass(frozen=True)
class Proposal:
    """One candidate shrink: ``group`` goes from ``old_width`` to ``new_width`` channels."""

    group: Group
    old_width: int
    new_width: int
    spec: ArchSpec
    predicted_ms: float
    saving_ms: float

    @property
    def name(self) -> str:
        return self.group.name

    @property
    def channels_removed(self) -> int:
        return self.old_width - self.new_width


def width_groups(spec: ArchSpec) -> list[Group]:
    """Every group of the network: bottleneck groups in order, then expansion layers in order."""
    bottlenecks: list[Group] = []
    producer, chained = -1, []
    for i, block in enumerate(spec.blocks):
        if block.residual:
            chained.append(i)
            continue
        bottlenecks.append(Group("bottleneck", producer, tuple(chained)))
        producer, chained = i, []
    bottlenecks.append(Group("bottleneck", producer, tuple(chained)))
    expands = [Group("expand", i, (i,)) for i, b in enumerate(spec.blocks) if b.has_expand]
    return bottlenecks + expands


def _structure(spec: ArchSpec) -> tuple:
    return tuple((b.has_expand, b.residual) for b in spec.blocks)


def with_width(spec: ArchSpec, group: Group, width: int) -> ArchSpec | None:
    """``spec`` with ``group`` set to ``width`` channels; None if that would change the structure
    (an expand conv or a residual add appearing or disappearing) or go below 8 channels."""
    if width < MIN_WIDTH:
        return None
    blocks = list(spec.blocks)
    if group.kind == "expand":
        i = group.producer
        blocks[i] = dataclasses.replace(blocks[i], exp_channels=width)
        candidate = dataclasses.replace(spec, blocks=tuple(blocks)) if _wide_enough(blocks) else None
        return candidate if candidate is not None and _structure(candidate) == _structure(spec) else None
    stem = spec.stem
    if group.producer < 0:
        stem = dataclasses.replace(stem, out_channels=width)
    else:
        blocks[group.producer] = dataclasses.replace(blocks[group.producer], out_channels=width)
    consumers = list(group.blocks)
    after = (group.blocks[-1] if group.blocks else group.producer) + 1
    if after < len(blocks):
        consumers.append(after)
    for j in consumers:
        old = blocks[j]
        changes = {"in_channels": width}
        if not old.has_expand:
            changes["exp_channels"] = width      # no expand conv: the depthwise runs on the input
        if j in group.blocks:
            changes["out_channels"] = width      # residual: in == out
        blocks[j] = dataclasses.replace(old, **changes)
    if not _wide_enough(blocks):
        return None
    candidate = dataclasses.replace(spec, stem=stem, blocks=tuple(blocks))
    return candidate if _structure(candidate) == _structure(spec) else None


def _wide_enough(blocks: list) -> bool:
    return all(min(b.in_channels, b.exp_channels, b.out_channels) >= MIN_WIDTH for b in blocks)


def candidate_widths(spec: ArchSpec, group: Group) -> list[int]:
    """Valid smaller widths of ``group``, largest first, in steps of 8 channels."""
    current = group.width(spec)
    return [w for w in range(current - STEP, MIN_WIDTH - 1, -STEP) if with_width(spec, group, w) is not None]


def propose(spec: ArchSpec, group: Group, predictor: Predictor, delta_ms: float,
            start_ms: float | None = None) -> Proposal | None:
    """The smallest cut of ``group`` whose predicted saving is >= ``delta_ms``, or None."""
    start_ms = predictor.predict(spec) if start_ms is None else start_ms
    old = group.width(spec)
    for width in candidate_widths(spec, group):
        candidate = with_width(spec, group, width)
        predicted = predictor.predict(candidate)
        if start_ms - predicted >= delta_ms:
            return Proposal(group, old, width, candidate, predicted, start_ms - predicted)
    return None


def make_proposals(spec: ArchSpec, predictor: Predictor, delta_ms: float) -> list[Proposal]:
    """One proposal per group that can save ``delta_ms`` (groups that cannot are left out)."""
    if not delta_ms > 0:
        raise ValueError(f"delta must be > 0 ms, got {delta_ms}")
    start = predictor.predict(spec)
    found = (propose(spec, group, predictor, delta_ms, start) for group in width_groups(spec))
    return [p for p in found if p is not None]


def smallest_reachable(spec: ArchSpec) -> ArchSpec:
    """The network with every group shrunk as far as the structure rules allow (repeated until no
    group can shrink further, since groups limit each other through the structure rules)."""
    changed = True
    while changed:
        changed = False
        for group in width_groups(spec):
            widths = candidate_widths(spec, group)
            if widths:
                spec, changed = with_width(spec, group, widths[-1]), True
    return spec


def all_candidates(spec: ArchSpec) -> Iterable[ArchSpec]:
    """Every single-group shrink of ``spec`` (what one iteration may ask the latency table for)."""
    for group in width_groups(spec):
        for width in candidate_widths(spec, group):
            yield with_width(spec, group, width)
