"""Fashion-MNIST from the standard IDX files (gzip-compressed or plain)."""

from __future__ import annotations

import gzip
import subprocess
from functools import lru_cache
from pathlib import Path

import torch

from nas.errors import NasError
from nas.data.splits import ImageDataset

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MEAN = (0.2860,)
STD = (0.3530,)
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DEBIAN_PACKAGE = "dataset-fashion-mnist"
FALLBACK_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = f"install it with `apt-get install -y {DEBIAN_PACKAGE}` or pass --data-dir"


def read_idx(path: str | Path) -> torch.Tensor:
    """Parse one IDX file of unsigned bytes (``.gz`` or plain) into a uint8 tensor."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise NasError(f"{path}: cannot read IDX file ({exc})") from None
    return parse_idx(raw, str(path))


def parse_idx(raw: bytes, name: str = "<idx>") -> torch.Tensor:
    """Parse IDX bytes: magic (0, 0, type, ndim), big-endian uint32 dims, then the data."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise NasError(f"{name}: not an IDX file (bad magic number)")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != 0x08:
        raise NasError(f"{name}: unsupported IDX element type 0x{dtype_code:02x} (only unsigned bytes)")
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise NasError(f"{name}: truncated IDX header")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset, count = 4 + 4 * ndim, 1
    for d in dims:
        count *= d
    if len(raw) - offset != count:
        raise NasError(f"{name}: IDX data has {len(raw) - offset} bytes, header {dims} needs {count} (truncated?)")
    return torch.frombuffer(bytearray(raw[offset:]), dtype=torch.uint8).reshape(dims)


def _find_file(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")):
        if (directory / name).is_file():
            return directory / name
    return None


def _dpkg_dirs() -> list[Path]:
    """Folders holding the IDX files according to ``dpkg -L``; empty when dpkg is missing."""
    try:
        out = subprocess.run(["dpkg", "-L", DEBIAN_PACKAGE], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    return [Path(line).parent for line in out.stdout.splitlines() if line.strip().endswith(FILES["train_images"] + ".gz")]


def find_fashion_mnist(data_dir: str | Path | None = None) -> Path:
    """The folder with the four IDX files: ``data_dir`` if given, else the Debian package's."""
    if data_dir is not None:
        base = Path(data_dir)
        if not base.is_dir():
            raise NasError(f"Fashion-MNIST data directory {base} does not exist; {INSTALL_HINT}")
        candidates = [base, base / "fashion-mnist", base / "FashionMNIST" / "raw"]
    else:
        candidates = _dpkg_dirs() + [FALLBACK_DIR]
    for folder in candidates:
        if all(_find_file(folder, stem) for stem in FILES.values()):
            return folder
    where = str(data_dir) if data_dir is not None else f"{FALLBACK_DIR} (package {DEBIAN_PACKAGE})"
    raise NasError(f"Fashion-MNIST IDX files not found in {where}; {INSTALL_HINT}")


@lru_cache(maxsize=2)
def _load_arrays(folder: str, stamp: tuple) -> dict[str, torch.Tensor]:
    return {key: read_idx(_find_file(Path(folder), stem)) for key, stem in FILES.items()}


def _to_dataset(images: torch.Tensor, labels: torch.Tensor, names: tuple[str, str]) -> ImageDataset:
    if images.dim() != 3:
        raise NasError(f"{names[0]}: expected images of shape (N, H, W), got {tuple(images.shape)}")
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise NasError(f"{names[1]}: {tuple(labels.shape)} labels do not match {images.shape[0]} images")
    if labels.numel() and int(labels.max()) >= len(CLASSES):
        raise NasError(f"{names[1]}: label {int(labels.max())} out of range 0..{len(CLASSES) - 1}")
    return ImageDataset(images.unsqueeze(1), labels.to(torch.int64), list(CLASSES), MEAN, STD)


def load_fashion_mnist(data_dir: str | Path | None = None) -> tuple[ImageDataset, ImageDataset]:
    """(train, test) datasets of 28x28 grayscale images; parsed files are cached per process."""
    folder = find_fashion_mnist(data_dir)
    paths = [_find_file(folder, stem) for stem in FILES.values()]
    stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in paths)
    arrays = _load_arrays(str(folder), stamp)
    names = {key: str(_find_file(folder, stem)) for key, stem in FILES.items()}
    train = _to_dataset(arrays["train_images"], arrays["train_labels"], (names["train_images"], names["train_labels"]))
    test = _to_dataset(arrays["test_images"], arrays["test_labels"], (names["test_images"], names["test_labels"]))
    return train, test
