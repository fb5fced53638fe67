"""Datasets held in memory as uint8 tensors, seeded splits and a whole-batch input pipeline.

``load_data(name)`` returns :class:`DataSplits` (train / val / test). The val split is held out of
the training files with a fixed seed; the test split is meant for final reports only.
"""

from __future__ import annotations

from pathlib import Path

from nas.errors import NasError
from nas.data.batches import Augment, Normalizer, augment_batch, eval_batches, steps_per_epoch, train_batches
from nas.data.splits import DataSplits, ImageDataset, channel_stats, make_splits

DATASETS = ("fashion-mnist", "cifar10", "folder")
ALIASES = {"fashion-mnist": "fashion-mnist", "fashion_mnist": "fashion-mnist", "fmnist": "fashion-mnist",
           "cifar10": "cifar10", "cifar-10": "cifar10", "folder": "folder"}


def _key(name: str) -> str:
    key = ALIASES.get(name.lower())
    if key is None:
        raise NasError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return key


def check_data(name: str, data_dir: str | Path | None = None) -> None:
    """Raise the one-line :class:`NasError` that ``load_data`` would, without reading the images:
    for long jobs to check before work that comes first (a table build)."""
    key = _key(name)
    if key == "fashion-mnist":
        from nas.data.fashion_mnist import find_fashion_mnist

        find_fashion_mnist(data_dir)
    elif key == "cifar10":
        from nas.data.cifar10 import find_cifar10

        find_cifar10(data_dir)
    elif data_dir is None or not Path(data_dir).is_dir():
        from nas.data.folder import load_folder

        load_folder(data_dir)  # raises its own message for a missing folder


def load_data(
    name: str = "fashion-mnist",
    data_dir: str | Path | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    subset: int | None = None,
    image_size: int | tuple[int, int] | None = None,
) -> DataSplits:
    """Load a dataset by name (``fashion-mnist``, ``cifar10`` or ``folder``) into seeded splits."""
    key = _key(name)
    if key == "fashion-mnist":
        from nas.data.fashion_mnist import load_fashion_mnist

        train, test = load_fashion_mnist(data_dir)
    elif key == "cifar10":
        from nas.data.cifar10 import load_cifar10

        train, test = load_cifar10(data_dir)
    else:
        from nas.data.folder import load_folder

        train, test = load_folder(data_dir, image_size)
    return make_splits(train, test, val_fraction=val_fraction, seed=seed, subset=subset)


__all__ = [
    "Augment", "DATASETS", "DataSplits", "ImageDataset", "Normalizer", "augment_batch", "channel_stats", "check_data",
    "eval_batches", "load_data", "make_splits", "steps_per_epoch", "train_batches",
]
