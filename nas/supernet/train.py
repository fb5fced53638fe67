"""Training a supernet once: every step trains sampled members of the space on one batch.

- ``uniform``: one member sampled uniformly (seeded) per step (single-path, as SPOS);
- ``sandwich``: the largest, the smallest and two random members per step, with in-place
  distillation: the largest learns the labels, the others its soft labels (BigNAS / OFA). Largest
  and smallest are sizes (depth, width, kernel, expansion, SE); an activation is not a size, so the
  two ends draw each block's activation at random every step. (With the ends on the space's first
  activation, ReLU, the shared weights trained for ReLU in two thirds of the passes, and the supernet
  scored members lower the more hard-swish blocks they had: Kendall τ -0.30 between its scores and
  their hard-swish fraction on 30 networks, against +0.12 for their stand-alone 3-epoch accuracies.)

``kernel``: ``crop`` (a smaller kernel is the centre of the largest) or ``transform`` (OFA's learned
kernel maps). ``reorder``: sort each block's hidden channels by importance at every epoch's end
(OFA's channel re-organisation; the largest member is unchanged, the narrower ones keep the most
important channels).

It is built on the trainer's pieces (:func:`nas.data.train_batches` and its augmentation,
:func:`nas.train.trainer.make_optimizer`, :func:`nas.train.lr_at`, channels-last, threads, the
one-line-per-epoch report) with the experiment's ``train`` recipe. The budget is ``epochs`` or
``minutes`` (the learning-rate schedule then follows the elapsed fraction of the time).

``DIR/supernet.pt`` holds tensors and plain data only (read with ``weights_only=True``): the space
hash, the largest member's spec, the settings, the step, the optimizer and the RNG states. It is
written at each epoch's end, every ``CHECKPOINT_SECONDS`` of training within an epoch (a sandwich epoch
of Fashion-MNIST is about 9 minutes on 2 cores) and at the end; rerunning the same command continues
from it, mid-epoch too: the data generator's state at the epoch's start is saved, and the resumed run
replays the epoch's batches up to its step (about a millisecond each), so it draws what an
uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.config import (SUPERNET_KERNELS, SUPERNET_SAMPLINGS, SettingError, check_flag, check_number, check_seed,
                        check_text, training_identity)
from nas.data import Augment, DataSplits, train_batches
from nas.errors import NasError
from nas.io import parse_json, write_atomic, write_text_atomic
from nas.spec import ArchSpec, SearchSpace
from nas.supernet.model import Supernet, largest_spec, reorder_channels
from nas.supernet.score import score_candidate
from nas.threads import torch_threads
from nas.train import TrainConfig, lr_at
from nas.train.checkpoint import check_checkpoint_file, load_weights_only
from nas.train.trainer import epoch_line, make_optimizer, progress_bar

FORMAT = "nas-supernet/1"
CHECKPOINT = "supernet.pt"
TIME_STEPS = 10_000  # a time budget's schedule: lr_at over this many steps of elapsed time
CHECKPOINT_SECONDS = 300.0  # of training time between two checkpoints within an epoch
SANDWICH_RANDOM = 2
SANDWICH_ENDS = "activations drawn"  # the sandwich's largest and smallest: each block's activation drawn per step


@dataclass(frozen=True)
class SupernetSettings:
    """What a supernet training is: the experiment's ``train`` recipe, a budget, a sampling rule, how
    smaller kernels are made and whether hidden channels are re-ordered."""

    train: TrainConfig
    sampling: str = "uniform"
    minutes: float | None = None
    kernel: str = "crop"
    reorder: bool = False

    def __post_init__(self) -> None:
        try:
            check_text("sampling", self.sampling, SUPERNET_SAMPLINGS, what="sampling")
            check_text("kernel", self.kernel, SUPERNET_KERNELS, what="kernel rule")
            check_flag("reorder", self.reorder)
            check_number("minutes", self.minutes, minimum=0, exclusive=True, maximum=10**7)
            check_seed("seed", self.train.seed)
        except SettingError as exc:
            raise NasError(f"supernet {exc.field}: {exc.problem}") from None

    def to_dict(self) -> dict[str, Any]:
        out = {"train": dataclasses.asdict(self.train), "sampling": self.sampling, "minutes": self.minutes,
               "kernel": self.kernel, "reorder": self.reorder}
        if self.sampling == "sandwich":  # a checkpoint of the earlier rule (ends on one activation) lacks it
            out["sandwich_ends"] = SANDWICH_ENDS
        return out


def settings_for(experiment, epochs: float | None = None, minutes: float | None = None,
                 sampling: str = "uniform", kernel: str = "crop", reorder: bool = False) -> SupernetSettings:
    """The experiment's full-training recipe with the supernet's budget (default: its epochs)."""
    recipe = experiment.train_config
    budget = {"epochs": None, "steps": TIME_STEPS} if minutes is not None else {"epochs": epochs or recipe.epochs}
    train = dataclasses.replace(recipe, **budget, evaluate_test=False, precision="fp32")
    return SupernetSettings(train=train, sampling=sampling, minutes=minutes, kernel=kernel, reorder=reorder)


@dataclass
class SupernetResult:
    out: Path
    steps: int
    epochs: float
    seconds: float
    val_acc_largest: float
    resumed_from: int = 0
    history: list[dict] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"out": str(self.out), "steps": self.steps, "epochs": self.epochs, "seconds": self.seconds,
                "val_acc_largest": self.val_acc_largest, "resumed_from": self.resumed_from, "history": self.history}


# --- the checkpoint ------------------------------------------------------------------------------

def save_supernet(path: Path, net: Supernet, settings: SupernetSettings, state: dict[str, Any]) -> Path:
    """Tensors and plain data only; ``state``: step, optimizer, RNG states, seconds, history."""
    payload = {"format": FORMAT, "space_hash": net.space.hash, "space_name": net.space.name,
               "largest_spec_json": net.largest.to_json(), "settings_json": json.dumps(settings.to_dict()),
               "state_dict": {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}} | state
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda handle: torch.save(payload, handle), binary=True)


def read_supernet(path: str | Path, space: SearchSpace) -> dict[str, Any]:
    """The payload of a supernet checkpoint of ``space``; NasError (one line) for a missing, corrupt or
    foreign one."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    check_checkpoint_file(path)
    payload = load_weights_only(path, "supernet checkpoint", "not a plain supernet checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise NasError(f"supernet checkpoint {path} is not a {FORMAT} file")
    for key, kind in (("space_hash", str), ("state_dict", dict), ("step", int), ("settings_json", str)):
        if not isinstance(payload.get(key), kind):
            raise NasError(f"supernet checkpoint {path} is missing {key!r} (or it has the wrong type)")
    if payload["space_hash"] != space.hash:
        raise NasError(f"supernet checkpoint {path} is of another space (space hash {payload['space_hash']}, "
                       f"{space.name} has {space.hash})")
    return payload


def _saved_settings(payload: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The settings a checkpoint was trained with (a JSON object, read as hostile text)."""
    settings = parse_json(payload["settings_json"], NasError, f"supernet checkpoint {path}: settings")
    if not isinstance(settings, dict):
        raise NasError(f"supernet checkpoint {path}: its settings are not a JSON object")
    return settings


def _same_training(saved: dict[str, Any], settings: SupernetSettings) -> bool:
    """Whether a checkpoint's settings are ``settings``, the recipe's run-only settings aside."""
    def identity(values: dict[str, Any]) -> dict[str, Any]:
        recipe = values.get("train")
        return values | {"train": training_identity(recipe)} if isinstance(recipe, dict) else values

    return identity(saved) == identity(json.loads(json.dumps(settings.to_dict())))


def load_supernet(path: str | Path, space: SearchSpace) -> Supernet:
    """The supernet saved at ``path`` (a checkpoint or its folder), in eval mode."""
    from nas.train import check_state_dict

    payload = read_supernet(path, space)
    net = Supernet(space, kernel_transform=_saved_settings(payload, path).get("kernel") == "transform")
    check_state_dict(net, payload["state_dict"], f"supernet checkpoint {path}")
    net.load_state_dict(payload["state_dict"])
    return net.eval()


# --- sampling ------------------------------------------------------------------------------------

def members_for_step(space: SearchSpace, sampling: str, rng: random.Random) -> list[ArchSpec]:
    """The members one step trains: one uniform sample, or the largest and the smallest (each block's
    activation drawn) + 2 samples."""
    if sampling == "uniform":
        return [space.sample(rng)]
    ends = [with_drawn_activations(space, end, rng) for end in (space.largest_assignment(),
                                                                space.smallest_assignment())]
    return [*ends, *(space.sample(rng) for _ in range(SANDWICH_RANDOM))]


def with_drawn_activations(space: SearchSpace, assignment: dict[str, Any], rng: random.Random) -> ArchSpec:
    """The member of ``assignment`` with every block's activation drawn uniformly from its choices."""
    drawn = {d.name: rng.choice(d.choices) for d in space.decisions if d.name.endswith(".act")}
    return space.decode(assignment | drawn)


def soft_cross_entropy(logits: torch.Tensor, soft_labels: torch.Tensor) -> torch.Tensor:
    return -(soft_labels * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


# --- the loop ------------------------------------------------------------------------------------

class _SupernetLoop:
    def __init__(self, net: Supernet, splits: DataSplits, settings: SupernetSettings, path: Path, progress: bool):
        self.net, self.splits, self.settings, self.path, self.progress = net, splits, settings, path, progress
        self.config = config = settings.train
        self.per_epoch = config.steps_per_epoch(len(splits.train))
        self.budget_seconds = None if settings.minutes is None else settings.minutes * 60
        self.total = TIME_STEPS if self.budget_seconds else config.total_steps(len(splits.train))
        self.warmup, self.base_lr = config.warmup(self.total), config.resolved()["lr"]
        self.largest = largest_spec(net.space)  # the member each epoch reports
        self.step, self.seconds, self.history, self.resumed_from = 0, 0.0, [], 0
        self.rng = random.Random(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.epoch_data_rng = self.generator.get_state()  # the data generator as this epoch began
        self.saved_at = 0.0  # training seconds at the last checkpoint
        self.loss_sum, self.loss_count = 0.0, 0  # the epoch's first-member losses so far
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    # schedule: steps, or elapsed time over the budget
    def schedule_step(self) -> int:
        if self.budget_seconds is None:
            return self.step
        return min(self.total, int(self.seconds / self.budget_seconds * self.total))

    def done(self) -> bool:
        if self.budget_seconds is None:
            return self.step >= self.total
        return self.seconds >= self.budget_seconds

    def run(self, optimizer: torch.optim.Optimizer) -> SupernetResult:
        config = self.config
        augment = Augment(config.augment, config.crop_padding, config.hflip)
        batches = train_batches(self.splits.train, config.batch_size, self.generator, augment, config.channels_last)
        for _ in range(self.step % self.per_epoch):  # resumed mid-epoch: replay the epoch's draws up to the step
            next(batches)
        if config.channels_last:
            self.net.to(memory_format=torch.channels_last)
        bar = progress_bar(None if self.budget_seconds else self.total, self.progress, self.step)
        try:
            while not self.done():
                start = time.perf_counter()
                lr = lr_at(self.schedule_step(), self.base_lr, self.warmup, self.total)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                if self.step % self.per_epoch == 0:
                    self.epoch_data_rng = self.generator.get_state()
                loss = self.train_step(next(batches), optimizer)
                self.seconds += time.perf_counter() - start
                self.step += 1
                self.loss_sum, self.loss_count = self.loss_sum + loss, self.loss_count + 1
                bar.update(1)
                if self.step % self.per_epoch == 0 or self.done():
                    loss, self.loss_sum, self.loss_count = self.loss_sum / self.loss_count, 0.0, 0
                    self.epoch_end(loss, optimizer, bar)
                elif self.seconds - self.saved_at >= CHECKPOINT_SECONDS:
                    self.save(optimizer)
        finally:
            bar.close()
        return SupernetResult(self.path.parent, self.step, self.step / self.per_epoch, self.seconds,
                              self.history[-1]["val_acc_largest"] if self.history else float("nan"),
                              self.resumed_from, self.history)

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor], optimizer: torch.optim.Optimizer) -> float:
        """Gradients of every member of the step accumulated, then one optimizer step; the first
        member's loss."""
        images, labels = batch
        self.net.train()
        _zero_grads(self.net)
        members = members_for_step(self.net.space, self.settings.sampling, self.rng)
        teacher, first = None, None
        for member in members:
            self.net.set_active(member)
            logits = self.net(images)
            loss = self.criterion(logits, labels) if teacher is None else soft_cross_entropy(logits, teacher)
            loss.backward()
            if self.settings.sampling == "sandwich" and teacher is None:
                teacher = F.softmax(logits.detach(), dim=1)
            first = loss.item() if first is None else first
        optimizer.step()
        if not math.isfinite(first):
            raise NasError(f"supernet training diverged (loss {first}) at step {self.step + 1}; try a lower "
                           "learning rate")
        return first

    def epoch_end(self, loss: float, optimizer: torch.optim.Optimizer, bar) -> None:
        if self.settings.reorder:
            reorder_channels(self.net, optimizer)
        # the shared running statistics mix every member's: the largest is scored as any candidate is
        val = score_candidate(self.net, self.largest, self.splits, seed=self.config.seed,
                              channels_last=self.config.channels_last).accuracy
        epoch = self.step / self.per_epoch
        self.history.append({"step": self.step, "epoch": epoch, "train_loss": loss, "val_acc_largest": val,
                             "seconds": self.seconds})
        if self.progress:
            total = self.total if self.budget_seconds is None else max(  # a time budget: the steps it will hold
                self.step, 1, round(self.step * self.budget_seconds / max(self.seconds, 1e-9)))
            remaining = (self.seconds / max(self.step, 1) * (self.total - self.step) if self.budget_seconds is None
                         else self.budget_seconds - self.seconds)
            line = epoch_line(epoch, total / self.per_epoch, self.step, total, loss, val, self.step *
                              self.config.batch_size / max(self.seconds, 1e-9), remaining)
            (print(line, file=sys.stderr, flush=True) if bar.disable else bar.write(line, file=sys.stderr))
        self.save(optimizer)

    def save(self, optimizer: torch.optim.Optimizer) -> None:
        save_supernet(self.path, self.net, self.settings, self.state(optimizer))
        self.saved_at = self.seconds

    def state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        # the data generator as the current epoch began (at an epoch's end: as it is, the next one not begun)
        data_rng = self.generator.get_state() if self.step % self.per_epoch == 0 else self.epoch_data_rng
        return {"step": self.step, "total": self.total, "seconds": self.seconds, "optimizer": optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(), "data_rng": data_rng,
                "arch_rng_json": json.dumps(self.rng.getstate()), "history_json": json.dumps(self.history),
                "epoch_loss_json": json.dumps([self.loss_sum, self.loss_count]),
                "data_identity": self.splits.identity()}

    def restore(self, payload: dict[str, Any], optimizer: torch.optim.Optimizer) -> None:
        try:
            self.net.load_state_dict(payload["state_dict"])
            optimizer.load_state_dict(payload["optimizer"])
            torch.set_rng_state(payload["torch_rng"])
            self.generator.set_state(payload["data_rng"])
            self.epoch_data_rng = self.generator.get_state()
            version, internal, gauss = json.loads(payload["arch_rng_json"])
            self.rng.setstate((version, tuple(internal), gauss))
            self.history = json.loads(payload["history_json"])
            loss, count = json.loads(payload.get("epoch_loss_json", "[0.0, 0]"))  # absent before mid-epoch saves
            self.loss_sum, self.loss_count = float(loss), int(count)
            if not (math.isfinite(self.loss_sum) and 0 <= self.loss_count < self.per_epoch):
                raise ValueError(f"epoch loss {loss!r} over {count!r} steps")
            self.step, self.seconds = int(payload["step"]), float(payload["seconds"])
            self.saved_at = self.seconds
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise NasError(f"supernet checkpoint {self.path} cannot be resumed ({str(exc).splitlines()[0][:160]})"
                           ) from None
        self.resumed_from = self.step


def _zero_grads(net: nn.Module) -> None:
    """Zero gradients on every parameter, also those the step's members leave unused (the fused
    optimizers need a gradient on all or none of their parameters; as in OFA, an unused weight still
    moves with its momentum and weight decay)."""
    for p in net.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        else:
            p.grad.zero_()


def train_supernet(space: SearchSpace, splits: DataSplits, settings: SupernetSettings, out: str | Path,
                   progress: bool = True) -> SupernetResult:
    """Train (or continue training) the supernet of ``space`` into ``out/supernet.pt``."""
    from nas.train import check_spec_matches

    path = Path(out) / CHECKPOINT
    check_spec_matches(largest_spec(space), splits.train)
    if len(splits.val) == 0:
        raise NasError("the val split is empty (the supernet's largest member is evaluated on it)")
    torch.manual_seed(settings.train.seed)
    net = Supernet(space, kernel_transform=settings.kernel == "transform")
    loop = _SupernetLoop(net, splits, settings, path, progress)
    optimizer = make_optimizer(net, settings.train)
    if path.exists():
        payload = read_supernet(path, space)
        if not _same_training(_saved_settings(payload, path), settings):
            raise NasError(f"{path} was trained with other settings (budget, sampling or recipe); use another --out "
                           "or delete it to start over")
        if payload.get("data_identity") != splits.identity():
            raise NasError(f"{path} was trained on other data (another dataset, split or --subset); use another "
                           "--out or delete it to start over")
        loop.restore(payload, optimizer)
        if progress and not loop.done():
            print(f"resuming from {path} at step {loop.step:,}", file=sys.stderr, flush=True)
    with torch_threads(settings.train.threads):
        result = loop.run(optimizer) if not loop.done() else _finished(loop)
    write_text_atomic(Path(out) / "supernet.json", json.dumps(
        {"space": space.name, "space_hash": space.hash, "largest": net.largest.to_string(),
         "settings": settings.to_dict(), **result.to_json()}, indent=2, default=str) + "\n")
    return result


def _finished(loop: _SupernetLoop) -> SupernetResult:
    last = loop.history[-1]["val_acc_largest"] if loop.history else float("nan")
    return SupernetResult(loop.path.parent, loop.step, loop.step / loop.per_epoch, loop.seconds, last,
                          loop.resumed_from, loop.history)
