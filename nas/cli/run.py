"""``nas run``: the whole pipeline for one experiment file."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from nas.cli import args as A
from nas.cli.device import measuring_device, split_target


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="search -> train -> NetAdapt -> export -> report (rerun to resume)")
    p.add_argument("experiment", metavar="EXPERIMENT.yaml")
    p.add_argument("--out", type=A.output_dir, metavar="DIR", help="output folder (default: the experiment's out)")
    p.add_argument("--device", metavar="ID|URL", help="target device: 'this' machine, a device id whose table is in "
                                                      "the experiment's table folder, or the URL of a device's measurement "
                                                      "server (its table is used or built there, missing widths and the "
                                                      "final networks are measured there) (default: the experiment's "
                                                      "latency.device)")
    p.add_argument("--token-file", metavar="FILE", help="with --device URL: the server's token")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from nas.cli import print_json
    from nas.experiment import load_experiment
    from nas.run import REPORT_COLUMNS, markdown_table, run_experiment

    exp = load_experiment(args.experiment)
    if args.out:
        exp = dataclasses.replace(exp, out=Path(args.out))
    url, device = split_target(args.device)
    if device:
        exp = exp.replace(latency={"device": device})
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    with measuring_device(url, args.token_file):
        result = run_experiment(exp, progress=not args.no_progress, log=log)
    if args.json:
        print_json(result.to_json())
        return 0
    print(markdown_table(result.rows, REPORT_COLUMNS))
    print(f"\nreport: {result.report}")
    return 0
