"""``nas supernet train EXPERIMENT.yaml``: train a weight-sharing supernet over the experiment's space."""

from __future__ import annotations

import argparse

from nas.cli import args as A
from nas.config import SUPERNET_KERNELS, SUPERNET_SAMPLINGS


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("supernet", help="one-shot search: train a weight-sharing supernet (resumable)")
    commands = group.add_subparsers(dest="supernet_command", required=True, metavar="COMMAND")
    p = commands.add_parser("train", help="train the supernet of an experiment's space",
                            description="Train the supernet of the experiment's space with its train recipe on "
                                        "its whole training split (as the full training); DIR/supernet.pt is saved "
                                        "each epoch and a rerun of the same command resumes.")
    p.add_argument("experiment", help="experiment YAML file (see experiments/)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=A.epochs, help="budget in epochs (default: the experiment's train.epochs)")
    budget.add_argument("--minutes", type=A.number(0, 10**7, above=True), help="budget in minutes of training")
    p.add_argument("--out", type=A.output_dir, required=True, metavar="DIR", help="folder of supernet.pt")
    p.add_argument("--sampling", choices=SUPERNET_SAMPLINGS, default="uniform",
                   help="uniform: one sampled member per step (default); sandwich: largest + smallest + 2 sampled, "
                        "the others distilled from the largest")
    p.add_argument("--kernel", choices=SUPERNET_KERNELS, default="crop",
                   help="crop: a smaller kernel is the centre of the largest (default); transform: OFA's learned "
                        "kernel maps")
    p.add_argument("--reorder", action="store_true",
                   help="sort each block's hidden channels by importance at every epoch's end (OFA)")
    p.add_argument("--subset", type=A.images,
                   help="train on this many images only (seeded; default: the whole training split, as the full "
                        "training does: the experiment's data.subset is the search proxies')")
    p.add_argument("--no-progress", action="store_true", help="no progress bar and no per-epoch lines on stderr")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from nas.cli import print_json
    from nas.data import load_data
    from nas.experiment import load_experiment
    from nas.supernet.train import settings_for, train_supernet

    experiment = load_experiment(args.experiment)
    settings = settings_for(experiment, epochs=args.epochs, minutes=args.minutes, sampling=args.sampling,
                            kernel=args.kernel, reorder=args.reorder)
    d = experiment.data
    splits = load_data(d.name, d.data_dir, d.val_fraction, d.seed, args.subset)
    result = train_supernet(experiment.load_space(), splits, settings, args.out, progress=not args.no_progress)
    summary = {key: value for key, value in result.to_json().items() if key != "history"}
    if args.json:
        print_json(summary)
        return 0
    print(f"supernet: {result.steps:,} steps ({result.epochs:.2f} epochs) in {result.seconds:,.1f} s, largest member "
          f"val_acc {result.val_acc_largest:.4f}; saved in {result.out}")
    return 0
