"""``nas netadapt``: shrink a trained network's widths to a latency target with a lookup table."""

from __future__ import annotations

import argparse

from nas.cli import args as A
from nas.cli.device import on_device, remote_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("netadapt", help="shrink a trained network's channels to a latency target (NetAdapt)",
                       description="NetAdapt as MobileNetV3 used it: each iteration proposes, per width group, the "
                                   "smallest cut the latency table predicts saves delta, fine-tunes each proposal "
                                   "briefly and keeps the best; then fine-tunes the result long. Rerun the same "
                                   "command to resume an interrupted run.")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint written by nas train --out")
    p.add_argument("--table", required=True,
                   help="latency table folder, or a space's folder of tables (then this machine's is used, built "
                        "first if missing); another device's table predicts for that device")
    p.add_argument("--target", required=True, help="fraction of the starting latency (0.8) or milliseconds (3.5ms)")
    p.add_argument("--short-steps", type=A.steps, default=100, help="fine-tuning steps per proposal (default 100)")
    p.add_argument("--long-epochs", type=A.number(0, A.MAX_EPOCHS), default=1.0, help="final fine-tuning epochs (default 1)")
    p.add_argument("--delta", type=A.open_fraction, default=0.01,
                   help="latency cut per iteration as a fraction of the starting latency (default 0.01)")
    p.add_argument("--delta-decay", type=A.fraction, default=1.0, help="multiply delta by this every iteration (default 1)")
    p.add_argument("--select", choices=("ratio", "accuracy"), default="ratio",
                   help="keep the proposal with the best dAcc/|dLatency| (MobileNetV3, default) or accuracy (NetAdapt)")
    p.add_argument("--batch-size", type=A.batch_size, default=128)
    p.add_argument("--optimizer", choices=("sgd", "adamw"),
                   help="fine-tuning optimizer (default: the one the checkpoint was trained with)")
    p.add_argument("--lr", type=A.learning_rate, help="learning rate of the short fine-tunes (default: 0.01 sgd, 0.0002 adamw)")
    p.add_argument("--long-lr", type=A.learning_rate, help="learning rate of the long fine-tune (default: 0.02 sgd, 0.0004 adamw)")
    p.add_argument("--seed", type=A.seed, default=0)
    p.add_argument("--data", help="dataset (default: the one the checkpoint was trained on)")
    p.add_argument("--data-dir")
    p.add_argument("--subset", type=A.images, help="train on this many images only (seeded)")
    p.add_argument("--threads", type=A.threads, help="torch intra-op threads for training")
    p.add_argument("--no-measure", action="store_true", help="skip the end-to-end latency measurements")
    p.add_argument("--out", type=A.output_dir, help="output folder (default: experiments/netadapt-<start spec hash>)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    remote_options(p, "target that device: its table (from --table's folder, built there if missing); measure the "
                      "missing widths and the start and final networks")
    p.set_defaults(func=cmd_netadapt)


@on_device
def cmd_netadapt(args: argparse.Namespace) -> int:
    from nas.cli import print_json
    from nas.netadapt import NetAdaptConfig, netadapt_checkpoint
    from nas.train import load_checkpoint

    config = NetAdaptConfig(target=args.target, short_steps=args.short_steps, long_epochs=args.long_epochs,
                            delta_fraction=args.delta, delta_decay=args.delta_decay, select=args.select,
                            batch_size=args.batch_size, lr=args.lr, long_lr=args.long_lr, seed=args.seed,
                            optimizer=args.optimizer)
    out = args.out or f"experiments/netadapt-{load_checkpoint(args.checkpoint).spec.hash}"
    result = netadapt_checkpoint(args.checkpoint, args.table, config, out, data=args.data, data_dir=args.data_dir,
                                 subset=args.subset,
                                 measure=not args.no_measure, progress=not args.no_progress, threads=args.threads)
    summary = result.summary()
    if args.json:
        print_json(summary)
        return 0
    print(format_result(result))
    return 0


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g} ms"


def format_result(result) -> str:
    lines = [
        f"start     predicted {_ms(result.start_ms)}, measured {_ms(result.start_measured_ms)}, "
        f"val acc {result.start_acc:.4f}",
        f"target    {_ms(result.target_ms)}",
        f"final     predicted {_ms(result.final_predicted_ms)}, measured {_ms(result.final_measured_ms)}, "
        f"val acc {result.final_acc:.4f}"
        + ("" if result.final_test_acc is None else f", test acc {result.final_test_acc:.4f}"),
        f"iterations {result.iterations}, training steps {result.train_steps:,}",
        f"spec      {result.spec.to_string()}",
        f"out       {result.out} (checkpoint.pt, spec.json, history.csv, trajectory.png)",
    ]
    return "\n".join(lines)
