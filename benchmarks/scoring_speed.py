"""Seconds per candidate scored by a supernet on this CPU (issue 20: at most 2 s on 2 cores), per precision
and evaluation batch size, side by side.

    PYTHONPATH=. python3 benchmarks/scoring_speed.py experiments/fashion_mnist.yaml [--supernet DIR]
        [--candidates 12] [--precisions fp32 bf16] [--eval-batches 512 auto] [--threads 2]

Scoring is :func:`nas.supernet.score.score_candidate` with the experiment's ``supernet`` section
(BatchNorm recalibrated on ``bn_batches`` batches of ``batch_size``, then the val split). ``--supernet``:
a trained supernet; without it, one freshly initialised (the time does not depend on the weights'
values). Each candidate (sampled with seed 0) is scored twice per arm, the arms interleaved; the
medians and means are printed, and each arm's ratio to the first. ``auto`` is the evaluation batch the
package picks for the precision (:data:`nas.train.cpu.EVAL_BATCH`).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment")
    p.add_argument("--supernet", help="folder of a trained supernet (default: an untrained one)")
    p.add_argument("--candidates", type=int, default=12)
    p.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    p.add_argument("--eval-batches", nargs="+", default=["512", "auto"],
                   help="evaluation batch sizes to compare (auto: the package's pick)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import nas.train.cpu as cpu
    from nas.data import load_data
    from nas.experiment import load_experiment
    from nas.supernet.model import Supernet
    from nas.supernet.score import score_candidate
    from nas.supernet.train import load_supernet
    from nas.threads import torch_threads

    experiment = load_experiment(args.experiment, check_files=False)
    d, score = experiment.data, experiment.supernet_config
    splits = load_data(d.name, d.data_dir, d.val_fraction, d.seed, None)
    space = experiment.load_space()
    net = load_supernet(args.supernet, space) if args.supernet else Supernet(space)
    rng = random.Random(0)
    specs = [space.sample(rng) for _ in range(args.candidates)]
    picked = dict(cpu.EVAL_BATCH)
    print(f"CPU: {cpu.cpu_summary()}")
    print(f"{len(specs)} candidates of {space.name}, val {len(splits.val):,} images, BatchNorm recalibrated on "
          f"{score.bn_batches} batches of {score.batch_size}; {'trained' if args.supernet else 'untrained'} "
          f"supernet; {args.threads} threads; each candidate twice per arm, interleaved")
    with torch_threads(args.threads):
        for precision in args.precisions:
            seconds: dict[str, list[float]] = {arm: [] for arm in args.eval_batches}
            for spec in specs:
                for arm in args.eval_batches * 2:
                    cpu.EVAL_BATCH.update(picked if arm == "auto" else dict.fromkeys(picked, int(arm)))
                    start = time.perf_counter()
                    score_candidate(net, spec, splits, score.bn_batches, score.batch_size, score.seed,
                                    precision=precision)
                    seconds[arm].append(time.perf_counter() - start)
            cpu.EVAL_BATCH.update(picked)
            first = statistics.median(seconds[args.eval_batches[0]])
            for arm, values in seconds.items():
                batch = f"auto ({picked[precision]})" if arm == "auto" else arm
                median = statistics.median(values)
                print(f"{precision}  eval batch {batch:<10} {median:6.2f} s per candidate (median; mean "
                      f"{statistics.mean(values):.2f}, range {min(values):.2f}-{max(values):.2f})  x{median / first:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
