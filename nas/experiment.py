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
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.errors import NasError
from nas.io import read_yaml
from nas.reward import PRESETS, Reward

NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")
MAX_SEED = 2**32 - 1   # numpy's seeds
MAX_COUNT = 10**9      # steps, trials, images
MAX_BATCH = 1 << 16
MAX_EPOCHS = 10**4
LATENCY_SOURCES = ("table", "measure")
OBJECTIVES = ("reward", "pareto")
PRUNERS = ("none", "median", "hyperband")


class ExperimentError(NasError):
    """An invalid experiment file."""


@dataclass(frozen=True)
class DataSection:
    name: str = "fashion-mnist"
    data_dir: str | None = None
    val_fraction: float = 0.1
    subset: int | None = None
    seed: int = 0


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


@dataclass(frozen=True)
class RewardSection:
    """``target_ms``: the latency target T in ms, or ``baseline`` for the space baseline's latency."""

    target_ms: float | str | None = None
    preset: str | None = "soft"
    alpha: float | None = None
    beta: float | None = None


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


@dataclass(frozen=True)
class TrainSection:
    """Full training (``nas run``) of the found network and of the report's reference networks."""

    epochs: float = 5.0
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float | None = None
    seed: int = 0
    threads: int | None = None


@dataclass(frozen=True)
class NetAdaptSection:
    """NetAdapt after the full training (``nas run``); ``target``: fraction of the start latency or 'Nms'."""

    target: str = "0.8"
    short_steps: int = 100
    long_epochs: float = 1.0
    delta_fraction: float = 0.01
    select: str = "ratio"
    subset: int | None = None


@dataclass(frozen=True)
class ExportSection:
    formats: list = field(default_factory=lambda: ["onnx", "json"])


@dataclass(frozen=True)
class ReportSection:
    """Uniform width variants of the space's baseline trained with the same recipe for the report."""

    width_mults: list = field(default_factory=lambda: [0.75])


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
}
TOP_LEVEL = ("name", "space", "out")


@dataclass(frozen=True)
class Experiment:
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
    source: str = "<memory>"

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

    def load_space(self):
        from nas.spec import load_space

        return load_space(self.space)

    def replace(self, **sections: Any) -> "Experiment":
        """A copy with some fields of some sections changed: ``replace(search={"n_trials": 5})``."""
        changes: dict[str, Any] = {}
        for name, values in sections.items():
            if name in SECTIONS:
                changes[name] = _section(name, {**dataclasses.asdict(getattr(self, name)), **values}, self.source)
            else:
                changes[name] = values
        out = dataclasses.replace(self, **changes)
        _check(out)
        return out


def _fail(source: str, message: str) -> ExperimentError:
    return ExperimentError(f"{source}: {message}")


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


def _text(source: str, where: str, value: Any, choices: Any = None, optional: bool = False) -> None:
    """``value`` is a string (one of ``choices`` when given), or None when ``optional``."""
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise _fail(source, f"{where}: expected text, got {_short(value)}")
    if choices is not None and value not in choices:
        raise _fail(source, f"{where}: {_short(value)} is not one of {', '.join(choices)}")


def _flag(source: str, where: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise _fail(source, f"{where}: expected true or false, got {_short(value)}")


def _threads(source: str, where: str, value: Any, optional: bool = True) -> None:
    """Threads: an integer from 1 to this machine's cores (more only oversubscribes the CPU)."""
    _number(source, where, value, integer=True, minimum=1, maximum=os.cpu_count() or 1, optional=optional)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(source: str, where: str, value: Any, *, integer: bool = False, minimum: float | None = None,
            exclusive: bool = False, optional: bool = True, maximum: float | None = None) -> None:
    if value is None:
        if optional:
            return
        raise _fail(source, f"{where}: missing")
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or (not integer and not math.isfinite(value)):
        raise _fail(source, f"{where}: expected {'an integer' if integer else 'a finite number'}, got {_short(value)}")
    if minimum is not None and (value <= minimum if exclusive else value < minimum):
        raise _fail(source, f"{where}: must be {'>' if exclusive else '>='} {minimum}, got {_short(value)}")
    if maximum is None:
        maximum = MAX_COUNT if integer else None
    if maximum is not None and value > maximum:
        raise _fail(source, f"{where}: must be <= {maximum:,}, got {_short(value)}")


def _check(exp: Experiment) -> None:
    from nas.search import STRATEGIES

    s = exp.source
    d, p, lat, r, se = exp.data, exp.proxy, exp.latency, exp.reward, exp.search
    if not isinstance(d.name, str):
        raise _fail(s, f"data.name: expected a dataset name, got {_short(d.name)}")
    _text(s, "data.data_dir", d.data_dir, optional=True)
    _number(s, "data.val_fraction", d.val_fraction, minimum=0, exclusive=True, optional=False)
    if d.val_fraction >= 1:
        raise _fail(s, f"data.val_fraction: must be < 1, got {d.val_fraction}")
    _number(s, "data.subset", d.subset, integer=True, minimum=1)
    _number(s, "data.seed", d.seed, integer=True, minimum=0, maximum=MAX_SEED, optional=False)
    if (p.steps is None) == (p.epochs is None):
        raise _fail(s, "proxy: give exactly one budget, steps or epochs")
    _number(s, "proxy.steps", p.steps, integer=True, minimum=1)
    _number(s, "proxy.epochs", p.epochs, minimum=0, exclusive=True, maximum=MAX_EPOCHS)
    _number(s, "proxy.batch_size", p.batch_size, integer=True, minimum=1, maximum=MAX_BATCH, optional=False)
    _text(s, "proxy.optimizer", p.optimizer, ("sgd", "adamw"))
    _number(s, "proxy.lr", p.lr, minimum=0, exclusive=True)
    _number(s, "proxy.eval_every", p.eval_every, minimum=0, exclusive=True)
    _threads(s, "proxy.threads", p.threads)
    _number(s, "proxy.seed", p.seed, integer=True, minimum=0, maximum=MAX_SEED, optional=False)
    _text(s, "proxy.pruner", p.pruner)
    if p.pruner not in PRUNERS:
        raise _fail(s, f"proxy.pruner: unknown pruner {p.pruner!r} (choose from: {', '.join(PRUNERS)})")
    _text(s, "latency.source", lat.source)
    _text(s, "latency.table", lat.table, optional=True)
    _text(s, "latency.device", lat.device)
    _flag(s, "latency.measure_best", lat.measure_best)
    if lat.source not in LATENCY_SOURCES:
        raise _fail(s, f"latency.source: {lat.source!r} is not one of {', '.join(LATENCY_SOURCES)}")
    if lat.source == "table" and lat.table is None:
        raise _fail(s, "latency.table: missing (or set latency.source: measure)")
    _threads(s, "latency.threads", lat.threads, optional=False)
    if not isinstance(lat.device, str) or not lat.device:
        raise _fail(s, "latency.device: expected 'this' or a device id")
    if lat.source == "measure" and lat.device != "this":
        raise _fail(s, "latency.source: measure times candidates on this machine; it needs latency.device: this")
    if r.target_ms is None:
        raise _fail(s, "reward.target_ms: missing (the latency target T in ms)")
    if r.target_ms != "baseline":
        _number(s, "reward.target_ms", r.target_ms, minimum=0, exclusive=True)
    _text(s, "reward.preset", r.preset, optional=True)
    if r.preset is not None and r.preset not in PRESETS:
        raise _fail(s, f"reward.preset: unknown preset {r.preset!r} (choose from: {', '.join(PRESETS)})")
    if r.preset is None and (r.alpha is None or r.beta is None):
        raise _fail(s, "reward: give a preset or both alpha and beta")
    for key in ("alpha", "beta"):
        _number(s, f"reward.{key}", getattr(r, key))
        if getattr(r, key) is not None and getattr(r, key) > 0:
            raise _fail(s, f"reward.{key}: must be <= 0, got {getattr(r, key)}")
    _text(s, "search.strategy", se.strategy)
    _text(s, "search.objectives", se.objectives)
    _text(s, "search.storage", se.storage, optional=True)
    _text(s, "search.study", se.study, optional=True)
    for key in ("constraint", "baseline"):
        _flag(s, f"search.{key}", getattr(se, key))
    if se.strategy not in STRATEGIES:
        raise _fail(s, f"search.strategy: unknown strategy {se.strategy!r} (choose from: {', '.join(STRATEGIES)})")
    _number(s, "search.n_trials", se.n_trials, integer=True, minimum=1, optional=False)
    _number(s, "search.timeout_min", se.timeout_min, minimum=0, exclusive=True, maximum=MAX_COUNT)
    _number(s, "search.seed", se.seed, integer=True, minimum=0, maximum=MAX_SEED, optional=False)
    if se.objectives not in OBJECTIVES:
        raise _fail(s, f"search.objectives: {se.objectives!r} is not one of {', '.join(OBJECTIVES)}")
    if se.objectives == "pareto" and p.pruner != "none":
        raise _fail(s, "proxy.pruner: pruners work with single-objective search only (search.objectives: reward)")
    if not isinstance(se.options, dict):
        raise _fail(s, "search.options: expected a mapping")
    _check_options(s, se.options, STRATEGIES[se.strategy].OPTIONS)
    try:
        STRATEGIES[se.strategy].check_options(se.options)
    except NasError as exc:
        raise _fail(s, f"search.options: {exc}") from None
    _check_run_sections(exp)


def _check_options(source: str, options: dict, defaults: dict) -> None:
    """A strategy option has its default's type: an integer in [0, 10^6], true/false, or a finite
    number (in [0, 1] for probabilities). Unknown names are the strategy's own check."""
    for name, value in options.items():
        if name not in defaults:
            continue
        default, where = defaults[name], f"search.options.{name}"
        if isinstance(default, bool):
            _flag(source, where, value)
        elif isinstance(default, int):
            _number(source, where, value, integer=True, minimum=0, maximum=10**6, optional=False)
        else:
            top = 1 if name.endswith("_prob") else None
            _number(source, where, value, minimum=0, maximum=top)


def _check_run_sections(exp: Experiment) -> None:
    """The sections only ``nas run`` reads: train, netadapt, export, report."""
    s, t, n = exp.source, exp.train, exp.netadapt
    _number(s, "train.epochs", t.epochs, minimum=0, exclusive=True, maximum=MAX_EPOCHS, optional=False)
    _number(s, "train.batch_size", t.batch_size, integer=True, minimum=1, maximum=MAX_BATCH, optional=False)
    _number(s, "train.lr", t.lr, minimum=0, exclusive=True)
    _number(s, "train.seed", t.seed, integer=True, minimum=0, maximum=MAX_SEED, optional=False)
    _threads(s, "train.threads", t.threads)
    _text(s, "train.optimizer", t.optimizer, ("sgd", "adamw"))
    _number(s, "netadapt.short_steps", n.short_steps, integer=True, minimum=1, optional=False)
    _number(s, "netadapt.long_epochs", n.long_epochs, minimum=0, maximum=MAX_EPOCHS, optional=False)
    _number(s, "netadapt.delta_fraction", n.delta_fraction, minimum=0, exclusive=True, maximum=1, optional=False)
    _text(s, "netadapt.select", n.select)
    if not isinstance(n.target, (str, int, float)) or isinstance(n.target, bool):
        raise _fail(s, f"netadapt.target: expected a fraction (0.8) or milliseconds ('3.5ms'), got {_short(n.target)}")
    _number(s, "netadapt.subset", n.subset, integer=True, minimum=1)
    from nas.netadapt import NetAdaptConfig

    try:
        NetAdaptConfig(target=str(n.target), short_steps=n.short_steps, long_epochs=n.long_epochs,
                       delta_fraction=n.delta_fraction, select=n.select)
    except NasError as exc:
        raise _fail(s, f"netadapt: {exc}") from None
    from nas.export import FORMATS

    if not isinstance(exp.export.formats, list) or not exp.export.formats:
        raise _fail(s, "export.formats: expected a non-empty list")
    for fmt in exp.export.formats:
        if not isinstance(fmt, str) or fmt not in FORMATS:
            raise _fail(s, f"export.formats: unknown format {_short(fmt)} (choose from: {', '.join(FORMATS)})")
    if not isinstance(exp.report.width_mults, list):
        raise _fail(s, "report.width_mults: expected a list of numbers")
    for m in exp.report.width_mults:
        _number(s, "report.width_mults", m, minimum=0, exclusive=True)


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
        raise _fail(source, f"name: expected 1 to 100 ASCII letters, digits, '-' or '_', got {_short(name)}")
    if not isinstance(data["space"], str):
        raise _fail(source, "space: expected a path to a search-space YAML file")
    resolve = lambda p: p if p is None else str(base / p)  # noqa: E731
    sections = {key: _section(key, data.get(key), source) for key in SECTIONS}
    if sections["latency"].table is not None:
        if not isinstance(sections["latency"].table, str):
            raise _fail(source, "latency.table: expected a path")
        sections["latency"] = dataclasses.replace(sections["latency"], table=resolve(sections["latency"].table))
    if sections["data"].data_dir is not None:
        sections["data"] = dataclasses.replace(sections["data"], data_dir=resolve(str(sections["data"].data_dir)))
    out = data.get("out", f"runs/{name}")
    if not isinstance(out, str):
        raise _fail(source, "out: expected a folder path")
    exp = Experiment(name=name, space=base / data["space"], out=base / out, source=source, **sections)
    _check(exp)
    return exp


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
    from nas.io import check_output_dir

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
