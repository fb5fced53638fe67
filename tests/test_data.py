"""Dataset parsing (IDX, CIFAR binary, image folders), splits and the batch pipeline."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nas.data import (Augment, ImageDataset, Normalizer, augment_batch, eval_batches, load_data, make_splits,
                      train_batches)
from nas.data.cifar10 import load_cifar10, read_cifar_batch
from nas.data.fashion_mnist import FALLBACK_DIR, find_fashion_mnist, load_fashion_mnist, parse_idx, read_idx
from nas.data.folder import load_folder
from nas.data.splits import holdout_split, take_subset
from nas.errors import NasError


def idx_bytes(tensor: torch.Tensor) -> bytes:
    header = bytes([0, 0, 0x08, tensor.dim()]) + b"".join(d.to_bytes(4, "big") for d in tensor.shape)
    return header + tensor.to(torch.uint8).numpy().tobytes()


def write_fmnist(folder: Path, n_train: int = 30, n_test: int = 10) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = torch.randint(0, 256, (n, 28, 28), generator=gen, dtype=torch.uint8)
        labels = torch.arange(n) % 10
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))


def toy_dataset(n: int = 40, classes: int = 4, channels: int = 1, size: int = 8) -> ImageDataset:
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, channels, size, size), generator=gen, dtype=torch.uint8)
    labels = torch.arange(n) % classes
    return ImageDataset(images, labels, [str(i) for i in range(classes)], (0.5,) * channels, (0.25,) * channels)


# --- IDX / Fashion-MNIST -------------------------------------------------------------------------


def test_parse_idx_roundtrip(tmp_path):
    data = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    assert torch.equal(parse_idx(idx_bytes(data)), data)
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(data)))
    assert torch.equal(read_idx(path), data)


def test_load_fashion_mnist_from_dir(tmp_path):
    write_fmnist(tmp_path)
    train, test = load_fashion_mnist(tmp_path)
    assert train.images.shape == (30, 1, 28, 28) and test.images.shape == (10, 1, 28, 28)
    assert train.labels.dtype == torch.int64 and train.num_classes == 10
    splits = load_data("fashion-mnist", tmp_path, val_fraction=0.2)
    assert splits.sizes() == {"train": 24, "val": 6, "test": 10}


@pytest.mark.parametrize("raw, match", [
    (b"\x01\x02\x08\x01" + (3).to_bytes(4, "big") + b"abc", "bad magic"),
    (bytes([0, 0, 0x08, 1]) + (5).to_bytes(4, "big") + b"abc", "truncated"),
    (bytes([0, 0, 0x0D, 1]) + (1).to_bytes(4, "big") + b"abcd", "element type"),
    (bytes([0, 0, 0x08, 3]) + b"\x00", "truncated IDX header"),
])
def test_bad_idx_is_nas_error_naming_file(tmp_path, raw, match):
    path = tmp_path / "bad-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(raw))
    with pytest.raises(NasError, match=match) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_gzip_is_nas_error(tmp_path):
    write_fmnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(NasError, match="train-images"):
        load_fashion_mnist(tmp_path)


def test_label_count_mismatch(tmp_path):
    write_fmnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(torch.zeros(3))))
    with pytest.raises(NasError, match="t10k-labels"):
        load_fashion_mnist(tmp_path)


def test_missing_fashion_mnist_names_install(tmp_path):
    with pytest.raises(NasError, match="apt-get install -y dataset-fashion-mnist"):
        find_fashion_mnist(tmp_path / "nope")
    with pytest.raises(NasError, match="--data-dir"):
        find_fashion_mnist(tmp_path)


@pytest.mark.skipif(not (FALLBACK_DIR / "train-images-idx3-ubyte.gz").is_file(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    train, test = load_fashion_mnist()
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert int(train.labels.min()) == 0 and int(train.labels.max()) == 9
    assert torch.equal(torch.bincount(test.labels), torch.full((10,), 1000))


# --- CIFAR-10 binary -----------------------------------------------------------------------------


def write_cifar(folder: Path, per_batch: int = 4) -> torch.Tensor:
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    first = None
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = torch.randint(0, 256, (per_batch, 3073), generator=gen, dtype=torch.uint8)
        records[:, 0] = torch.arange(per_batch) % 10
        first = records if first is None else first
        (folder / name).write_bytes(records.numpy().tobytes())
    (folder / "batches.meta.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n\n")
    return first


def test_cifar_binary(tmp_path):
    first = write_cifar(tmp_path / "cifar-10-batches-bin")
    train, test = load_cifar10(tmp_path)
    assert train.images.shape == (20, 3, 32, 32) and test.images.shape == (4, 3, 32, 32)
    assert train.classes[3] == "c3"
    assert torch.equal(train.images[0, 1].flatten(), first[0, 1 + 1024 : 1 + 2048])
    assert train.labels[:4].tolist() == [0, 1, 2, 3]


def test_cifar_truncated_and_missing(tmp_path):
    write_cifar(tmp_path)
    bad = tmp_path / "data_batch_3.bin"
    bad.write_bytes(bad.read_bytes()[:-5])
    with pytest.raises(NasError, match="data_batch_3.bin"):
        read_cifar_batch(bad)
    with pytest.raises(NasError, match="--data-dir"):
        load_data("cifar10", tmp_path / "missing")
    with pytest.raises(NasError, match="unknown dataset"):
        load_data("mnist-ish")


# --- image folders -------------------------------------------------------------------------------


def write_png(path: Path, size: tuple[int, int], mode: str = "RGB", value: int = 100) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 255 - value, 7)
    Image.new(mode, size, color).save(path)


def test_folder_with_and_without_test(tmp_path):
    for cls, value in (("cat", 10), ("dog", 200)):
        for i in range(10):
            write_png(tmp_path / "train" / cls / f"{i}.png", (12, 10) if i else (16, 16), value=value)
    train, test = load_folder(tmp_path)
    assert test is None and train.classes == ["cat", "dog"]
    assert train.images.shape == (20, 3, 16, 16)  # size of the first image (sorted: cat/0.png)
    splits = load_data("folder", tmp_path, val_fraction=0.2, image_size=8)
    assert splits.train.images.shape[1:] == (3, 8, 8)
    assert sum(splits.sizes().values()) == 20 and min(splits.sizes().values()) > 0
    write_png(tmp_path / "test" / "dog" / "x.png", (5, 5), value=200)
    splits = load_data("folder", tmp_path, val_fraction=0.2)
    assert len(splits.test) == 1 and splits.test.labels.tolist() == [1]


def test_folder_grayscale(tmp_path):
    for cls in ("a", "b"):
        for i in range(3):
            write_png(tmp_path / "train" / cls / f"{i}.png", (6, 6), mode="L", value=50)
    train, _ = load_folder(tmp_path)
    assert train.images.shape == (6, 1, 6, 6) and int(train.images[0, 0, 0, 0]) == 50
    assert len(train.mean) == 1


def test_folder_errors(tmp_path):
    with pytest.raises(NasError, match="does not exist"):
        load_folder(tmp_path / "none")
    (tmp_path / "train").mkdir()
    with pytest.raises(NasError, match="no class sub-folders"):
        load_folder(tmp_path)
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(NasError, match="has no images"):
        load_folder(tmp_path)
    write_png(tmp_path / "train" / "empty" / "ok.png", (4, 4))
    bad = tmp_path / "train" / "empty" / "zbad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(NasError, match="zbad.png"):
        load_folder(tmp_path)


# --- splits --------------------------------------------------------------------------------------


def test_holdout_split_deterministic_disjoint_stratified():
    labels = torch.arange(1000) % 10
    keep, held = holdout_split(labels, 0.1, seed=3)
    keep2, held2 = holdout_split(labels, 0.1, seed=3)
    assert torch.equal(keep, keep2) and torch.equal(held, held2)
    assert len(set(keep.tolist()) & set(held.tolist())) == 0 and len(keep) + len(held) == 1000
    assert torch.equal(torch.bincount(labels[held]), torch.full((10,), 10))
    assert not torch.equal(held, holdout_split(labels, 0.1, seed=4)[1])
    with pytest.raises(NasError):
        holdout_split(labels, 1.5, seed=0)


def test_make_splits_subset():
    data = toy_dataset(200)
    a = make_splits(data, None, val_fraction=0.1, seed=0, subset=50)
    b = make_splits(data, None, val_fraction=0.1, seed=0, subset=50)
    assert a.sizes() == b.sizes() and len(a.train) == 50
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.val.labels, b.val.labels)
    rows = lambda d: {bytes(x.numpy().tobytes()) for x in d.images}  # noqa: E731
    assert not (rows(a.train) & rows(a.val)) and not (rows(a.val) & rows(a.test))
    assert len(take_subset(100, 10, 0)) == 10
    with pytest.raises(NasError, match="subset"):
        make_splits(data, None, subset=10_000)


# --- batches -------------------------------------------------------------------------------------


def test_augment_shapes_determinism_and_crops():
    x = torch.randint(0, 256, (6, 2, 5, 7), dtype=torch.uint8)
    out1 = augment_batch(x, 2, True, torch.Generator().manual_seed(5))
    out2 = augment_batch(x, 2, True, torch.Generator().manual_seed(5))
    assert out1.shape == x.shape and out1.dtype == torch.uint8 and torch.equal(out1, out2)
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(6):  # every output is a (possibly flipped) crop of the padded input
        crops = [padded[i, :, dy : dy + 5, dx : dx + 7] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out1[i], c) or torch.equal(out1[i], c.flip(2)) for c in crops)
    assert torch.equal(augment_batch(x, 0, False, torch.Generator()), x)
    flipped = augment_batch(x, 0, True, torch.Generator().manual_seed(0))
    assert all(torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2)) for i in range(6))


def test_normalizer_and_batches():
    data = toy_dataset(40, channels=3)
    x = Normalizer(data.mean, data.std)(data.images[:4])
    ref = (data.images[:4].float() / 255 - 0.5) / 0.25
    assert torch.allclose(x, ref, atol=1e-5)
    gen = torch.Generator().manual_seed(0)
    stream = train_batches(data, 16, gen, Augment(enabled=True))
    shapes = [next(stream)[0].shape for _ in range(5)]  # 2 steps per epoch, then reshuffled
    assert all(s == (16, 3, 8, 8) for s in shapes)
    seen = torch.cat([y for _, y in eval_batches(data, 16)])
    assert torch.equal(seen, data.labels)
    a = next(train_batches(data, 8, torch.Generator().manual_seed(1)))
    b = next(train_batches(data, 8, torch.Generator().manual_seed(1)))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
