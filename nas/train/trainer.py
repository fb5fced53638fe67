"""A small, seeded CPU training loop: SGD/AdamW, warmup + cosine to 0, label smoothing."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from nas.data import Augment, DataSplits, ImageDataset, eval_batches, steps_per_epoch, train_batches
from nas.errors import NasError

ReportFn = Callable[[int, float, float], bool]
DEFAULT_LR = {"sgd": 0.1, "adamw": 0.002}
DEFAULT_WD = {"sgd": 5e-5, "adamw": 0.05}


@dataclass
class TrainConfig:
    """Training settings; exactly one of ``epochs`` and ``steps`` is the budget.

    ``lr``/``weight_decay``/``warmup_steps`` default per optimizer (see ``resolved()``). The SGD
    learning rate is for ``batch_size`` 128 and scales linearly with it. Weight decay skips
    biases and normalisation parameters.
    """

    epochs: float | None = None
    steps: int | None = None
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float = 0.9
    nesterov: bool = True
    label_smoothing: float = 0.1
    warmup_steps: int | None = None
    augment: bool = True
    crop_padding: int | None = None
    hflip: bool = True
    seed: int = 0
    threads: int | None = None
    eval_batch_size: int = 512
    eval_every: float | None = 1.0
    evaluate_test: bool = False
    channels_last: bool = True  # measured 2-3x faster training, ~6x faster eval on 2 cores

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if (self.epochs is None) == (self.steps is None):
            raise NasError("give exactly one training budget: epochs or steps")
        if self.epochs is not None and not self.epochs > 0:
            raise NasError(f"epochs must be > 0, got {self.epochs}")
        if self.steps is not None and (int(self.steps) != self.steps or self.steps < 1):
            raise NasError(f"steps must be a positive integer, got {self.steps}")
        if self.optimizer not in DEFAULT_LR:
            raise NasError(f"unknown optimizer {self.optimizer!r}; choose sgd or adamw")
        _positive_int("batch_size", self.batch_size)
        _positive_int("eval_batch_size", self.eval_batch_size)
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise NasError(f"learning rate must be > 0, got {self.lr}")
        if self.weight_decay is not None and not self.weight_decay >= 0:
            raise NasError(f"weight decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.momentum < 1:
            raise NasError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 <= self.label_smoothing < 1:
            raise NasError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.warmup_steps is not None and (int(self.warmup_steps) != self.warmup_steps or self.warmup_steps < 0):
            raise NasError(f"warmup steps must be an integer >= 0, got {self.warmup_steps}")
        if self.crop_padding is not None and self.crop_padding < 0:
            raise NasError(f"crop padding must be >= 0, got {self.crop_padding}")
        if self.threads is not None:
            _positive_int("threads", self.threads)
        if self.eval_every is not None and not self.eval_every > 0:
            raise NasError(f"eval_every must be > 0 epochs, got {self.eval_every}")

    def resolved(self) -> dict[str, float]:
        """The effective lr, weight decay (after per-optimizer defaults)."""
        lr = self.lr
        if lr is None:
            lr = DEFAULT_LR[self.optimizer] * (self.batch_size / 128 if self.optimizer == "sgd" else 1.0)
        wd = DEFAULT_WD[self.optimizer] if self.weight_decay is None else self.weight_decay
        return {"lr": lr, "weight_decay": wd}

    def total_steps(self, n_train: int) -> int:
        if self.steps is not None:
            return int(self.steps)
        return max(1, math.ceil(self.epochs * steps_per_epoch(n_train, min(self.batch_size, n_train))))

    def warmup(self, total: int) -> int:
        if self.warmup_steps is not None:
            return min(int(self.warmup_steps), total)
        return min(200, total // 20)


def _positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise NasError(f"{name} must be a positive integer, got {value!r}")


@dataclass
class TrainResult:
    """What a training run produced; ``history`` has one dict per evaluation."""

    val_acc: float
    test_acc: float | None
    train_loss: float
    seconds: float
    images_per_sec: float
    steps: int
    epochs: float
    train_seconds: float = 0.0
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)


def lr_at(step: int, base_lr: float, warmup: int, total: int) -> float:
    """Linear warmup from 0 over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW; no weight decay on biases and normalisation weights (ndim <= 1)."""
    hp = config.resolved()
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": hp["weight_decay"]},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise NasError("the model has no trainable parameters")
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=hp["lr"])
    nesterov = config.nesterov and config.momentum > 0
    return torch.optim.SGD(groups, lr=hp["lr"], momentum=config.momentum, nesterov=nesterov)


@torch.inference_mode()
def evaluate(model: nn.Module, dataset: ImageDataset, batch_size: int = 512, channels_last: bool = True) -> float:
    """Top-1 accuracy in [0, 1] (eval mode, no augmentation); the model's mode is restored.

    With ``channels_last`` the model's parameters are moved to that memory format in place
    (values unchanged): on CPU this is several times faster.
    """
    if len(dataset) == 0:
        raise NasError("cannot evaluate on an empty dataset")
    if channels_last:
        model.to(memory_format=torch.channels_last)
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for images, labels in eval_batches(dataset, batch_size, channels_last):
            correct += int((model(images).argmax(dim=1) == labels).sum())
    finally:
        model.train(was_training)
    return correct / len(dataset)


class _Threads:
    """Set torch's intra-op thread count for a block, then restore it."""

    def __init__(self, threads: int | None):
        self.threads, self.saved = threads, torch.get_num_threads()

    def __enter__(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.saved)


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="step", disable=None if enabled else True, dynamic_ncols=True, leave=False)


def _check_data(splits: DataSplits) -> None:
    if len(splits.train) == 0 or len(splits.val) == 0:
        raise NasError("the train and val splits must both be non-empty")
    if splits.train.labels.numel() and int(splits.train.labels.max()) >= len(splits.train.classes):
        raise NasError("training labels exceed the number of classes")


def train(
    model: nn.Module,
    splits: DataSplits,
    config: TrainConfig,
    progress: bool = True,
    report: ReportFn | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``splits.train``; evaluate on ``splits.val`` every ``eval_every`` epochs.

    ``report(step, epoch, val_acc)`` is called after each evaluation; returning True stops early.
    The test split is evaluated only when ``config.evaluate_test`` is set.
    """
    config.validate()
    _check_data(splits)
    with _Threads(config.threads):
        return _train(model, splits, config, progress, report)


def _train(model: nn.Module, splits: DataSplits, config: TrainConfig, progress: bool, report: ReportFn | None) -> TrainResult:
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    n_train = len(splits.train)
    per_epoch = steps_per_epoch(n_train, min(config.batch_size, n_train))
    total = config.total_steps(n_train)
    warmup, base_lr = config.warmup(total), config.resolved()["lr"]
    eval_interval = total if config.eval_every is None else max(1, round(config.eval_every * per_epoch))
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    augment = Augment(config.augment, config.crop_padding, config.hflip)
    batches = train_batches(splits.train, config.batch_size, generator, augment, config.channels_last)
    optimizer = make_optimizer(model, config)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    history: list[dict] = []
    val_acc, loss_sum, loss_count, images_seen = float("nan"), 0.0, 0, 0
    train_seconds, stopped, start, step = 0.0, False, time.perf_counter(), 0
    bar = _progress(total, progress)
    model.train()
    try:
        while step < total:
            t0 = time.perf_counter()
            images, labels = next(batches)
            lr = lr_at(step, base_lr, warmup, total)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = criterion(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = loss.item()
            train_seconds += time.perf_counter() - t0
            if not math.isfinite(value):
                raise NasError(f"training diverged (loss {value}) at step {step + 1}; try a lower learning rate")
            step += 1
            loss_sum, loss_count, images_seen = loss_sum + value, loss_count + 1, images_seen + labels.numel()
            bar.update(1)
            if step % eval_interval == 0 or step == total:
                val_acc = evaluate(model, splits.val, config.eval_batch_size, config.channels_last)
                entry = {"step": step, "epoch": step / per_epoch, "train_loss": loss_sum / loss_count,
                         "val_acc": val_acc, "lr": lr, "seconds": time.perf_counter() - start}
                history.append(entry)
                bar.set_postfix(loss=f"{entry['train_loss']:.3f}", val=f"{val_acc:.4f}")
                if report is not None and report(step, step / per_epoch, val_acc) and step < total:
                    stopped = True
                    break
                if step < total:
                    loss_sum, loss_count = 0.0, 0
    finally:
        bar.close()
    test_acc = evaluate(model, splits.test, config.eval_batch_size, config.channels_last) if config.evaluate_test else None
    return TrainResult(
        val_acc=val_acc,
        test_acc=test_acc,
        train_loss=loss_sum / max(1, loss_count),
        seconds=time.perf_counter() - start,
        images_per_sec=images_seen / max(train_seconds, 1e-9),
        steps=step,
        epochs=step / per_epoch,
        train_seconds=train_seconds,
        stopped_early=stopped,
        history=history,
    )
