"""Evaluating one candidate: proxy accuracy and latency.

An evaluator is anything with ``evaluate(spec, report=None) -> Evaluation``. ``report(step, epoch,
val_acc) -> bool`` receives intermediate accuracies (for an Optuna pruner); True stops training.

- :class:`ProxyEvaluator`: short training on the train split, accuracy on the held-out val split
  (never the test split), latency predicted from the table and/or measured end to end.
- :class:`SupernetEvaluator`: the candidate's slice of a trained supernet, BatchNorm recalibrated,
  accuracy on the val split (:mod:`nas.supernet.score`); latency as the proxy evaluator's.
- :class:`SyntheticEvaluator`: a fast, deterministic stand-in (accuracy grows with MAdds, latency
  is linear in MAdds and params) for tests and strategy benchmarks.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from nas.errors import NasError
from nas.spec import ArchSpec, count_madds, count_params

ReportFn = Callable[[int, float, float], bool]
EVALUATORS = "proxy, supernet, synthetic or synthetic:SECONDS"


@dataclass(frozen=True)
class Evaluation:
    val_acc: float
    latency_ms: float  # the latency the reward uses
    latency_predicted_ms: float | None = None
    latency_measured_ms: float | None = None
    seconds: float = 0.0
    steps: int = 0
    pruned: bool = False
    # the val split's top-1 accuracy and mean cross-entropy, where the evaluator has them; ``val_acc`` is
    # what the reward takes as accuracy (a supernet's likelihood under ``supernet.metric: likelihood``)
    val_top1: float | None = None
    val_loss: float | None = None


class Evaluator(Protocol):
    def evaluate(self, spec: ArchSpec, report: ReportFn | None = None) -> Evaluation: ...


class ProxyEvaluator:
    """Proxy training + latency, configured by an experiment (data loaded once)."""

    def __init__(self, experiment, splits=None, predictor=None, progress: bool = False):
        self.experiment = experiment
        self.config = experiment.proxy_config
        if splits is None:
            from nas.data import load_data

            d = experiment.data
            splits = load_data(d.name, d.data_dir, d.val_fraction, d.seed, d.subset)
        self.splits = splits
        self.progress = progress
        lat = experiment.latency
        if predictor is None and lat.table is not None:
            from nas.latency import load_predictor

            predictor = load_predictor(lat.table)
        self.predictor = predictor

    def latency(self, spec: ArchSpec) -> tuple[float, float | None, float | None]:
        """(latency for the reward, predicted, measured) in ms."""
        predicted = self.predictor.predict(spec) if self.predictor is not None else None
        measured = None
        if self.experiment.latency.source == "measure":
            from nas.latency import MeasureConfig, measure_spec

            lat = self.experiment.latency
            measured = measure_spec(spec, MeasureConfig.comparable_with(lat.table, lat.threads)).median_ms
        return (measured if measured is not None else predicted), predicted, measured

    def evaluate(self, spec: ArchSpec, report: ReportFn | None = None) -> Evaluation:
        import torch

        from nas.models import build_model
        from nas.train import check_spec_matches, train

        start = time.perf_counter()
        latency, predicted, measured = self.latency(spec)  # first: a table miss fails before training
        check_spec_matches(spec, self.splits.train, self.experiment.data.name)
        torch.manual_seed(self.config.seed)
        model = build_model(spec, seed=self.config.seed)
        result = train(model, self.splits, self.config, progress=self.progress, report=report)
        return Evaluation(val_acc=float(result.val_acc), latency_ms=float(latency), latency_predicted_ms=predicted,
                          latency_measured_ms=measured, seconds=time.perf_counter() - start, steps=result.steps,
                          pruned=result.stopped_early, val_top1=float(result.val_acc),
                          val_loss=None if math.isnan(result.val_loss) else float(result.val_loss))


class SupernetEvaluator(ProxyEvaluator):
    """Accuracy from the experiment's trained supernet (loaded once; :func:`nas.supernet.score.score_candidate`),
    latency as the proxy evaluator's (the target device's table). Costs seconds per candidate, no training.
    With ``supernet.metric: likelihood`` the evaluation's ``val_acc`` (the reward's accuracy) is the
    likelihood score; ``val_top1`` and ``val_loss`` keep the top-1 accuracy and the loss either way."""

    def __init__(self, experiment, splits=None, predictor=None, supernet=None, progress: bool = False):
        super().__init__(experiment, splits, predictor, progress)
        self.score_config = experiment.supernet_config
        if supernet is None:
            from nas.supernet.train import load_supernet

            if self.score_config.path is None:
                raise NasError("search.evaluator supernet needs supernet.path (the folder of supernet.pt)")
            supernet = load_supernet(self.score_config.path, experiment.load_space())
        self.supernet = supernet

    def evaluate(self, spec: ArchSpec, report: ReportFn | None = None) -> Evaluation:
        from nas.supernet.score import score_candidate
        from nas.threads import torch_threads
        from nas.train import check_spec_matches

        start = time.perf_counter()
        latency, predicted, measured = self.latency(spec)
        check_spec_matches(spec, self.splits.train, self.experiment.data.name)
        c = self.score_config
        with torch_threads(self.config.threads):
            scored = score_candidate(self.supernet, spec, self.splits, c.bn_batches, c.batch_size, c.seed,
                                     precision=c.precision)
        return Evaluation(val_acc=float(getattr(scored, c.metric)), latency_ms=float(latency),
                          latency_predicted_ms=predicted, latency_measured_ms=measured,
                          seconds=time.perf_counter() - start, steps=0, val_top1=float(scored.accuracy),
                          val_loss=float(scored.loss))


class SyntheticEvaluator:
    """Deterministic stand-in: accuracy saturates with MAdds (plus a per-spec wiggle from the hash),
    latency is linear in MAdds and params. Costs microseconds; ``steps`` intermediate reports."""

    def __init__(self, steps: int = 4, madds_scale: float = 8e6, ms_per_mmadd: float = 0.01, base_ms: float = 0.02,
                 predictor=None):
        self.steps, self.madds_scale, self.ms_per_mmadd, self.base_ms = steps, madds_scale, ms_per_mmadd, base_ms
        self.predictor = predictor  # a real latency model (``.predict(spec)``) instead of the linear one

    def evaluate(self, spec: ArchSpec, report: ReportFn | None = None) -> Evaluation:
        madds, params = count_madds(spec), count_params(spec)
        wiggle = (int(spec.hash[:8], 16) / 0xFFFFFFFF - 0.5) * 0.02
        final = 0.70 + 0.22 * (1 - math.exp(-madds / self.madds_scale)) + wiggle
        for step in range(1, self.steps + 1):
            acc = final * step / self.steps
            if report is not None and report(step, float(step), acc) and step < self.steps:
                return Evaluation(acc, self._latency(madds, params, spec), steps=step, pruned=True)
        latency = self._latency(madds, params, spec)
        return Evaluation(val_acc=final, latency_ms=latency, latency_predicted_ms=latency, steps=self.steps)

    def latency(self, spec: ArchSpec) -> tuple[float, float | None, float | None]:
        latency = self._latency(count_madds(spec), count_params(spec), spec)
        return latency, latency, None

    def _latency(self, madds: int, params: int, spec: ArchSpec | None = None) -> float:
        if self.predictor is not None and spec is not None:
            return float(self.predictor.predict(spec))
        return self.base_ms + self.ms_per_mmadd * madds / 1e6 + 0.002 * params / 1e5


class SlowEvaluator:
    """Another evaluator plus a fixed sleep per trial (a stand-in for training time in tests/benchmarks)."""

    def __init__(self, inner, seconds: float):
        self.inner, self.seconds = inner, seconds

    def evaluate(self, spec, report=None) -> Evaluation:
        time.sleep(self.seconds)
        return dataclasses.replace(self.inner.evaluate(spec, report), seconds=self.seconds)

    def latency(self, spec):
        return self.inner.latency(spec)


def make_evaluator(name: str, experiment):
    """``proxy`` (train on the experiment's data), ``supernet`` (score with the experiment's trained
    supernet, :mod:`nas.supernet.score`), ``synthetic`` (instant, fake accuracies) or
    ``synthetic:SECONDS`` (the same, taking SECONDS per trial)."""
    if name == "proxy":
        return ProxyEvaluator(experiment, progress=False)
    if name == "supernet":
        return SupernetEvaluator(experiment)
    if name == "synthetic":
        return SyntheticEvaluator()
    if name.startswith("synthetic:"):
        try:
            seconds = float(name.split(":", 1)[1])
        except ValueError:
            seconds = -1.0
        if not seconds >= 0:
            raise NasError(f"evaluator {name!r}: SECONDS must be a number >= 0")
        return SlowEvaluator(SyntheticEvaluator(), seconds)
    raise NasError(f"unknown evaluator {name!r} (choose from: {EVALUATORS})")
