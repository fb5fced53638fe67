"""A small, seeded CPU training loop: SGD/AdamW, warmup + cosine to 0, label smoothing.

It uses what the CPU offers where that was measured to win: channels-last, fused optimizer steps,
(``precision``) bf16 autocast and (``compile``, long trainings) ``torch.compile``. Given a
``state_path`` it saves its state at each epoch's end and resumes from it, giving the same steps and
weights as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn as nn

from nas.data import Augment, DataSplits, ImageDataset, eval_batches, train_batches
from nas.errors import NasError
from nas.config import TrainConfig, training_identity
from nas.threads import torch_threads
from nas.train.compiled import compiled_model, resolve_compile, warn_eager
from nas.train.layer_patches import patched_layers
from nas.train.cpu import autocast, eval_batch_size, fused_supported, resolve_precision, small_map_depthwise
from nas.train.resume import TrainState, fingerprint, load_state, save_state

ReportFn = Callable[[int, float, float], bool]


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
    compiled: bool = False  # whether the steps ran through torch.compile
    compile_seconds: float = 0.0  # the first compiled step (not in train_seconds / images_per_sec)
    precision: str = "fp32"  # what ``precision: auto`` resolved to
    val_loss: float = math.nan  # the last evaluation's mean val cross-entropy (``Validation.loss``)


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
    fused = {"fused": True} if fused_supported(config.optimizer) else {}
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=hp["lr"], **fused)
    nesterov = config.nesterov and config.momentum > 0
    return torch.optim.SGD(groups, lr=hp["lr"], momentum=config.momentum, nesterov=nesterov, **fused)


@dataclass(frozen=True)
class Validation:
    """A model's figures on a dataset: top-1 ``accuracy`` in [0, 1] and ``loss``, the mean cross-entropy
    (nats) of its logits against the labels (no label smoothing)."""

    accuracy: float
    loss: float

    @property
    def likelihood(self) -> float:
        """exp(-loss): the geometric mean of the probability the model gives the true class, in [0, 1].
        Unlike top-1 accuracy it moves with every image's confidence, not only with the images whose
        top class flips, so it separates close models with less noise."""
        return math.exp(-self.loss)


@torch.inference_mode()
def validate(model: nn.Module, dataset: ImageDataset, batch_size: int | None = None, channels_last: bool = True,
             *, fold_bn: bool = True) -> Validation:
    """Accuracy and loss of ``model`` on ``dataset`` (eval mode, no augmentation); the model's mode is
    restored.

    ``batch_size`` None: :func:`nas.train.cpu.eval_batch_size` for the precision in force.

    With ``channels_last`` the model's parameters are moved to that memory format in place
    (values unchanged): on CPU this is several times faster. With ``fold_bn`` a copy of the model
    with each BatchNorm folded into the convolution before it is evaluated (the same function up to
    float rounding; measured 1.5x faster evaluation of the Fashion-MNIST baseline).
    """
    if len(dataset) == 0:
        raise NasError("cannot evaluate on an empty dataset")
    if channels_last:
        model.to(memory_format=torch.channels_last)
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    try:
        net = fold_batchnorm(model, channels_last) if fold_bn else model
        for images, labels in eval_batches(dataset, batch_size or eval_batch_size(), channels_last):
            logits = net(images).float()
            correct += int((logits.argmax(dim=1) == labels).sum())
            loss += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
    finally:
        model.train(was_training)
    return Validation(accuracy=correct / len(dataset), loss=loss / len(dataset))


def evaluate(model: nn.Module, dataset: ImageDataset, batch_size: int | None = None, channels_last: bool = True,
             *, fold_bn: bool = True) -> float:
    """Top-1 accuracy in [0, 1]: :func:`validate`'s."""
    return validate(model, dataset, batch_size, channels_last, fold_bn=fold_bn).accuracy


def fold_batchnorm(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """An eval-mode copy of ``model`` where each BatchNorm2d right after a Conv2d (in a ConvNormAct or
    an nn.Sequential) is folded into that convolution's weights and bias; ``model`` is unchanged."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from nas.models.layers import ConvNormAct

    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if isinstance(module, ConvNormAct) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv, module.bn = fuse_conv_bn_eval(module.conv, module.bn), nn.Identity()
        elif isinstance(module, nn.Sequential):
            names = list(module._modules)
            for first, second in zip(names, names[1:]):
                conv, bn = module._modules[first], module._modules[second]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                    module._modules[first], module._modules[second] = fuse_conv_bn_eval(conv, bn), nn.Identity()
    return folded.to(memory_format=torch.channels_last) if channels_last else folded


def progress_bar(total: int | None, enabled: bool, initial: int = 0):
    """A tqdm bar of steps, shown only on a terminal (the one-line-per-epoch report serves the rest)."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", disable=None if enabled else True, dynamic_ncols=True,
                leave=False)


def _check_data(splits: DataSplits) -> None:
    if len(splits.train) == 0 or len(splits.val) == 0:
        raise NasError("the train and val splits must both be non-empty")
    if splits.train.labels.numel() and int(splits.train.labels.max()) >= len(splits.train.classes):
        raise NasError("training labels exceed the number of classes")


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _short(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def epoch_line(epoch: float, epochs: float, step: int, total: int, loss: float, val_acc: float | None,
               images_per_sec: float, eta_seconds: float) -> str:
    """The one progress line per epoch written to stderr."""
    val = "-" if val_acc is None or math.isnan(val_acc) else f"{val_acc:.4f}"
    return (f"epoch {_short(epoch)}/{_short(epochs)}  step {step:,}/{total:,}  loss {loss:.4f}  val_acc {val}  "
            f"{images_per_sec:,.0f} img/s  ETA {format_duration(eta_seconds)}")


def train(
    model: nn.Module,
    splits: DataSplits,
    config: TrainConfig,
    progress: bool = True,
    report: ReportFn | None = None,
    *,
    state_path: str | Path | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``splits.train``; evaluate on ``splits.val`` every ``eval_every`` epochs.

    ``report(step, epoch, val_acc)`` is called after each evaluation; returning True stops early.
    The test split is evaluated only when ``config.evaluate_test`` is set. With ``progress``, a
    tqdm bar shows on a terminal and one line per epoch goes to stderr. With ``state_path``, the
    training state is saved there at the end of each epoch, and a training whose state is found
    there (same config, data and network) continues from it.
    """
    config.validate()
    _check_data(splits)
    with torch_threads(config.threads):
        return _Loop(model, splits, config, progress, report, state_path).run()


class _Loop:
    """One training run: its counters, and saving / restoring them at epoch ends."""

    def __init__(self, model: nn.Module, splits: DataSplits, config: TrainConfig, progress: bool,
                 report: ReportFn | None, state_path: str | Path | None):
        self.model, self.splits, self.config, self.progress, self.report = model, splits, config, progress, report
        self.state_path = None if state_path is None else Path(state_path)
        self.n_train = len(splits.train)
        self.per_epoch = config.steps_per_epoch(self.n_train)
        self.total = config.total_steps(self.n_train)
        self.warmup, self.base_lr = config.warmup(self.total), config.resolved()["lr"]
        self.eval_interval = self.total if config.eval_every is None else max(1, round(config.eval_every * self.per_epoch))
        self.precision = resolve_precision(config.precision, self.total)
        self.compiled = resolve_compile(config.compile, self.total)
        self.compile_seconds = 0.0
        self.history: list[dict] = []
        self.val_acc, self.loss_sum, self.loss_count, self.images_seen = float("nan"), 0.0, 0, 0
        self.train_seconds, self.seconds_before, self.step = 0.0, 0.0, 0

    def run(self) -> TrainResult:
        config, model = self.config, self.model
        torch.manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(model, config)
        self._maybe_resume(optimizer, generator)
        augment = Augment(config.augment, config.crop_padding, config.hflip)
        batches = train_batches(self.splits.train, config.batch_size, generator, augment, config.channels_last)
        criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        stopped, start, session_start = False, time.perf_counter(), self.step
        bar = progress_bar(self.total, self.progress, self.step)
        model.train()
        with contextlib.ExitStack() as patches:
            self.forward = self._forward(patches)
            try:
                while self.step < self.total:
                    if self.step == session_start:
                        lr = self._first_step(next(batches), optimizer, criterion, patches)
                    else:
                        lr = self._step(next(batches), optimizer, criterion)
                    bar.update(1)
                    evaluated = self.step % self.eval_interval == 0 or self.step == self.total
                    loss = self.loss_sum / self.loss_count
                    if evaluated and self._evaluate(lr, start, bar):
                        stopped = True
                        break
                    if self.step % self.per_epoch == 0 or self.step == self.total:
                        self._epoch_end(evaluated, loss, start, session_start, bar, optimizer, generator)
            finally:
                bar.close()
        return self._result(stopped, start)

    def _forward(self, patches: contextlib.ExitStack) -> nn.Module:
        """The module the steps call: the compiled model or, eager, the model itself, with the layers
        :func:`patched_layers` speeds up (squeeze-and-excitation as matrix products; under bf16 the
        depthwise layers in fp32, compiled only those of stride 2; compiled, a depthwise weight
        gradient inductor fuses and BatchNorm with two-stage sums; where :func:`small_map_depthwise`
        says so, a batched depthwise weight gradient for large kernels on small maps)."""
        fp32 = self.precision == "bf16"
        compiled = compiled_model(self.model) if self.compiled else None
        self.compiled = compiled is not None
        patches.enter_context(patched_layers(self.model, fp32=fp32, shifted=self.compiled,
                                             small_maps=small_map_depthwise(compiled=self.compiled),
                                             batchnorm=self.compiled))
        return compiled if compiled is not None else self.model

    def _first_step(self, batch: tuple[torch.Tensor, torch.Tensor], optimizer: torch.optim.Optimizer,
                    criterion: nn.Module, patches: contextlib.ExitStack) -> float:
        """The first step, where torch.compile builds its kernels; if that fails, the step is redone eagerly."""
        if not self.compiled:
            return self._step(batch, optimizer, criterion)
        start, seconds, images = time.perf_counter(), self.train_seconds, self.images_seen
        if self.progress:
            print("compiling the training step (torch.compile; kept on disk for later runs) ...", file=sys.stderr,
                  flush=True)
        try:
            lr = self._step(batch, optimizer, criterion)
            # the compilation is reported on its own; the throughput is the compiled steps'
            self.compile_seconds = time.perf_counter() - start
            self.train_seconds, self.images_seen = seconds, images
            return lr
        except NasError:
            raise
        except Exception as exc:  # noqa: BLE001 - a compiler failure; the eager step raises real errors
            warn_eager(exc)
            optimizer.zero_grad(set_to_none=True)
            patches.close()
            self.compiled = False
            self.forward = self._forward(patches)
            return self._step(batch, optimizer, criterion)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], optimizer: torch.optim.Optimizer,
              criterion: nn.Module) -> float:
        """One optimizer step on ``batch`` (timed with the batch's preparation); returns its lr."""
        t0 = time.perf_counter()
        images, labels = batch
        lr = lr_at(self.step, self.base_lr, self.warmup, self.total)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with autocast(self.precision):
            loss = criterion(self.forward(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = loss.item()
        self.train_seconds += time.perf_counter() - t0
        if not math.isfinite(value):
            raise NasError(f"training diverged (loss {value}) at step {self.step + 1}; try a lower learning rate")
        self.step += 1
        self.loss_sum, self.loss_count = self.loss_sum + value, self.loss_count + 1
        self.images_seen += labels.numel()
        return lr

    def _result(self, stopped: bool, start: float) -> TrainResult:
        config = self.config
        test_acc = None
        if config.evaluate_test:
            test_acc = evaluate(self.model, self.splits.test, config.eval_batch_size, config.channels_last)
        return TrainResult(
            val_acc=self.val_acc,
            test_acc=test_acc,
            train_loss=self.loss_sum / max(1, self.loss_count),
            seconds=self.seconds_before + time.perf_counter() - start,
            images_per_sec=self.images_seen / max(self.train_seconds, 1e-9),
            steps=self.step,
            epochs=self.step / self.per_epoch,
            train_seconds=self.train_seconds,
            stopped_early=stopped,
            history=self.history,
            compiled=self.compiled,
            compile_seconds=self.compile_seconds,
            precision=self.precision,
            val_loss=self.history[-1].get("val_loss", math.nan) if self.history else math.nan,
        )

    def _evaluate(self, lr: float, start: float, bar) -> bool:
        """Val accuracy and loss into the history; True when ``report`` asks to stop before the budget."""
        val = validate(self.model, self.splits.val, self.config.eval_batch_size, self.config.channels_last)
        self.val_acc = val.accuracy
        epoch = self.step / self.per_epoch
        entry = {"step": self.step, "epoch": epoch, "train_loss": self.loss_sum / self.loss_count,
                 "val_acc": self.val_acc, "val_loss": val.loss, "lr": lr,
                 "seconds": self.seconds_before + time.perf_counter() - start}
        self.history.append(entry)
        bar.set_postfix(loss=f"{entry['train_loss']:.3f}", val=f"{self.val_acc:.4f}")
        if self.report is not None and self.report(self.step, epoch, self.val_acc) and self.step < self.total:
            return True
        if self.step < self.total:
            self.loss_sum, self.loss_count = 0.0, 0
        return False

    def _epoch_end(self, evaluated: bool, loss: float, start: float, session_start: int, bar,
                   optimizer: torch.optim.Optimizer, generator: torch.Generator) -> None:
        if self.progress:
            elapsed = time.perf_counter() - start - self.compile_seconds  # the ETA at the steady rate
            done = self.step - session_start
            line = epoch_line(self.step / self.per_epoch, self.total / self.per_epoch, self.step, self.total, loss,
                              self.val_acc if evaluated else None, self.images_seen / max(self.train_seconds, 1e-9),
                              elapsed / max(done, 1) * (self.total - self.step))
            if bar.disable:
                print(line, file=sys.stderr, flush=True)
            else:
                bar.write(line, file=sys.stderr)
        if self.state_path is not None and self.step < self.total:
            save_state(self.state_path, TrainState(
                fingerprint=self._fingerprint(), step=self.step, model=self.model.state_dict(),
                optimizer=optimizer.state_dict(), torch_rng=torch.get_rng_state(), data_rng=generator.get_state(),
                loss_sum=self.loss_sum, loss_count=self.loss_count, images_seen=self.images_seen,
                train_seconds=self.train_seconds, seconds=self.seconds_before + time.perf_counter() - start,
                val_acc=self.val_acc, history=self.history))

    def _fingerprint(self) -> str:
        """What must match for a saved state to be resumed: config (but the run-only settings), data, network."""
        config = training_identity(asdict(self.config))
        return fingerprint({
            "config": config, "precision": self.precision, "total": self.total, "data": self.splits.identity(),
            "network": [[k, list(v.shape)] for k, v in self.model.state_dict().items()],
        })

    def _maybe_resume(self, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> None:
        """Continue from the saved state when there is one for this very training."""
        if self.state_path is None or not self.state_path.is_file():
            return
        state = load_state(self.state_path)
        if state.fingerprint != self._fingerprint():
            print(f"{self.state_path} is from another training (config, data or network differ); "
                  "starting from step 0", file=sys.stderr)
            return
        self.model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        torch.set_rng_state(state.torch_rng)
        generator.set_state(state.data_rng)
        self.step = int(state.step)
        self.loss_sum, self.loss_count, self.images_seen = state.loss_sum, state.loss_count, state.images_seen
        self.train_seconds, self.seconds_before = state.train_seconds, state.seconds
        self.val_acc, self.history = state.val_acc, list(state.history)
        if self.progress:
            print(f"resuming from {self.state_path} at step {self.step:,}/{self.total:,}", file=sys.stderr, flush=True)
