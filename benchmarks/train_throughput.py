"""Training throughput on this CPU: a plain PyTorch loop vs. the project's trainer, side by side.

    python benchmarks/train_throughput.py [--network search_spaces/fashion_mnist.yaml] [--threads 2]
        [--batch-size 128] [--steps 10] [--rounds 5] [--precisions fp32 bf16] [--synthetic]
        [--parts] [--compile] [--depthwise] [--batchnorm] [--fp32-depthwise]

Both train the same network (seed 0) with the same threads and batch size on Fashion-MNIST held in
memory (or random uint8 images with --synthetic). The plain loop is what one writes without tricks:
NCHW fp32, ``torch.optim.SGD`` (momentum 0.9), cross-entropy, batches sliced from a normalised
float tensor. The trainer is ``nas.train.train`` (channels-last, fused optimizer step, the given
precision; its own input pipeline with random crop and flip). Rounds are interleaved (plain, then
each trainer variant, again and again) and the medians are printed with their ratio to the plain
loop, after one warm-up round. The input pipeline alone is timed too: it must be far faster than
training. ``--parts`` also times the optimizer step (for-loop, foreach, fused) and evaluation with
and without BatchNorm folding; ``--compile`` adds the trainer with ``compile: on`` for each precision
(its compiled steps; the compilation, timed once, is printed apart); ``--depthwise`` adds the trainer
compiled in the first precision with each depthwise weight gradient of :data:`DEPTHWISE` forced;
``--batchnorm`` the trainer compiled in the first precision with inductor's own BatchNorm instead of
the two-stage one (:mod:`nas.train.batchnorm`); ``--fp32-depthwise`` the trainer compiled in the first
precision with every depthwise layer in fp32 (under bf16 the trainer keeps those of stride 1 in bf16:
:func:`nas.train.layer_patches.keeps_bf16`).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from typing import Iterator

import torch
import torch.nn as nn

from nas.data import Augment, DataSplits, ImageDataset, Normalizer, load_data, train_batches
from nas.train import TrainConfig, train
from nas.train.cpu import LONG_TRAINING_STEPS, cpu_summary, resolve_precision


def synthetic(n: int = 8192) -> DataSplits:
    gen = torch.Generator().manual_seed(0)
    data = ImageDataset(torch.randint(0, 256, (n, 1, 28, 28), generator=gen, dtype=torch.uint8),
                        torch.arange(n) % 10, [str(i) for i in range(10)], (0.286,), (0.353,))
    return DataSplits(data, data.select(torch.arange(512)), data.select(torch.arange(512)))


def data_only(splits: DataSplits, batch_size: int, batches: int = 100) -> float:
    """Images/s of the trainer's input pipeline alone (shuffle, crop, flip, normalise, channels-last)."""
    stream = train_batches(splits.train, batch_size, torch.Generator().manual_seed(0), Augment(), True)
    next(stream)
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return batches * batch_size / (time.perf_counter() - start)


class PlainLoop:
    """The baseline: NCHW fp32, plain torch.optim.SGD, slices of a pre-normalised float tensor."""

    def __init__(self, model: nn.Module, data: ImageDataset, batch_size: int):
        self.model, self.batch_size = model, batch_size
        self.images = Normalizer(data.mean, data.std)(data.images)
        self.labels = data.labels
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        self.criterion = nn.CrossEntropyLoss()
        self.generator = torch.Generator().manual_seed(0)

    def run(self, steps: int) -> float:
        """Images/s over ``steps`` training steps."""
        self.model.train()
        order = torch.randperm(len(self.labels), generator=self.generator)
        start = time.perf_counter()
        for step in range(steps):
            idx = order[step * self.batch_size : (step + 1) * self.batch_size]
            loss = self.criterion(self.model(self.images[idx]), self.labels[idx])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            loss.item()
        return steps * self.batch_size / (time.perf_counter() - start)


# The depthwise weight gradients --depthwise compares, as (shifted, small_maps) of
# nas.train.layer_patches.patched_layers: the trainer picks one of them by the CPU (nas.train.cpu).
DEPTHWISE = {"tap sum": (True, False), "oneDNN": (False, False), "batched product": (False, True),
             "batched product + tap sum": (True, True)}


class Trainer:
    """``nas.train.train`` for ``steps`` steps on the given model (images/s of its training steps; with
    ``compile`` on, of the steps after the first, which compiles). ``patches`` (keyword arguments of
    :func:`nas.train.layer_patches.patched_layers`) force those layer patches instead of the trainer's pick."""

    def __init__(self, model: nn.Module, splits: DataSplits, batch_size: int, precision: str, threads: int,
                 compile: str = "off", patches: dict | None = None):
        self.model, self.splits = model, splits
        self.config = dict(batch_size=batch_size, eval_every=None, precision=precision, threads=threads,
                           compile=compile)
        self.compiles = compile == "on"
        self.patches = patches or {}

    def run(self, steps: int) -> float:
        with forced_patches(**self.patches):
            result = train(self.model, self.splits, TrainConfig(steps=steps + self.compiles, **self.config),
                           progress=False)
        if self.compiles and result.compile_seconds > 5:
            print(f"torch.compile ({self.config['precision']}): first step {result.compile_seconds:,.1f} s", flush=True)
        return result.images_per_sec


@contextlib.contextmanager
def forced_patches(**forced) -> Iterator[None]:
    """Within the block, trainings patch their layers with ``forced`` keyword arguments of
    :func:`nas.train.layer_patches.patched_layers` over the trainer's own (none: the trainer's pick)."""
    if not forced:
        yield
        return
    import nas.train.trainer as trainer

    own = trainer.patched_layers
    trainer.patched_layers = lambda model, **kwargs: own(model, **{**kwargs, **forced})
    try:
        yield
    finally:
        trainer.patched_layers = own


def medians(contenders: dict, steps: int, rounds: int) -> dict[str, list[float]]:
    """Images/s of each contender over ``rounds`` interleaved rounds of ``steps`` (after a warm-up)."""
    for contender in contenders.values():  # warm-up: oneDNN primitives, allocator
        contender.run(2)
    speeds: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, contender in contenders.items():
            speeds[name].append(contender.run(steps))
    return speeds


def print_speeds(speeds: dict[str, list[float]], unit: str = "img/s") -> None:
    """Median, range and ratio to the first entry."""
    base = statistics.median(next(iter(speeds.values())))
    width = max(map(len, speeds))
    for name, values in speeds.items():
        median = statistics.median(values)
        spread = f"[{min(values):,.0f}-{max(values):,.0f}]"
        print(f"{name.ljust(width)}  {median:8,.1f} {unit} {spread:>15}  x{median / base:.2f}", flush=True)


class OptimizerStep:
    """Optimizer steps/s of SGD (Nesterov momentum) on the network's parameters with random gradients."""

    def __init__(self, model: nn.Module, **kind):
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, **kind)

    def run(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            self.optimizer.step()
        return steps / (time.perf_counter() - start)


class Evaluation:
    """Images/s of ``nas.train.evaluate`` on 1,024 val images, with or without BatchNorm folding."""

    def __init__(self, model: nn.Module, splits: DataSplits, fold_bn: bool):
        self.model, self.data, self.fold_bn = model, splits.val.select(torch.arange(1024)), fold_bn

    def run(self, steps: int) -> float:
        from nas.train import evaluate

        start = time.perf_counter()
        for _ in range(max(1, steps // 5)):
            evaluate(self.model, self.data, 512, fold_bn=self.fold_bn)
        return max(1, steps // 5) * len(self.data) / (time.perf_counter() - start)


def parts(args: argparse.Namespace, splits: DataSplits) -> None:
    from nas.train.cpu import fused_supported

    kinds = {"optimizer step, for-loop": {"foreach": False}, "optimizer step, foreach": {"foreach": True}}
    if fused_supported("sgd"):
        kinds["optimizer step, fused"] = {"fused": True}
    print_speeds(medians({k: OptimizerStep(build(args.network, splits), **v) for k, v in kinds.items()},
                         20, args.rounds), "steps/s")
    net = build(args.network, splits)
    print_speeds(medians({"evaluate, BatchNorm kept": Evaluation(net, splits, False),
                          "evaluate, BatchNorm folded": Evaluation(net, splits, True)}, 5, args.rounds))


def build(network: str, splits: DataSplits) -> nn.Module:
    from nas.models import build_model
    from nas.load import load_spec_arg

    data = splits.train
    spec = load_spec_arg(network, num_classes=data.num_classes, resolution=data.resolution[0],
                         in_channels=data.in_channels)
    torch.manual_seed(0)
    return build_model(spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="search_spaces/fashion_mnist.yaml",
                        help="a space's baseline, spec file/string or named network (default: the Fashion-MNIST baseline)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="training steps per round and contender")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--parts", action="store_true", help="also time optimizer steps and evaluation")
    parser.add_argument("--compile", action="store_true", help="also time the trainer compiled (a minute or two to compile)")
    parser.add_argument("--depthwise", action="store_true",
                        help="also time the trainer compiled with each depthwise weight gradient (first precision)")
    parser.add_argument("--batchnorm", action="store_true",
                        help="also time the trainer compiled with inductor's own BatchNorm (first precision)")
    parser.add_argument("--fp32-depthwise", action="store_true",
                        help="also time the trainer compiled with every depthwise layer in fp32 (first precision)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    splits = synthetic() if args.synthetic else load_data("fashion-mnist")
    small = DataSplits(splits.train, splits.val.select(torch.arange(256)), splits.test)
    print(f"CPU: {cpu_summary()}")
    print(f"precision auto on this CPU, long trainings: {resolve_precision('auto', LONG_TRAINING_STEPS)}")
    net = build(args.network, splits)
    print(f"network: {args.network} ({sum(p.numel() for p in net.parameters()) / 1e6:.2f} M params), "
          f"batch {args.batch_size}, {args.steps} steps x {args.rounds} interleaved rounds, medians")
    print(f"input pipeline alone (shuffle, crop, flip, normalise): {data_only(splits, args.batch_size):,.0f} img/s",
          flush=True)
    contenders = {"plain loop (NCHW fp32, SGD)": PlainLoop(build(args.network, splits), splits.train, args.batch_size)}
    for precision in args.precisions:
        for compile in ("off", "on") if args.compile else ("off",):
            name = f"trainer {precision}" + (" compiled" if compile == "on" else "")
            contenders[name] = Trainer(build(args.network, splits), small, args.batch_size, precision, args.threads,
                                       compile)
    if args.depthwise:
        for name, (shifted, small_maps) in DEPTHWISE.items():
            contenders[f"trainer {args.precisions[0]} compiled, depthwise {name}"] = Trainer(
                build(args.network, splits), small, args.batch_size, args.precisions[0], args.threads, "on",
                dict(shifted=shifted, small_maps=small_maps))
    if args.batchnorm:
        contenders[f"trainer {args.precisions[0]} compiled, inductor's BatchNorm"] = Trainer(
            build(args.network, splits), small, args.batch_size, args.precisions[0], args.threads, "on",
            dict(batchnorm=False))
    if args.fp32_depthwise:
        contenders[f"trainer {args.precisions[0]} compiled, every depthwise layer in fp32"] = Trainer(
            build(args.network, splits), small, args.batch_size, args.precisions[0], args.threads, "on",
            dict(bf16_depthwise=False))
    print_speeds(medians(contenders, args.steps, args.rounds))
    if args.parts:
        parts(args, splits)


if __name__ == "__main__":
    main()
