"""Per-channel sums of channels-last activations in two stages, which inductor parallelises well.

In a channels-last (N, C, H, W) tensor a per-channel sum runs over all rows (batch x height x width),
the channels innermost. Inductor's CPU code for ``t.sum((0, 2, 3))`` (and for ``nn.BatchNorm2d``'s
statistics) reduces one slice of 16-32 channels at a time over all rows; written as sums over a fixed
number of row blocks and then over the blocks (:func:`channel_sums`), the same sums become loops over
the rows with every channel vectorised, split across the threads by block. Used by BatchNorm's
training step (:mod:`nas.train.batchnorm`) and the depthwise tap sums (:mod:`nas.train.depthwise`)
of compiled trainings.
"""

from __future__ import annotations

import torch

# Row blocks of the first stage of the sums: at most this many, a power of two dividing the rows.
ROW_BLOCKS = 16


def row_blocks(rows: int) -> int:
    """The largest power of two up to :data:`ROW_BLOCKS` that divides ``rows``."""
    blocks = ROW_BLOCKS
    while rows % blocks:
        blocks //= 2
    return blocks


def channel_sums(rows: torch.Tensor) -> torch.Tensor:
    """Per-channel sums of a (rows, channels) tensor, over row blocks first and then over the blocks."""
    count, channels = rows.shape
    blocks = row_blocks(count)
    return rows.view(blocks, count // blocks, channels).sum(1).sum(0)


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) as (N*H*W, C): a view for a channels-last tensor."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
