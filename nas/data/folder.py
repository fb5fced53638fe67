"""Image folders: ``DIR/train/<class>/*.png|jpg`` and optionally ``DIR/test/<class>/...``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nas.errors import NasError
from nas.data.splits import ImageDataset, channel_stats

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def scan_split(root: Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """Image paths, label indices and class names (sorted sub-folder names) under ``root``."""
    if not root.is_dir():
        raise NasError(f"image folder {root} does not exist")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise NasError(f"image folder {root} has no class sub-folders (expected {root}/<class>/*.png)")
    if classes is None:
        classes = found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise NasError(f"image folder {root} has classes not in the training set: {', '.join(unknown[:5])}")
    paths, labels = [], []
    for name in found:
        files = sorted(p for p in (root / name).iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)
        if not files:
            raise NasError(f"class folder {root / name} has no images (.png, .jpg, ...)")
        paths += files
        labels += [classes.index(name)] * len(files)
    return paths, labels, classes


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise NasError(f"{path}: cannot read image ({exc})") from None
    return image


def _header(path: Path) -> tuple[str, tuple[int, int]]:
    """(mode, (width, height)) read from the file header only."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.mode, image.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise NasError(f"{path}: cannot read image ({exc})") from None


def load_images(paths: list[Path], mode: str, size: tuple[int, int]) -> torch.Tensor:
    """Decode, convert to ``mode`` (RGB or L) and resize to ``size`` (width, height): uint8 NCHW."""
    from PIL import Image

    channels = 1 if mode == "L" else 3
    out = torch.empty(len(paths), channels, size[1], size[0], dtype=torch.uint8)
    for i, path in enumerate(paths):
        image = _open(path)
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            image = Image.fromarray((np.asarray(image, dtype=np.float64) / 256.0).clip(0, 255).astype(np.uint8))
        image = image.convert(mode)
        if image.size != size:
            image = image.resize(size, Image.BILINEAR)
        array = np.asarray(image, dtype=np.uint8).reshape(size[1], size[0], channels)
        out[i] = torch.from_numpy(array.copy()).permute(2, 0, 1)
    return out


def _parse_size(image_size: int | tuple[int, int] | None, first: tuple[int, int]) -> tuple[int, int]:
    if image_size is None:
        return first
    size = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[1]), int(image_size[0]))
    if min(size) < 1:
        raise NasError(f"image size must be positive, got {image_size}")
    return size


def load_folder(
    data_dir: str | Path | None, image_size: int | tuple[int, int] | None = None
) -> tuple[ImageDataset, ImageDataset | None]:
    """(train, test or None). ``image_size`` is an int or (height, width); default: first image's size."""
    if data_dir is None:
        raise NasError("the folder dataset needs --data-dir DIR with DIR/train/<class>/*.png")
    root = Path(data_dir)
    if not root.is_dir():
        raise NasError(f"image folder {root} does not exist")
    train_paths, train_labels, classes = scan_split(root / "train")
    test_paths, test_labels = [], []
    if (root / "test").is_dir():
        test_paths, test_labels, _ = scan_split(root / "test", classes)
    headers = [_header(p) for p in train_paths + test_paths]
    mode = "L" if all(m in GRAY_MODES for m, _ in headers) else "RGB"
    size = _parse_size(image_size, headers[0][1])
    train_images = load_images(train_paths, mode, size)
    mean, std = channel_stats(train_images)
    train = ImageDataset(train_images, torch.tensor(train_labels, dtype=torch.int64), classes, mean, std)
    if not test_paths:
        return train, None
    test_images = load_images(test_paths, mode, size)
    return train, ImageDataset(test_images, torch.tensor(test_labels, dtype=torch.int64), list(classes), mean, std)
