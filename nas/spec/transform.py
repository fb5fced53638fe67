"""Whole-network spec transformations."""

from __future__ import annotations

import dataclasses

from nas.spec.arch import ArchSpec, make_divisible


def scale_widths(spec: ArchSpec, mult: float) -> ArchSpec:
    """A uniform width multiplier: stem, expansion and output widths times ``mult``, rounded with
    ``make_divisible(c * mult, 8)``. The structure is kept: blocks without an expansion conv keep
    ``exp == in``, blocks with one keep it. The last stage and head are unchanged."""
    scale = lambda c: make_divisible(c * mult, 8)  # noqa: E731
    stem = dataclasses.replace(spec.stem, out_channels=scale(spec.stem.out_channels))
    blocks, cin = [], stem.out_channels
    for b in spec.blocks:
        exp = cin if not b.has_expand else scale(b.exp_channels)
        if b.has_expand and exp == cin:
            exp += 8  # keep the expansion conv
        blocks.append(dataclasses.replace(b, in_channels=cin, exp_channels=exp, out_channels=scale(b.out_channels)))
        cin = blocks[-1].out_channels
    return dataclasses.replace(spec, stem=stem, blocks=tuple(blocks))
