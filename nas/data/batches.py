"""Whole-batch input pipeline over in-memory uint8 tensors (no per-sample Dataset/DataLoader).

Random crop (zero padding) and horizontal flip are done together as one ``torch.gather`` on the
flattened, padded batch; float conversion and normalisation are one multiply-add.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from nas.errors import NasError
from nas.data.splits import ImageDataset


@dataclass(frozen=True)
class Augment:
    """Training augmentation. ``crop_padding=None`` means resolution // 8 (4 at 32x32, 3 at 28x28)."""

    enabled: bool = True
    crop_padding: int | None = None
    hflip: bool = True

    def padding_for(self, height: int) -> int:
        return max(0, height // 8) if self.crop_padding is None else self.crop_padding


def augment_batch(images: torch.Tensor, padding: int, hflip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip of a uint8 (or float) NCHW batch."""
    if padding < 0:
        raise NasError(f"crop padding must be >= 0, got {padding}")
    n, c, h, w = images.shape
    if n == 0 or (padding == 0 and not hflip):
        return images
    hp, wp = h + 2 * padding, w + 2 * padding
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    cols = torch.arange(w).expand(n, w)
    if hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        cols = torch.where(flip[:, None], cols.flip(1), cols)
    rows = torch.arange(h) * wp
    index = (rows.view(1, h, 1) + (cols + ox[:, None]).view(n, 1, w) + (oy * wp).view(n, 1, 1)).view(n, 1, h * w)
    out = torch.gather(padded.reshape(n, c, hp * wp), 2, index.expand(n, c, h * w))
    return out.view(n, c, h, w)


class Normalizer:
    """uint8 NCHW batch -> normalised float32 ``(x / 255 - mean) / std`` in one multiply-add."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], channels_last: bool = False):
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) / std_t
        self.channels_last = channels_last

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        x = images.to(dtype=torch.float32, memory_format=fmt)
        return torch.addcmul(self.shift, x, self.scale).contiguous(memory_format=fmt)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Training steps per epoch (the last partial batch is dropped unless it is the only one)."""
    return max(1, n // batch_size)


def train_batches(
    dataset: ImageDataset,
    batch_size: int,
    generator: torch.Generator,
    augment: Augment = Augment(),
    channels_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless stream of shuffled, augmented, normalised (images, labels) batches."""
    n = len(dataset)
    if n == 0:
        raise NasError("the training split is empty")
    size = min(batch_size, n)
    per_epoch = steps_per_epoch(n, size)
    normalize = Normalizer(dataset.mean, dataset.std, channels_last)
    padding = augment.padding_for(dataset.resolution[0])
    while True:
        order = torch.randperm(n, generator=generator)
        for step in range(per_epoch):
            idx = order[step * size : (step + 1) * size]
            images = dataset.images.index_select(0, idx)
            if augment.enabled:
                images = augment_batch(images, padding, augment.hflip, generator)
            yield normalize(images), dataset.labels.index_select(0, idx)


def eval_batches(
    dataset: ImageDataset, batch_size: int = 512, channels_last: bool = False
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """All rows in order, normalised, without augmentation."""
    normalize = Normalizer(dataset.mean, dataset.std, channels_last)
    for start in range(0, len(dataset), batch_size):
        yield normalize(dataset.images[start : start + batch_size]), dataset.labels[start : start + batch_size]
