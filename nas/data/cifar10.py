"""CIFAR-10 from the *binary* version (``cifar-10-batches-bin``); nothing is unpickled."""

from __future__ import annotations

from pathlib import Path

import torch

from nas.errors import NasError
from nas.data.splits import ImageDataset

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_FILE = "test_batch.bin"
RECORD = 1 + 3 * 32 * 32
HINT = "pass --data-dir pointing at the CIFAR-10 binary version (cifar-10-batches-bin)"


def read_cifar_batch(path: str | Path, num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Parse one binary batch: records of 1 label byte + 3072 pixel bytes (R, G, B planes)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise NasError(f"{path}: cannot read CIFAR-10 batch ({exc})") from None
    if not raw or len(raw) % RECORD:
        raise NasError(f"{path}: size {len(raw)} is not a multiple of {RECORD}-byte records (truncated or not CIFAR-10 binary)")
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(-1, RECORD)
    labels = data[:, 0].to(torch.int64)
    if int(labels.max()) >= num_classes:
        raise NasError(f"{path}: label {int(labels.max())} out of range 0..{num_classes - 1} (not CIFAR-10 binary?)")
    return data[:, 1:].reshape(-1, 3, 32, 32).contiguous(), labels


def find_cifar10(data_dir: str | Path | None) -> Path:
    """The folder holding ``data_batch_*.bin``: ``data_dir`` or its ``cifar-10-batches-bin``."""
    if data_dir is None:
        raise NasError(f"CIFAR-10 has no default location; {HINT}")
    base = Path(data_dir)
    if not base.is_dir():
        raise NasError(f"CIFAR-10 data directory {base} does not exist; {HINT}")
    for folder in (base, base / "cifar-10-batches-bin"):
        if (folder / TEST_FILE).is_file() and all((folder / f).is_file() for f in TRAIN_FILES):
            return folder
    raise NasError(f"CIFAR-10 binary files (data_batch_1.bin .. data_batch_5.bin, test_batch.bin) not found in {base}; {HINT}")


def read_class_names(folder: Path) -> list[str]:
    """Class names from ``batches.meta.txt`` (one per line) or the standard list."""
    meta = folder / "batches.meta.txt"
    if not meta.is_file():
        return list(CLASSES)
    names = [line.strip() for line in meta.read_text(errors="replace").splitlines() if line.strip()]
    if len(names) != len(CLASSES):
        raise NasError(f"{meta}: expected {len(CLASSES)} class names, found {len(names)}")
    return names


def load_cifar10(data_dir: str | Path | None) -> tuple[ImageDataset, ImageDataset]:
    """(train, test) datasets of 32x32 RGB images."""
    folder = find_cifar10(data_dir)
    classes = read_class_names(folder)
    parts = [read_cifar_batch(folder / name) for name in TRAIN_FILES]
    train_images = torch.cat([p[0] for p in parts])
    train_labels = torch.cat([p[1] for p in parts])
    test_images, test_labels = read_cifar_batch(folder / TEST_FILE)
    train = ImageDataset(train_images, train_labels, classes, MEAN, STD)
    test = ImageDataset(test_images, test_labels, list(classes), MEAN, STD)
    return train, test
