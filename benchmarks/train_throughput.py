"""Training throughput on CPU: the input pipeline alone vs. full training steps.

    python benchmarks/train_throughput.py [--steps 30] [--batch-sizes 128 256] [--threads 2]

Fashion-MNIST (28x28x1) from the Debian package, or random uint8 data with --synthetic.
"""

from __future__ import annotations

import argparse
import time

import torch

from nas.data import Augment, DataSplits, ImageDataset, load_data, train_batches
from nas.train import TrainConfig, train

MODELS = {
    "mnv3s-0.5": dict(width_mult=0.5),
    "mnv3s-1.0": dict(width_mult=1.0),
}


def synthetic(n: int = 8192) -> DataSplits:
    gen = torch.Generator().manual_seed(0)
    data = ImageDataset(torch.randint(0, 256, (n, 1, 28, 28), generator=gen, dtype=torch.uint8),
                        torch.arange(n) % 10, [str(i) for i in range(10)], (0.286,), (0.353,))
    return DataSplits(data, data.select(torch.arange(512)), data.select(torch.arange(512)))


def data_only(splits: DataSplits, batch_size: int, batches: int = 200, augment: bool = True) -> float:
    """Images/s of shuffling, cropping, flipping and normalising alone."""
    stream = train_batches(splits.train, batch_size, torch.Generator().manual_seed(0), Augment(enabled=augment))
    next(stream)
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return batches * batch_size / (time.perf_counter() - start)


def model_training(splits: DataSplits, name: str, batch_size: int, steps: int, channels_last: bool) -> float:
    """Images/s of full training steps (forward, backward, SGD) with the real pipeline."""
    from nas.models import build_model
    from nas.spec import mobilenetv3_small

    spec = mobilenetv3_small(num_classes=10, resolution=28, in_channels=1, **MODELS[name])
    torch.manual_seed(0)
    model = build_model(spec)
    small = DataSplits(splits.train, splits.val.select(torch.arange(256)), splits.test)
    train(model, small, TrainConfig(steps=3, batch_size=batch_size, eval_every=None, channels_last=channels_last),
          progress=False)  # warm-up: oneDNN primitives, allocator
    config = TrainConfig(steps=steps, batch_size=batch_size, eval_every=None, channels_last=channels_last)
    return train(model, small, config, progress=False).images_per_sec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--channels-last", choices=("no", "yes", "both"), default="no")
    parser.add_argument("--synthetic", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    splits = synthetic() if args.synthetic else load_data("fashion-mnist")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, train images {len(splits.train)}")
    for bs in args.batch_sizes:
        print(f"data only     bs={bs:<4} augment   {data_only(splits, bs):>10,.0f} img/s")
        print(f"data only     bs={bs:<4} no augment {data_only(splits, bs, augment=False):>9,.0f} img/s")
    layouts = {"no": [False], "yes": [True], "both": [False, True]}[args.channels_last]
    for name in args.models:
        for bs in args.batch_sizes:
            for cl in layouts:
                ips = model_training(splits, name, bs, args.steps, cl)
                print(f"train {name:<9} bs={bs:<4} {'channels_last' if cl else 'contiguous':<13} {ips:>8,.0f} img/s",
                      flush=True)


if __name__ == "__main__":
    main()
