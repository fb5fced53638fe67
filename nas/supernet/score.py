"""Scoring a candidate with the supernet's weights: inherit its slice, recalibrate BatchNorm, validate.

A slice's BatchNorm running statistics were accumulated over many different members, so they are
reset and recomputed on a few training batches (train mode, no gradients, cumulative average;
no augmentation; the batches are the same for every candidate) before the val split is scored: its
top-1 accuracy and its loss, of which ``supernet.metric`` picks the search's score
(:data:`nas.config.SUPERNET_METRICS`).

:class:`nas.search.evaluate.SupernetEvaluator` scores a search's candidates with it (selected by
``search.evaluator: supernet``).
"""

from __future__ import annotations

import torch
from torch import nn

from nas.data import Augment, DataSplits, train_batches
from nas.spec import ArchSpec
from nas.supernet.model import Supernet, extract
from nas.train import Validation, validate
from nas.train.cpu import autocast, resolve_scoring_precision


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
                    batch_size: int = 256, seed: int = 0, channels_last: bool = True,
                    precision: str = "fp32") -> Validation:
    """Val accuracy and loss of ``spec`` with the supernet's weights after BatchNorm recalibration, both
    in ``precision`` (``auto``: :func:`nas.train.cpu.resolve_scoring_precision`)."""
    model = extract(supernet, spec)
    with autocast(resolve_scoring_precision(precision)):
        recalibrate_batchnorm(model, splits, bn_batches, batch_size, seed, channels_last)
        return validate(model, splits.val, channels_last=channels_last, fold_bn=True)
