"""Scoring a candidate with the supernet's weights: inherit its slice, recalibrate BatchNorm, validate.

A slice's BatchNorm running statistics were accumulated over many different members, so they are
reset and recomputed on a few training batches (train mode, no gradients, cumulative average;
no augmentation; the batches are the same for every candidate) before the val split is scored.

:class:`SupernetEvaluator` is an evaluator like :class:`nas.search.evaluate.ProxyEvaluator` (same
data, same latency from the target device's table), selected by ``search.evaluator: supernet``.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from nas.config import SupernetScoreConfig
from nas.data import Augment, DataSplits, train_batches
from nas.errors import NasError
from nas.search.evaluate import Evaluation, ProxyEvaluator, ReportFn
from nas.spec import ArchSpec
from nas.supernet.model import Supernet, extract
from nas.train import evaluate


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, splits: DataSplits, batches: int, batch_size: int, seed: int = 0,
                          channels_last: bool = True) -> None:
    """Reset every BatchNorm's running statistics and recompute them as the plain average over
    ``batches`` training batches (the same batches for a given ``seed``); the model's mode is restored."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    was_training = model.training
    model.train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    stream = train_batches(splits.train, batch_size, torch.Generator().manual_seed(seed), Augment(enabled=False),
                           channels_last)
    try:
        for _ in range(batches):
            images, _labels = next(stream)
            model(images)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)


def score_candidate(supernet: Supernet, spec: ArchSpec, splits: DataSplits, bn_batches: int = 8,
                    batch_size: int = 256, seed: int = 0, channels_last: bool = True) -> float:
    """Val accuracy of ``spec`` with the supernet's weights after BatchNorm recalibration."""
    model = extract(supernet, spec)
    recalibrate_batchnorm(model, splits, bn_batches, batch_size, seed, channels_last)
    return evaluate(model, splits.val, channels_last=channels_last)


class SupernetEvaluator(ProxyEvaluator):
    """Accuracy from the experiment's supernet (loaded once), latency as the proxy evaluator's."""

    def __init__(self, experiment, splits=None, predictor=None, supernet: Supernet | None = None,
                 progress: bool = False):
        super().__init__(experiment, splits, predictor, progress)
        self.score_config: SupernetScoreConfig = experiment.supernet_config
        if supernet is None:
            from nas.supernet.train import load_supernet

            if self.score_config.path is None:
                raise NasError("search.evaluator supernet needs supernet.path (the folder of supernet.pt)")
            supernet = load_supernet(self.score_config.path, experiment.load_space())
        self.supernet = supernet

    def evaluate(self, spec: ArchSpec, report: ReportFn | None = None) -> Evaluation:
        from nas.train import check_spec_matches

        start = time.perf_counter()
        latency, predicted, measured = self.latency(spec)
        check_spec_matches(spec, self.splits.train, self.experiment.data.name)
        c = self.score_config
        with _threads(self.config.threads):
            acc = score_candidate(self.supernet, spec, self.splits, c.bn_batches, c.batch_size, c.seed)
        return Evaluation(val_acc=float(acc), latency_ms=float(latency), latency_predicted_ms=predicted,
                          latency_measured_ms=measured, seconds=time.perf_counter() - start, steps=0,
                          extra={"evaluator": "supernet"})


def _threads(threads: int | None):
    from nas.threads import torch_threads

    return torch_threads(threads)
