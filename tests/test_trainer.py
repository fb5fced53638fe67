"""The training loop, its config, train_network and the ``nas train`` command (tiny models only)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn

from nas.cli import main
from nas.data import DataSplits, ImageDataset, eval_batches
from nas.errors import NasError
from nas.train import TrainConfig, evaluate, load_model, lr_at, train, train_network, validate


def toy_splits(n: int = 256, size: int = 8, classes: int = 3) -> DataSplits:
    """Learnable toy data: the class decides which horizontal band of the image is bright."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % classes
    images = torch.randint(0, 60, (n, 1, size, size), generator=gen, dtype=torch.uint8)
    band = size // classes
    for c in range(classes):
        images[labels == c, :, c * band : (c + 1) * band, :] += 150
    data = ImageDataset(images, labels, [f"c{i}" for i in range(classes)], (0.3,), (0.3,))
    parts = torch.arange(n)
    return DataSplits(data.select(parts[: n // 2]), data.select(parts[n // 2 : 3 * n // 4]), data.select(parts[3 * n // 4 :]))


class Tiny(nn.Module):
    def __init__(self, classes: int = 3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.1), nn.Linear(16, classes))

    def forward(self, x):
        return self.body(x)


def tiny_model(seed: int = 0) -> Tiny:
    torch.manual_seed(seed)
    return Tiny()


def fast_config(**changes) -> TrainConfig:
    base = dict(steps=24, batch_size=16, lr=0.05, threads=1, eval_every=1.0, augment=True)
    return TrainConfig(**(base | changes))


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "exactly one"),
    (dict(epochs=1, steps=2), "exactly one"),
    (dict(epochs=-1), "epochs"),
    (dict(steps=0), "steps"),
    (dict(steps=2, optimizer="rmsprop"), "optimizer"),
    (dict(steps=2, lr=-1.0), "lr: must be > 0"),
    (dict(steps=2, batch_size=0), "batch_size"),
    (dict(steps=2, label_smoothing=1.0), "label_smoothing: must be < 1"),
    (dict(steps=2, eval_every=0), "eval_every"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(NasError, match=match):
        TrainConfig(**kwargs)


def test_lr_schedule():
    assert lr_at(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(10, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(55, 1.0, 10, 100) == pytest.approx(0.5)
    assert lr_at(100, 1.0, 10, 100) == pytest.approx(0.0, abs=1e-12)
    assert TrainConfig(steps=5, batch_size=256).resolved()["lr"] == pytest.approx(0.2)


def test_training_is_reproducible_and_learns():
    splits = toy_splits()
    models = [tiny_model(), tiny_model()]
    results = [train(m, splits, fast_config(), progress=False) for m in models]
    for (k, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        assert torch.equal(a, b), k
    r = results[0]
    assert r.steps == 24 and r.epochs == pytest.approx(3.0) and len(r.history) == 3
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]
    assert r.val_acc > 0.6 and r.test_acc is None and r.images_per_sec > 0
    other = tiny_model()
    train(other, splits, fast_config(seed=1), progress=False)
    assert not torch.equal(other.body[0].weight, models[0].body[0].weight)


def test_report_stops_early_and_test_eval():
    calls = []

    def report(step, epoch, val_acc):
        calls.append((step, epoch, val_acc))
        return True

    r = train(tiny_model(), toy_splits(), fast_config(evaluate_test=True, optimizer="adamw", lr=0.01), progress=False,
              report=report)
    assert r.stopped_early and r.steps == 8 and calls == [(8, 1.0, r.val_acc)]
    assert 0.0 <= r.test_acc <= 1.0


def test_epochs_budget_and_evaluate_restores_mode():
    splits = toy_splits()
    model = tiny_model()
    r = train(model, splits, fast_config(steps=None, epochs=0.5, eval_every=None), progress=False)
    assert r.steps == 4 and len(r.history) == 1
    model.train()
    acc = evaluate(model, splits.val, batch_size=7)
    assert 0.0 <= acc <= 1.0 and model.training
    assert evaluate(model, splits.val) == acc


def test_validate_gives_the_accuracy_and_the_mean_cross_entropy_of_the_logits():
    splits = toy_splits()
    model = tiny_model()
    train(model, splits, fast_config(steps=4), progress=False)
    figures = validate(model, splits.val, batch_size=7, fold_bn=False)
    model.eval()
    images, labels = next(eval_batches(splits.val, len(splits.val), channels_last=True))
    with torch.no_grad():
        logits = model(images)
    assert figures.accuracy == int((logits.argmax(1) == labels).sum()) / len(labels)
    assert figures.loss == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-5)
    assert figures.likelihood == pytest.approx(math.exp(-figures.loss)) and 0 < figures.likelihood < 1


def test_a_training_reports_its_final_val_loss_with_its_accuracy():
    splits = toy_splits()
    model = tiny_model()
    result = train(model, splits, fast_config(steps=8, eval_every=0.5), progress=False)
    assert result.history[-1]["val_loss"] == result.val_loss and len(result.history) == 2
    again = validate(model, splits.val)
    assert (result.val_acc, result.val_loss) == (again.accuracy, again.loss)


def test_diverging_training_is_nas_error():
    splits = toy_splits()
    with pytest.raises(NasError, match="diverged"):
        train(tiny_model(), splits, fast_config(lr=1e30, label_smoothing=0.0, warmup_steps=0), progress=False)


def tiny_spec(resolution: int = 8):
    from nas.spec import mobilenetv3_small

    return mobilenetv3_small(width_mult=0.25, num_classes=3, resolution=resolution, in_channels=1)


def test_train_network_writes_outputs(tmp_path):
    splits = toy_splits()
    report = train_network(tiny_spec(), splits, config=fast_config(steps=6), out=tmp_path / "run", progress=False)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("val_acc", "test_acc", "seconds", "seconds_per_epoch", "images_per_sec", "params", "config"):
        assert key in metrics, key
    assert metrics["test_acc"] is not None and metrics["params"] == sum(p.numel() for p in report.model.parameters())
    spec, model = load_model(tmp_path / "run" / "checkpoint.pt")
    assert spec == report.spec
    report.model.eval().to(memory_format=torch.contiguous_format)  # trained channels-last; loaded NCHW
    x = torch.randn(2, 1, 8, 8)
    with torch.inference_mode():
        assert torch.equal(model(x), report.model(x))
    with pytest.raises(NasError, match="classes"):
        train_network(tiny_spec().with_io(num_classes=5), splits, config=fast_config(steps=1), progress=False)


def test_cli_train_folder(tmp_path, capsys):
    from PIL import Image

    for cls, value in (("a", 20), ("b", 230)):
        for i in range(12):
            path = tmp_path / "data" / "train" / cls / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (8, 8), value).save(path)
    status = main(["train", "mobilenetv3-small", "--width-mult", "0.25", "--data", "folder", "--data-dir",
                   str(tmp_path / "data"), "--steps", "2", "--batch-size", "8", "--threads", "1", "--json",
                   "--no-progress", "--val-fraction", "0.25", "--out", str(tmp_path / "out")])
    assert status == 0
    out = json.loads(capsys.readouterr().out)
    assert {"val_acc", "test_acc", "seconds", "seconds_per_epoch", "images_per_sec", "out"} <= set(out)
    assert math.isfinite(out["images_per_sec"]) and (tmp_path / "out" / "checkpoint.pt").is_file()


def test_cli_missing_data_dir(tmp_path, capsys):
    status = main(["train", "mobilenetv3-small", "--data", "folder", "--data-dir", str(tmp_path / "nope"), "--steps", "1"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "does not exist" in err
