"""Experiment files: one YAML file -> validated, frozen dataclasses.

An experiment names a search space, the data, the proxy-training budget, the latency source, the
reward and the search. Each section is a dataclass; the allowed keys of a section are the fields of
its dataclass, and :data:`SECTIONS` is the one place that lists the sections (later stages add
``train``, ``netadapt``, ``export`` here). Relative paths are relative to the experiment file.

Example (``experiments/fashion_mnist.yaml``)::

    name: fashion_mnist
    space: ../search_spaces/fashion_mnist.yaml
    out: ../runs/fashion_mnist
    data: {name: fashion-mnist, val_fraction: 0.05, subset: 10000}
    proxy: {steps: 100, batch_size: 64, optimizer: adamw, pruner: median}
    latency: {table: ../latency_tables/fashion_mnist}   # this machine's table (built on first use)
    reward: {target_ms: baseline, preset: hard}   # or a number of ms; or alpha/beta
    search: {strategy: rl, n_trials: 40, timeout_min: 55, seed: 0}
    # one-shot: search: {evaluator: supernet, ...} and supernet: {path: ../runs/supernet, bn_batches: 8}
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from nas.config import (COMPILE_CHOICES, EXPORT_FORMATS, PRECISIONS, NetAdaptConfig, SettingError,
                        SupernetScoreConfig, TrainConfig, check_below, check_evaluator, check_flag, check_number,
                        check_seed, check_strategy_options, check_text, short)
from nas.errors import NasError
from nas.io import check_output_dir, read_yaml
from nas.reward import PRESETS, Reward
from nas.spec import SearchSpace, load_space

NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")
LATENCY_SOURCES = ("table", "measure")
OBJECTIVES = ("reward", "pareto")
PRUNERS = ("none", "median", "hyperband")


class ExperimentError(NasError):
    """An invalid experiment file."""


def check_threads_here(field: str, value: Any, optional: bool = True) -> None:
    """Threads in an experiment: an integer from 1 to this machine's cores (more only oversubscribes it)."""
    check_number(field, value, integer=True, minimum=1, maximum=os.cpu_count() or 1, optional=optional)


@dataclass(frozen=True)
class DataSection:
    name: str = "fashion-mnist"
    data_dir: str | None = None
    val_fraction: float = 0.1
    subset: int | None = None
    seed: int = 0

    def validate(self) -> None:
        if not isinstance(self.name, str):
            raise SettingError("name", f"expected a dataset name, got {short(self.name)}")
        check_text("data_dir", self.data_dir, optional=True)
        check_number("val_fraction", self.val_fraction, minimum=0, exclusive=True, optional=False)
        check_below("val_fraction", self.val_fraction, 1)
        check_number("subset", self.subset, integer=True, minimum=1)
        check_seed("seed", self.seed)


@dataclass(frozen=True)
class ProxySection:
    """Short training of each candidate; exactly one of ``steps`` / ``epochs``."""

    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float | None = None
    eval_every: float | None = 1.0
    threads: int | None = None
    seed: int = 0
    pruner: str = "none"

    def validate(self) -> None:
        check_text("pruner", self.pruner, PRUNERS, what="pruner")
        check_threads_here("threads", self.threads)

    def config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, steps=self.steps, batch_size=self.batch_size, optimizer=self.optimizer,
                           lr=self.lr, eval_every=self.eval_every, threads=self.threads, seed=self.seed)


@dataclass(frozen=True)
class LatencySection:
    """``source: table`` predicts from ``table``; ``source: measure`` times every candidate.

    ``table``: one table folder, or a space's folder of tables (``latency_tables/SPACE``) from which
    the table of ``device`` is used: ``this`` machine's (built there on first use) or another
    device's id (the search then optimises for that device; nothing is measured here)."""

    table: str | None = None
    source: str = "table"
    device: str = "this"
    threads: int = 1
    measure_best: bool = True

    def validate(self) -> None:
        check_text("source", self.source, LATENCY_SOURCES)
        check_text("table", self.table, optional=True)
        check_text("device", self.device)
        check_flag("measure_best", self.measure_best)
        if self.source == "table" and self.table is None:
            raise SettingError("table", "missing (or set latency.source: measure)")
        check_threads_here("threads", self.threads, optional=False)
        if not self.device:
            raise SettingError("device", "expected 'this' or a device id")
        if self.source == "measure" and self.device != "this":
            raise SettingError("source", "measure times candidates on this machine; it needs latency.device: this")


@dataclass(frozen=True)
class RewardSection:
    """``target_ms``: the latency target T in ms, or ``baseline`` for the space baseline's latency."""

    target_ms: float | str | None = None
    preset: str | None = "soft"
    alpha: float | None = None
    beta: float | None = None

    def validate(self) -> None:
        if self.target_ms is None:
            raise SettingError("target_ms", "missing (the latency target T in ms)")
        if self.target_ms != "baseline":
            check_number("target_ms", self.target_ms, minimum=0, exclusive=True)
        check_text("preset", self.preset, PRESETS, optional=True, what="preset")
        if self.preset is None and (self.alpha is None or self.beta is None):
            raise SettingError(None, "give a preset or both alpha and beta")
        for key in ("alpha", "beta"):
            check_number(key, getattr(self, key), maximum=0)


@dataclass(frozen=True)
class SearchSection:
    strategy: str = "tpe"
    n_trials: int = 50
    timeout_min: float | None = None
    seed: int = 0
    objectives: str = "reward"
    constraint: bool = False
    storage: str | None = None
    study: str | None = None
    baseline: bool = True
    options: dict = field(default_factory=dict)
    evaluator: str = "proxy"

    def validate(self) -> None:
        check_text("objectives", self.objectives, OBJECTIVES)
        check_evaluator("evaluator", self.evaluator)
        check_text("storage", self.storage, optional=True)
        check_text("study", self.study, optional=True)
        for key in ("constraint", "baseline"):
            check_flag(key, getattr(self, key))
        check_strategy_options(self.strategy, self.options)
        check_number("n_trials", self.n_trials, integer=True, minimum=1, optional=False)
        check_number("timeout_min", self.timeout_min, minimum=0, exclusive=True, maximum=10**9)
        check_seed("seed", self.seed)


@dataclass(frozen=True)
class TrainSection:
    """Full training (``nas run``) of the found network and of the report's reference networks."""

    epochs: float = 5.0
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float | None = None
    seed: int = 0
    threads: int | None = None
    precision: str = "auto"
    compile: str = "auto"

    def validate(self) -> None:
        check_number("epochs", self.epochs, optional=False)  # a full training has an epoch budget
        check_threads_here("threads", self.threads)
        check_text("precision", self.precision, PRECISIONS, what="precision")
        check_text("compile", self.compile, COMPILE_CHOICES, what="compile setting")

    def config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer, lr=self.lr,
                           seed=self.seed, threads=self.threads, evaluate_test=True, precision=self.precision,
                           compile=self.compile)


@dataclass(frozen=True)
class NetAdaptSection:
    """NetAdapt after the full training (``nas run``); ``target``: fraction of the start latency or 'Nms'."""

    target: str = "0.8"
    short_steps: int = 100
    long_epochs: float = 1.0
    delta_fraction: float = 0.01
    select: str = "ratio"
    subset: int | None = None

    def validate(self) -> None:
        check_number("subset", self.subset, integer=True, minimum=1)

    def config(self, seed: int) -> NetAdaptConfig:
        """NetAdapt's settings; it fine-tunes with the full training's ``seed``."""
        target = self.target
        if isinstance(target, (int, float)) and not isinstance(target, bool):
            target = str(target)
        return NetAdaptConfig(target=target, short_steps=self.short_steps, long_epochs=self.long_epochs,
                              delta_fraction=self.delta_fraction, select=self.select, seed=seed)


@dataclass(frozen=True)
class ExportSection:
    formats: list = field(default_factory=lambda: ["onnx", "json"])

    def validate(self) -> None:
        if not isinstance(self.formats, list) or not self.formats:
            raise SettingError("formats", "expected a non-empty list")
        for fmt in self.formats:
            if not isinstance(fmt, str) or fmt not in EXPORT_FORMATS:
                raise SettingError("formats", f"unknown format {short(fmt)} (choose from: {', '.join(EXPORT_FORMATS)})")


@dataclass(frozen=True)
class ReportSection:
    """Uniform width variants of the space's baseline trained with the same recipe for the report."""

    width_mults: list = field(default_factory=lambda: [0.75])

    def validate(self) -> None:
        if not isinstance(self.width_mults, list):
            raise SettingError("width_mults", "expected a list of numbers")
        for m in self.width_mults:
            check_number("width_mults", m, minimum=0, exclusive=True)


@dataclass(frozen=True)
class SupernetSection:
    """The supernet that scores candidates when ``search.evaluator: supernet`` (``path``: the folder of
    ``supernet.pt`` written by ``nas supernet train``)."""

    path: str | None = None
    bn_batches: int = 8
    batch_size: int = 256
    seed: int = 0
    precision: str = "auto"
    metric: str = "accuracy"

    def validate(self) -> None:
        self.config()

    def config(self) -> SupernetScoreConfig:
        return SupernetScoreConfig(path=self.path, bn_batches=self.bn_batches, batch_size=self.batch_size,
                                   seed=self.seed, precision=self.precision, metric=self.metric)


# The sections an experiment file may have: name -> dataclass (its fields are the allowed keys).
SECTIONS: dict[str, type] = {
    "data": DataSection,
    "proxy": ProxySection,
    "latency": LatencySection,
    "reward": RewardSection,
    "search": SearchSection,
    "train": TrainSection,
    "netadapt": NetAdaptSection,
    "export": ExportSection,
    "report": ReportSection,
    "supernet": SupernetSection,
}
TOP_LEVEL = ("name", "space", "out")


@dataclass(frozen=True)
class Experiment:
    """A validated experiment. The runtime settings are built once, here: ``proxy_config`` (proxy
    training of each candidate), ``train_config`` (full training), ``netadapt_config``, ``supernet_config``
    (scoring candidates with a supernet)."""

    name: str
    space: Path
    out: Path
    data: DataSection
    proxy: ProxySection
    latency: LatencySection
    reward: RewardSection
    search: SearchSection
    train: TrainSection = field(default_factory=TrainSection)
    netadapt: NetAdaptSection = field(default_factory=NetAdaptSection)
    export: ExportSection = field(default_factory=ExportSection)
    report: ReportSection = field(default_factory=ReportSection)
    supernet: SupernetSection = field(default_factory=SupernetSection)
    source: str = "<memory>"
    proxy_config: TrainConfig = field(init=False, repr=False, compare=False)
    train_config: TrainConfig = field(init=False, repr=False, compare=False)
    netadapt_config: NetAdaptConfig = field(init=False, repr=False, compare=False)
    supernet_config: SupernetScoreConfig = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in SECTIONS:
            _in_section(self.source, name, getattr(self, name).validate)
        built = {"proxy_config": _in_section(self.source, "proxy", self.proxy.config),
                 "train_config": _in_section(self.source, "train", self.train.config),
                 "netadapt_config": _in_section(self.source, "netadapt",
                                                lambda: self.netadapt.config(self.train.seed)),
                 "supernet_config": _in_section(self.source, "supernet", self.supernet.config)}
        for key, value in built.items():
            object.__setattr__(self, key, value)
        if self.search.evaluator == "supernet" and self.supernet.path is None:
            raise _fail(self.source, "supernet.path: missing (search.evaluator: supernet scores candidates with the "
                                     "supernet in that folder)")
        if self.search.objectives == "pareto" and self.proxy.pruner != "none":
            raise _fail(self.source, "proxy.pruner: pruners work with single-objective search only "
                                     "(search.objectives: reward)")

    def reward_fn(self, target_ms: float | None = None) -> Reward:
        """The reward; ``target_ms`` is required when the file says ``target_ms: baseline``."""
        r = self.reward
        target = r.target_ms if target_ms is None else target_ms
        if target == "baseline":
            raise NasError("the latency target 'baseline' must be resolved first (run_search does)")
        alpha, beta = PRESETS[r.preset] if r.preset else (None, None)
        alpha = r.alpha if r.alpha is not None else alpha
        beta = r.beta if r.beta is not None else beta
        return Reward(target, alpha, beta)

    @property
    def table_path(self) -> Path | None:
        return None if self.latency.table is None else Path(self.latency.table)

    def load_space(self) -> SearchSpace:
        return load_space(self.space)

    def replace(self, **sections: Any) -> "Experiment":
        """A copy with some fields of some sections changed: ``replace(search={"n_trials": 5})``."""
        changes: dict[str, Any] = {}
        for name, values in sections.items():
            if name in SECTIONS:
                changes[name] = _section(name, {**dataclasses.asdict(getattr(self, name)), **values}, self.source)
            else:
                changes[name] = values
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The experiment as the dict :func:`experiment_from_dict` reads (paths as strings)."""
        data: dict[str, Any] = {"name": self.name, "space": str(self.space), "out": str(self.out)}
        for name in SECTIONS:
            data[name] = dataclasses.asdict(getattr(self, name))
        return data


def _fail(source: str, message: str) -> ExperimentError:
    return ExperimentError(f"{source}: {message}")


def _in_section(source: str, section: str, build: Callable[[], Any]) -> Any:
    """``build()``, its setting errors named ``source: section.field: problem``."""
    try:
        return build()
    except SettingError as exc:
        where = f"{section}.{exc.field}" if exc.field else section
        raise _fail(source, f"{where}: {exc.problem}") from None
    except ExperimentError:
        raise
    except NasError as exc:
        raise _fail(source, f"{section}: {exc}") from None


def _section(name: str, data: Any, source: str):
    kind = SECTIONS[name]
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _fail(source, f"{name}: expected a mapping")
    allowed = [f.name for f in dataclasses.fields(kind)]
    unknown = sorted(map(str, set(data) - set(allowed)))
    if unknown:
        raise _fail(source, f"{name}: unknown key {unknown[0][:60]!r} (allowed: {', '.join(allowed)})")
    return kind(**data)


def experiment_from_dict(data: Any, source: str = "<memory>", base_dir: str | Path = ".") -> Experiment:
    """Validate a parsed experiment; relative paths are resolved against ``base_dir``."""
    if not isinstance(data, dict):
        raise _fail(source, "an experiment file must be a YAML mapping")
    unknown = sorted(map(str, set(data) - set(TOP_LEVEL) - set(SECTIONS)))
    if unknown:
        raise _fail(source, f"unknown key {unknown[0][:60]!r} (allowed: {', '.join([*TOP_LEVEL, *SECTIONS])})")
    for key in ("space", "reward"):
        if key not in data:
            raise _fail(source, f"missing key {key!r}")
    base = Path(base_dir)
    name = data.get("name") or Path(source).stem
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise _fail(source, f"name: expected 1 to 100 ASCII letters, digits, '-' or '_', got {short(name)}")
    if not isinstance(data["space"], str):
        raise _fail(source, "space: expected a path to a search-space YAML file")
    resolve = lambda p: p if p is None else str(base / p)  # noqa: E731
    sections = {key: _section(key, data.get(key), source) for key in SECTIONS}
    if sections["latency"].table is not None:
        if not isinstance(sections["latency"].table, str):
            raise _fail(source, "latency.table: expected a path")
        sections["latency"] = dataclasses.replace(sections["latency"], table=resolve(sections["latency"].table))
    if sections["supernet"].path is not None:
        if not isinstance(sections["supernet"].path, str):
            raise _fail(source, "supernet.path: expected a folder path")
        sections["supernet"] = dataclasses.replace(sections["supernet"], path=resolve(sections["supernet"].path))
    if sections["data"].data_dir is not None:
        sections["data"] = dataclasses.replace(sections["data"], data_dir=resolve(str(sections["data"].data_dir)))
    out = data.get("out", f"runs/{name}")
    if not isinstance(out, str):
        raise _fail(source, "out: expected a folder path")
    return Experiment(name=name, space=base / data["space"], out=base / out, source=source, **sections)


def load_experiment(path: str | Path, check_files: bool = True) -> Experiment:
    """Read and validate an experiment file (and, with ``check_files``, its space and table)."""
    path = Path(path)
    data = read_yaml(path, ExperimentError, "experiment file")
    exp = experiment_from_dict(data, str(path), path.parent)
    if check_files:
        check_experiment_files(exp)
    return exp


def check_experiment_files(exp: Experiment) -> None:
    """The space loads; a latency table named directly exists and was built for this space (a space's
    folder of tables is resolved when the experiment runs: this machine's table may be built then); the
    output folder can take outputs (checked before any work, :func:`nas.io.check_output_dir`)."""
    try:
        check_output_dir(exp.out)
    except NasError as exc:
        raise _fail(exp.source, f"out: {exc}") from None
    space = exp.load_space()
    if exp.latency.table is None:
        return
    table = Path(exp.latency.table)
    from nas.latency.table import is_table, load_table

    if not is_table(table):
        if table.exists() and not table.is_dir():
            raise _fail(exp.source, f"latency.table: {table} is neither a table folder nor a folder of tables")
        if not table.exists() and not table.parent.is_dir():
            raise _fail(exp.source, f"latency.table: not found: {table}")
        return
    built_for = load_table(table).space_hash
    if built_for != space.hash:
        raise _fail(exp.source, f"latency.table {table} was built for another space (space hash {built_for}, "
                                f"{space.name} has {space.hash})")


def with_resolved_table(exp: Experiment, progress: bool = True) -> Experiment:
    """``exp`` with ``latency.table`` set to the one table its target device uses: found in the
    space's folder of tables, or (target: this machine) built there first."""
    if exp.latency.table is None:
        return exp
    from nas.latency.catalog import resolve_table

    table = resolve_table(exp.latency.table, exp.load_space(), device=exp.latency.device,
                          threads=exp.latency.threads, progress=progress)
    return dataclasses.replace(exp, latency=dataclasses.replace(exp.latency, table=str(table)))
