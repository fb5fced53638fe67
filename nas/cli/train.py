"""``nas train``: train one network on a dataset, test it and optionally save it."""

from __future__ import annotations

import argparse

from nas.cli import args as A
from nas.config import COMPILE_CHOICES, PRECISIONS
from nas.spec.arch import MAX_RESOLUTION


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a network and report val/test accuracy",
                       description="NAME is mobilenetv3-large|mobilenetv3-small (adapted to the dataset's "
                                   "resolution, channels and classes), a spec JSON file or a spec string.")
    p.add_argument("network", metavar="NAME|SPEC.json|SPEC_STRING")
    p.add_argument("--data", default="fashion-mnist", help="fashion-mnist (default), cifar10 or folder")
    p.add_argument("--data-dir", help="dataset folder (default for fashion-mnist: the Debian package's)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--epochs", type=A.epochs, help="training budget in epochs (may be fractional)")
    budget.add_argument("--steps", type=A.steps, help="training budget in optimizer steps")
    p.add_argument("--batch-size", type=A.batch_size, default=128)
    p.add_argument("--lr", type=A.learning_rate, help="peak learning rate (default: 0.1 x batch/128 for sgd, 0.002 for adamw)")
    p.add_argument("--weight-decay", type=A.number(0, 1))
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    p.add_argument("--warmup-steps", type=A.integer(0, A.MAX_STEPS))
    p.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    p.add_argument("--no-flip", action="store_true", help="no horizontal flip")
    p.add_argument("--seed", type=A.seed, default=0, help="training seed (the val split always uses seed 0)")
    p.add_argument("--subset", type=A.images, help="train on this many images only (seeded)")
    p.add_argument("--val-fraction", type=A.open_fraction, default=0.1)
    p.add_argument("--image-size", type=A.integer(1, MAX_RESOLUTION), help="folder data: resize images to this size")
    p.add_argument("--width-mult", type=A.width_mult, help="named networks only")
    p.add_argument("--threads", type=A.threads, help="torch intra-op threads")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="bf16: bfloat16 autocast (depthwise convolutions in fp32); auto (default): bf16 only on "
                        "CPUs where it measured faster at equal accuracy, fp32 elsewhere (see nas.train.cpu)")
    p.add_argument("--compile", choices=COMPILE_CHOICES, default="auto",
                   help="torch.compile the training step: tens of seconds at the start for faster steps; auto "
                        "(default): trainings of >= 2,000 steps where a C++ compiler is found (see nas.train.compiled)")
    p.add_argument("--out", type=A.output_dir, help="write checkpoint.pt, spec.json and metrics.json here; the "
                                                    "training state is saved there each epoch and a rerun of the "
                                                    "same command resumes from it")
    p.add_argument("--restart", action="store_true", help="ignore a saved training state in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar and no per-epoch lines on stderr")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_train)


def resolve_spec(network: str, data, width_mult: float | None):
    """Named networks are adapted to ``data``; files and spec strings (``data`` None) are taken as they are."""
    from nas.load import load_spec_arg
    from nas.spec import NAMED_NETWORKS

    if network not in NAMED_NETWORKS:
        return load_spec_arg(network, width_mult=width_mult)
    return load_spec_arg(network, width_mult=width_mult, num_classes=data.num_classes,
                         resolution=data.resolution[0], in_channels=data.in_channels)


def cmd_train(args: argparse.Namespace) -> int:
    from nas.cli import print_json
    from nas.data import load_data
    from nas.train import TrainConfig, train_network

    config = TrainConfig(epochs=args.epochs, steps=args.steps, batch_size=args.batch_size, optimizer=args.optimizer,
                         lr=args.lr, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
                         augment=not args.no_augment, hflip=not args.no_flip, seed=args.seed, threads=args.threads,
                         precision=args.precision, compile=args.compile)
    from nas.spec import NAMED_NETWORKS

    spec = None if args.network in NAMED_NETWORKS else resolve_spec(args.network, None, args.width_mult)
    splits = load_data(args.data, args.data_dir, args.val_fraction, 0, args.subset, args.image_size)
    spec = spec or resolve_spec(args.network, splits.train, args.width_mult)
    report = train_network(spec, splits, config=config, out=args.out, progress=not args.no_progress,
                           data_name=args.data, resume=not args.restart)
    m = report.metrics
    summary = {key: m[key] for key in ("val_acc", "test_acc", "seconds", "seconds_per_epoch", "images_per_sec",
                                       "train_loss", "steps", "epochs", "params")}
    summary["precision"], summary["compiled"] = m["config"]["precision"], m["compiled"]
    summary |= {"spec_hash": m["spec_hash"], "data": args.data, "out": m.get("out")}
    if args.json:
        print_json(summary)
        return 0
    print(format_summary(summary))
    return 0


def format_summary(summary: dict) -> str:
    rows = []
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.4f}" if key.endswith("acc") or key == "train_loss" else f"{value:,.2f}"
        elif isinstance(value, int):
            value = f"{value:,}"
        rows.append((key, "-" if value is None else str(value)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
