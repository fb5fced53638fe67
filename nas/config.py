"""Runtime settings, validated once where they are made, and importable without torch or Optuna.

- :class:`TrainConfig`: a training run (``nas train``, proxy training of candidates, full training
  and NetAdapt's fine-tunes);
- :class:`NetAdaptConfig` and its latency :class:`Target`;
- :data:`STRATEGY_OPTIONS`: each search strategy's options and their defaults (the strategies
  themselves live in :mod:`nas.search`), checked by :func:`check_strategy_options`;
- :data:`EXPORT_FORMATS`.

The experiment loader (:mod:`nas.experiment`) builds these from its sections; the command line
builds them from its flags. A setting that is wrong raises :class:`SettingError` naming the field.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from nas.errors import NasError

MAX_SEED = 2**32 - 1   # numpy's seeds
MAX_COUNT = 10**9      # steps, trials, images
MAX_BATCH = 1 << 16
MAX_EPOCHS = 10**4
MAX_THREADS = 4096

OPTIMIZERS = ("sgd", "adamw")
DEFAULT_LR = {"sgd": 0.1, "adamw": 0.002}
DEFAULT_WD = {"sgd": 5e-5, "adamw": 0.05}
PRECISIONS = ("auto", "fp32", "bf16")
COMPILE_CHOICES = ("auto", "on", "off")
SUPERNET_SAMPLINGS = ("uniform", "sandwich")  # nas supernet train --sampling
SUPERNET_KERNELS = ("crop", "transform")  # nas supernet train --kernel
# supernet.metric: the score a supernet gives a candidate (nas.supernet.score; nas.train.Validation)
SUPERNET_METRICS = ("accuracy", "likelihood")

SELECTIONS = ("ratio", "accuracy")
# NetAdapt's fine-tuning learning rates (short, long) per optimizer: a tenth and a fifth of its training default
FINE_TUNE_LR = {"sgd": (0.01, 0.02), "adamw": (0.0002, 0.0004)}

EXPORT_FORMATS = ("json", "onnx", "torchscript", "onnx-int8")

# Every search strategy by name -> its options and their defaults (the classes: nas.search.STRATEGIES).
STRATEGY_OPTIONS: dict[str, dict[str, Any]] = {
    "random": {},
    "tpe": {"n_startup_trials": 10, "multivariate": True},
    "nsga2": {"population_size": 16, "mutation_prob": None, "crossover_prob": 0.9},
    "rl": {"hidden": 32, "lr": 0.01, "batch": 5, "epochs": 4, "clip": 0.2, "baseline_decay": 0.8,
           "entropy": 0.001},
    "evolution": {"population": 10, "sample": 3},
}


class SettingError(NasError):
    """A wrong setting; ``field`` names it (None: the settings as a whole)."""

    def __init__(self, field: str | None, problem: str):
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field, self.problem = field, problem


# --- checks of one value ------------------------------------------------------------------------------

def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_number(field: str, value: Any, *, integer: bool = False, minimum: float | None = None,
                 exclusive: bool = False, optional: bool = True, maximum: float | None = None) -> None:
    """A number (an integer with ``integer``; never a bool, NaN or infinity) within the bounds."""
    if value is None:
        if optional:
            return
        raise SettingError(field, "missing")
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or (not integer and not math.isfinite(value)):
        raise SettingError(field, f"expected {'an integer' if integer else 'a finite number'}, got {short(value)}")
    if minimum is not None and (value <= minimum if exclusive else value < minimum):
        raise SettingError(field, f"must be {'>' if exclusive else '>='} {minimum}, got {short(value)}")
    if maximum is None:
        maximum = MAX_COUNT if integer else None
    if maximum is not None and value > maximum:
        raise SettingError(field, f"must be <= {maximum:,}, got {short(value)}")


def check_below(field: str, value: Any, top: float) -> None:
    """``value`` (already a number) is < ``top``."""
    if value is not None and not value < top:
        raise SettingError(field, f"must be < {top}, got {short(value)}")


def check_text(field: str, value: Any, choices: Any = None, optional: bool = False, what: str = "") -> None:
    """A string (one of ``choices`` when given), or None when ``optional``."""
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise SettingError(field, f"expected text, got {short(value)}")
    if choices is not None and value not in choices:
        raise SettingError(field, f"unknown {what} {short(value)} (choose from: {', '.join(choices)})" if what
                           else f"{short(value)} is not one of {', '.join(choices)}")


def check_flag(field: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise SettingError(field, f"expected true or false, got {short(value)}")


def check_seed(field: str, value: Any) -> None:
    check_number(field, value, integer=True, minimum=0, maximum=MAX_SEED, optional=False)


def check_strategy_options(strategy: str, options: Any) -> None:
    """``strategy`` is known; each option is one of its own, of its default's type: an integer in
    [0, 10^6], true/false, or a finite number (in [0, 1] for probabilities)."""
    check_text("strategy", strategy, STRATEGY_OPTIONS, what="strategy")
    if not isinstance(options, dict):
        raise SettingError("options", "expected a mapping")
    defaults = STRATEGY_OPTIONS[strategy]
    unknown = sorted(map(str, set(options) - set(defaults)))
    if unknown:
        allowed = ", ".join(defaults) or "none"
        raise SettingError("options", f"unknown option {unknown[0][:60]!r} for strategy {strategy} (allowed: {allowed})")
    for name, value in options.items():
        default, field = defaults[name], f"options.{name}"
        if isinstance(default, bool):
            check_flag(field, value)
        elif isinstance(default, int):
            check_number(field, value, integer=True, minimum=0, maximum=10**6, optional=False)
        else:
            check_number(field, value, minimum=0, maximum=1 if name.endswith("_prob") else None)


# --- training ----------------------------------------------------------------------------------------

# TrainConfig settings that change how a training runs but not what it computes: a saved training
# state (or a supernet) is resumed whatever they are.
RUN_ONLY_SETTINGS = ("threads", "evaluate_test", "compile", "eval_batch_size")


def training_identity(config: dict[str, Any]) -> dict[str, Any]:
    """A TrainConfig's fields (``dataclasses.asdict``) without :data:`RUN_ONLY_SETTINGS`."""
    return {k: v for k, v in config.items() if k not in RUN_ONLY_SETTINGS}


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
    eval_batch_size: int | None = None  # None: nas.train.cpu.eval_batch_size (by precision)
    eval_every: float | None = 1.0
    evaluate_test: bool = False
    channels_last: bool = True  # measured 2-3x faster training, ~6x faster eval on 2 cores
    precision: str = "auto"  # auto | fp32 | bf16 (autocast); auto: see nas.train.cpu.resolve_precision
    compile: str = "auto"  # auto | on | off (torch.compile); auto: long trainings, see nas.train.compiled

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if (self.epochs is None) == (self.steps is None):
            raise SettingError(None, "give exactly one budget, steps or epochs")
        check_number("epochs", self.epochs, minimum=0, exclusive=True, maximum=MAX_EPOCHS)
        check_number("steps", self.steps, integer=True, minimum=1)
        check_number("batch_size", self.batch_size, integer=True, minimum=1, maximum=MAX_BATCH, optional=False)
        check_number("eval_batch_size", self.eval_batch_size, integer=True, minimum=1, maximum=MAX_BATCH)
        check_text("optimizer", self.optimizer, OPTIMIZERS, what="optimizer")
        check_number("lr", self.lr, minimum=0, exclusive=True)
        check_number("weight_decay", self.weight_decay, minimum=0)
        for name in ("momentum", "label_smoothing"):
            check_number(name, getattr(self, name), minimum=0, optional=False)
            check_below(name, getattr(self, name), 1)
        check_number("warmup_steps", self.warmup_steps, integer=True, minimum=0)
        check_number("crop_padding", self.crop_padding, integer=True, minimum=0, maximum=1024)
        check_seed("seed", self.seed)
        check_number("threads", self.threads, integer=True, minimum=1, maximum=MAX_THREADS)
        check_number("eval_every", self.eval_every, minimum=0, exclusive=True)
        for name in ("nesterov", "augment", "hflip", "evaluate_test", "channels_last"):
            check_flag(name, getattr(self, name))
        check_text("precision", self.precision, PRECISIONS, what="precision")
        check_text("compile", self.compile, COMPILE_CHOICES, what="compile setting")

    def resolved(self) -> dict[str, float]:
        """The effective lr, weight decay (after per-optimizer defaults)."""
        lr = self.lr
        if lr is None:
            lr = DEFAULT_LR[self.optimizer] * (self.batch_size / 128 if self.optimizer == "sgd" else 1.0)
        wd = DEFAULT_WD[self.optimizer] if self.weight_decay is None else self.weight_decay
        return {"lr": lr, "weight_decay": wd}

    def steps_per_epoch(self, n_train: int) -> int:
        """Steps per epoch over ``n_train`` images (``nas.data.steps_per_epoch`` at the batch size,
        capped at the data's size)."""
        return max(1, n_train // min(self.batch_size, n_train))

    def total_steps(self, n_train: int) -> int:
        if self.steps is not None:
            return int(self.steps)
        return max(1, math.ceil(self.epochs * self.steps_per_epoch(n_train)))

    def warmup(self, total: int) -> int:
        if self.warmup_steps is not None:
            return min(int(self.warmup_steps), total)
        return min(200, total // 20)


# --- NetAdapt ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """A latency target: absolute milliseconds, or a fraction of the starting latency."""

    value: float
    absolute: bool

    @classmethod
    def parse(cls, text: str | float) -> "Target":
        if isinstance(text, bool) or not isinstance(text, (str, int, float)):
            raise SettingError("target", f"expected a fraction (0.8) or milliseconds ('3.5ms'), got {short(text)}")
        raw = str(text).strip().lower()
        absolute = raw.endswith("ms")
        try:
            value = float(raw[:-2] if absolute else raw)
        except ValueError:
            raise NasError(f"target {text!r}: expected a fraction such as 0.8 or milliseconds such as 3.5ms") from None
        if not (math.isfinite(value) and value > 0):
            raise NasError(f"target {text!r} must be > 0")
        if not absolute and value >= 1:
            raise NasError(f"target fraction {value:g} must be below 1 (write '{value:g}ms' for milliseconds)")
        return cls(value, absolute)

    def ms(self, start_ms: float) -> float:
        return self.value if self.absolute else self.value * start_ms

    def __str__(self) -> str:
        return f"{self.value:g}ms" if self.absolute else f"{self.value:g}"


@dataclass(frozen=True)
class NetAdaptConfig:
    """Settings of one NetAdapt run (all but ``FINAL_SETTINGS`` of :mod:`nas.netadapt.loop` are the
    run's identity for resuming).

    ``optimizer`` None: the one the checkpoint was trained with (sgd if unknown), so that fine-tuning
    continues the network's own recipe; ``lr``/``long_lr`` None: :data:`FINE_TUNE_LR` of that
    optimizer. :meth:`resolved` fills them in."""

    target: str = "0.8"
    short_steps: int = 100
    long_epochs: float = 1.0
    delta_fraction: float = 0.01     # delta = delta_fraction * start latency (MobileNetV3)
    delta_decay: float = 1.0         # delta_k = delta * decay**k (NetAdapt paper: < 1)
    select: str = "ratio"            # "ratio": max dAcc/|dLatency| (MobileNetV3); "accuracy": NetAdapt
    batch_size: int = 128
    lr: float | None = None
    long_lr: float | None = None
    seed: int = 0
    max_iterations: int = 500
    optimizer: str | None = None

    def __post_init__(self) -> None:
        Target.parse(self.target)
        check_number("short_steps", self.short_steps, integer=True, minimum=1, optional=False)
        check_number("long_epochs", self.long_epochs, minimum=0, maximum=MAX_EPOCHS, optional=False)
        check_number("delta_fraction", self.delta_fraction, minimum=0, exclusive=True, optional=False)
        check_below("delta_fraction", self.delta_fraction, 1)
        check_number("delta_decay", self.delta_decay, minimum=0, exclusive=True, maximum=1, optional=False)
        check_text("select", self.select, SELECTIONS, what="selection")
        check_number("batch_size", self.batch_size, integer=True, minimum=1, maximum=MAX_BATCH, optional=False)
        check_text("optimizer", self.optimizer, FINE_TUNE_LR, optional=True, what="optimizer")
        for name in ("lr", "long_lr"):
            check_number(name, getattr(self, name), minimum=0, exclusive=True)
        check_seed("seed", self.seed)
        check_number("max_iterations", self.max_iterations, integer=True, minimum=1, optional=False)

    def resolved(self, trained_with: str | None = None) -> "NetAdaptConfig":
        """Concrete optimizer and learning rates (``trained_with``: the checkpoint's optimizer)."""
        optimizer = self.optimizer or (trained_with if trained_with in FINE_TUNE_LR else "sgd")
        short_lr, long_lr = FINE_TUNE_LR[optimizer]
        return dataclasses.replace(self, optimizer=optimizer, lr=self.lr or short_lr, long_lr=self.long_lr or long_lr)

    def resolved_for(self, checkpoint_metrics: dict[str, Any]) -> "NetAdaptConfig":
        """:meth:`resolved` for a checkpoint (its metrics record the training config)."""
        return self.resolved(trained_with=(checkpoint_metrics.get("config") or {}).get("optimizer"))


# --- supernet scoring --------------------------------------------------------------------------------

EVALUATORS = ("proxy", "supernet", "synthetic")  # and synthetic:SECONDS


def check_evaluator(field: str, value: Any) -> None:
    """``proxy``, ``supernet``, ``synthetic`` or ``synthetic:SECONDS``."""
    check_text(field, value)
    if value in EVALUATORS or (isinstance(value, str) and value.startswith("synthetic:")):
        return
    raise SettingError(field, f"unknown evaluator {short(value)} (choose from: proxy, supernet, synthetic or "
                              "synthetic:SECONDS)")


@dataclass(frozen=True)
class SupernetScoreConfig:
    """Scoring candidates with a trained supernet: ``path`` is the folder of ``supernet.pt``; BatchNorm is
    recalibrated on ``bn_batches`` training batches of ``batch_size`` (seeded by ``seed``); ``precision``
    of the recalibration and validation (``auto``: see nas.train.cpu.resolve_scoring_precision);
    ``metric``, the score the reward takes as the candidate's accuracy: ``accuracy`` (top-1 on the val
    split) or ``likelihood`` (exp of minus the val loss: the geometric mean of the probability given to
    the true class)."""

    path: str | None = None
    bn_batches: int = 8
    batch_size: int = 256
    seed: int = 0
    precision: str = "auto"
    metric: str = "accuracy"

    def __post_init__(self) -> None:
        check_text("path", self.path, optional=True)
        check_number("bn_batches", self.bn_batches, integer=True, minimum=1, maximum=10**4, optional=False)
        check_number("batch_size", self.batch_size, integer=True, minimum=1, maximum=MAX_BATCH, optional=False)
        check_seed("seed", self.seed)
        check_text("precision", self.precision, PRECISIONS, what="precision")
        check_text("metric", self.metric, SUPERNET_METRICS, what="metric")
