"""NetAdapt vs. a uniform width multiplier at the same measured latency, same total training budget.

    python benchmarks/netadapt_vs_width.py --table latency_tables/fashion_mnist \\
        [--base-epochs 10] [--target 0.8] [--short-steps 200] [--long-epochs 2] [--out experiments/bench_netadapt]
    python benchmarks/netadapt_vs_width.py --from-run runs/fashion_mnist --val-fraction 0.05 --optimizer adamw \\
        --out runs/fashion_mnist_vs_width

1. Train the Fashion-MNIST space's baseline (``--base-epochs``), or take ``--checkpoint``.
2. NetAdapt it to ``--target`` of its predicted latency (resumable: rerun the same command).
   ``--from-run runs/fashion_mnist`` takes both from a finished ``nas run`` instead (its ``train``
   and ``netadapt`` stages, its data split): the run's NetAdapt folder is copied to ``--out`` and
   its iterations are reused; with ``--long-epochs``/``--long-lr`` only the final fine-tune of its
   last accepted network is done again, here.
3. Scale the baseline's stem and block widths uniformly (``make_divisible(c * m, 8)``; the last
   stage and head stay, as NetAdapt leaves them too), pick the multiplier whose *measured* latency is
   closest to the NetAdapt network's, and train it from scratch for as many optimizer steps as the
   baseline's training plus all of NetAdapt's fine-tuning.
4. Print measured latency (the table's runtime and threads, end to end) and test accuracy of all
   three. Every finished stage is saved in ``--out`` and reused on a rerun.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nas.data import load_data
from nas.io import write_text_atomic
from nas.netadapt import NetAdaptConfig, TableLatency, netadapt
from nas.spec import ArchSpec, count_madds, count_params, load_space
from nas.spec.transform import scale_widths
from nas.train import TrainConfig, load_checkpoint, load_model, train_network

ROOT = Path(__file__).resolve().parents[1]


def baseline_network(args, splits) -> tuple[ArchSpec, Path, dict]:
    if args.checkpoint:
        ckpt = load_checkpoint(args.checkpoint)
        return ckpt.spec, Path(args.checkpoint), ckpt.metrics
    out = args.out / "baseline"
    if not (out / "checkpoint.pt").is_file():
        spec = load_space(ROOT / "search_spaces" / "fashion_mnist.yaml").baseline
        config = TrainConfig(epochs=args.base_epochs, batch_size=args.batch_size, seed=args.seed,
                             threads=args.threads, optimizer=args.optimizer)
        train_network(spec, splits, config=config, out=out, data_name="fashion-mnist")
    ckpt = load_checkpoint(out / "checkpoint.pt")
    return ckpt.spec, out / "checkpoint.pt", ckpt.metrics


@dataclass(frozen=True)
class Adapted:
    """What the comparison needs of a NetAdapt result."""

    spec: ArchSpec
    test_acc: float
    train_steps: int
    iterations: int


def run_netadapt(args, spec: ArchSpec, ckpt: Path, splits, latency: TableLatency, base_metrics: dict) -> Adapted:
    """NetAdapt of the baseline in ``--out/netadapt`` (resumed there); with ``--from-run`` the run's
    iterations are copied in first and its settings kept, except the final fine-tune's if given."""
    out = args.out / "netadapt"
    final = {k: v for k, v in (("long_epochs", args.long_epochs), ("long_lr", args.long_lr)) if v}
    if args.from_run:
        if not (out / "state.json").is_file():
            shutil.copytree(args.from_run / "netadapt", out, dirs_exist_ok=True)
        stored = json.loads((out / "state.json").read_text())["identity"]["config"]
        config = NetAdaptConfig(**{**stored, **final})
    else:
        config = NetAdaptConfig(target=args.target, short_steps=args.short_steps, delta_fraction=args.delta,
                                batch_size=args.batch_size, seed=args.seed, **{"long_epochs": 2.0, **final})
    config = config.resolved_for(base_metrics)
    _, model = load_model(ckpt)
    result = netadapt(spec, model, splits, latency, config, out, measure=latency.measure, threads=args.threads)
    return Adapted(result.spec, result.final_test_acc, result.train_steps, result.iterations)


def match_uniform(spec: ArchSpec, latency: TableLatency, measured_target: float) -> tuple[float, ArchSpec, float]:
    """The multiplier whose measured latency is closest to ``measured_target`` (grid predicted with
    the table first, then the few closest candidates measured end to end)."""
    grid = [round(m, 3) for m in np.arange(0.3, 1.0001, 0.025)]
    specs = {m: scale_widths(spec, m) for m in grid}
    latency.prepare(list(specs.values()))
    ratio = latency.measure(spec) / latency.predict(spec)  # predicted -> measured scale of this machine now
    predicted = {m: latency.predict(s) * ratio for m, s in specs.items()}
    closest = sorted(grid, key=lambda m: abs(predicted[m] - measured_target))[:4]
    measured = {m: latency.measure(specs[m]) for m in closest}
    best = min(measured, key=lambda m: abs(measured[m] - measured_target))
    return best, specs[best], measured[best]


def matched_uniform(path: Path, spec: ArchSpec, adapted: ArchSpec, latency: TableLatency) -> tuple[float, ArchSpec]:
    """:func:`match_uniform`, done once per NetAdapt result: the choice is kept in ``path`` so that a
    rerun (after a crash, or to measure again on a quieter machine) trains no other network."""
    if path.is_file():
        kept = json.loads(path.read_text())
        if kept["adapted"] == adapted.hash:
            return kept["multiplier"], scale_widths(spec, kept["multiplier"])
    mult, uniform, measured = match_uniform(spec, latency, latency.measure(adapted))
    write_text_atomic(path, json.dumps({"adapted": adapted.hash, "multiplier": mult, "measured_ms": measured}) + "\n")
    return mult, uniform


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", default=str(ROOT / "latency_tables" / "fashion_mnist"))
    p.add_argument("--checkpoint", help="start from this trained network instead of training the baseline")
    p.add_argument("--from-run", type=Path, metavar="RUN_DIR",
                   help="a finished `nas run` output folder: its trained network and NetAdapt result")
    p.add_argument("--val-fraction", type=float, default=0.1, help="validation share of the training split")
    p.add_argument("--base-epochs", type=float, default=10)
    p.add_argument("--target", default="0.8")
    p.add_argument("--short-steps", type=int, default=200)
    p.add_argument("--long-epochs", type=float, help="final fine-tune (default 2; with --from-run: the run's)")
    p.add_argument("--long-lr", type=float, help="its learning rate (default: NetAdaptConfig's; with --from-run: the run's)")
    p.add_argument("--delta", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", default="sgd", help="sgd or adamw (experiments/fashion_mnist.yaml trains with sgd)")
    p.add_argument("--subset", type=int, help="train on this many images only (quick checks)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch threads for training")
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "bench_netadapt")
    args = p.parse_args()

    if args.from_run:
        args.checkpoint = str(args.from_run / "train" / "checkpoint.pt")
    splits = load_data("fashion-mnist", subset=args.subset, val_fraction=args.val_fraction)
    spec, ckpt, base_metrics = baseline_network(args, splits)
    from nas.latency.catalog import resolve_table
    from nas.netadapt.loop import OVERLAY

    latency = TableLatency(resolve_table(args.table), overlay=args.out / OVERLAY)  # this machine's table
    adapted = run_netadapt(args, spec, Path(ckpt), splits, latency, base_metrics)

    base_steps = int(base_metrics.get("steps") or 0)
    total_steps = base_steps + adapted.train_steps
    mult, uniform = matched_uniform(args.out / "uniform_match.json", spec, adapted.spec, latency)
    uniform_out = args.out / f"uniform_x{mult:g}_{total_steps}steps"  # another budget: another network
    if not (uniform_out / "metrics.json").is_file():
        train_network(uniform, splits, config=TrainConfig(steps=total_steps, batch_size=args.batch_size,
                                                          seed=args.seed, threads=args.threads,
                                                          optimizer=args.optimizer),
                      out=uniform_out, data_name="fashion-mnist")
    uniform_metrics = json.loads((uniform_out / "metrics.json").read_text())

    from nas.train import evaluate

    _, base_model = load_model(ckpt)
    base_test = base_metrics.get("test_acc")
    if base_test is None:
        base_test = evaluate(base_model, splits.test)
    rows = [
        ("baseline", spec, base_test, base_steps),
        (f"NetAdapt {args.target}", adapted.spec, adapted.test_acc, total_steps),
        (f"uniform x{mult:g}", uniform, uniform_metrics["test_acc"], total_steps),
    ]
    measured = {name: latency.measure(s) for name, s, _, _ in rows}  # measured together, same conditions
    table = pd.DataFrame([{
        "network": name, "measured_ms": measured[name], "predicted_ms": latency.predict(s),
        "speedup": measured["baseline"] / measured[name], "test_acc": acc, "params": count_params(s),
        "madds": count_madds(s), "train_steps": steps} for name, s, acc, steps in rows])
    table.to_csv(args.out / "netadapt_vs_width.csv", index=False)
    with pd.option_context("display.width", 160, "display.float_format", "{:.4f}".format):
        print(table.to_string(index=False))
    print(f"NetAdapt: {adapted.iterations} iterations; spec {adapted.spec.to_string()}")
    print(f"uniform:  {uniform.to_string()}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
