"""In-memory datasets and seeded, deterministic train/val/test splits."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch

from nas.errors import NasError


@dataclass
class ImageDataset:
    """Images as one uint8 tensor (N, C, H, W), int64 labels and per-channel normalisation."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError("images must be a uint8 tensor of shape (N, C, H, W)")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must be an int64 tensor of shape (N,)")
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError("mean/std need one value per channel")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def resolution(self) -> tuple[int, int]:
        """(height, width)."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    def select(self, indices: torch.Tensor) -> ImageDataset:
        """A new dataset with the given rows (copied, contiguous)."""
        indices = indices.to(torch.int64)
        return ImageDataset(
            self.images.index_select(0, indices).contiguous(),
            self.labels.index_select(0, indices).contiguous(),
            list(self.classes),
            self.mean,
            self.std,
        )


@dataclass
class DataSplits:
    """Train (for fitting), val (for monitoring and search) and test (final reports only)."""

    train: ImageDataset
    val: ImageDataset
    test: ImageDataset

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def identity(self) -> list[int]:
        """What tells two loadings apart for resuming a training on them: the train and val sizes and
        checksums of the training labels and first images."""
        train = self.train
        return [len(train), len(self.val), zlib.crc32(train.labels.numpy().tobytes()),
                zlib.crc32(train.images[:64].numpy().tobytes())]


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, scaled to [0, 1]."""
    if images.shape[0] == 0:
        raise NasError("cannot compute normalisation statistics of an empty dataset")
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(round(float(v), 4) for v in mean), tuple(round(max(float(v), 1e-3), 4) for v in std)


def holdout_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified seeded split of row indices into (keep, holdout); both sorted ascending."""
    if not 0.0 < fraction < 1.0:
        raise NasError(f"held-out fraction must be between 0 and 1 (exclusive), got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    classes = torch.unique(labels).tolist()
    rows_per_class = [torch.nonzero(labels == cls).flatten() for cls in classes]
    quotas = _allocate([r.numel() for r in rows_per_class], fraction)
    keep, held = [], []
    for rows, n_held in zip(rows_per_class, quotas):
        rows = rows[torch.randperm(rows.numel(), generator=generator)]
        held.append(rows[:n_held])
        keep.append(rows[n_held:])
    keep_idx, held_idx = torch.cat(keep).sort().values, torch.cat(held).sort().values
    if keep_idx.numel() == 0 or held_idx.numel() == 0:
        raise NasError(f"too few images ({labels.numel()}) to hold out a fraction of {fraction}")
    return keep_idx, held_idx


def _allocate(counts: list[int], fraction: float) -> list[int]:
    """Per-class held-out counts summing to round(fraction * total) (largest remainders first)."""
    exact = [fraction * c for c in counts]
    quotas = [int(e) for e in exact]
    missing = int(round(fraction * sum(counts))) - sum(quotas)
    order = sorted(range(len(counts)), key=lambda i: (-(exact[i] - quotas[i]), i))
    for i in order[: max(0, missing)]:
        quotas[i] += 1
    return quotas


def take_subset(n: int, subset: int, seed: int) -> torch.Tensor:
    """Seeded choice of ``subset`` of ``n`` row indices, sorted ascending."""
    if subset <= 0:
        raise NasError(f"subset must be a positive number of images, got {subset}")
    if subset > n:
        raise NasError(f"subset of {subset} images asked but the training split has only {n}")
    generator = torch.Generator().manual_seed(seed + 1)
    return torch.randperm(n, generator=generator)[:subset].sort().values


def make_splits(
    train: ImageDataset,
    test: ImageDataset | None,
    val_fraction: float = 0.1,
    seed: int = 0,
    subset: int | None = None,
) -> DataSplits:
    """Hold out val (and test, when ``test`` is None) from ``train``; optionally subsample train."""
    if test is None:
        keep, held = holdout_split(train.labels, val_fraction, seed + 1000)
        test = train.select(held)
        train = train.select(keep)
    keep, held = holdout_split(train.labels, val_fraction, seed)
    val = train.select(held)
    if subset is not None:
        keep = keep[take_subset(keep.numel(), subset, seed)]
    return DataSplits(train.select(keep), val, test)
