"""``nas search EXPERIMENT.yaml``: run or resume an experiment's architecture search."""

from __future__ import annotations

from nas.cli import args as A
from nas.cli.device import measuring_device, split_target
from nas.cli import print_json


def register(subparsers) -> None:
    p = subparsers.add_parser("search", help="platform-aware architecture search (resumable)",
                              description="Run the search of an experiment file; rerunning resumes it.")
    p.add_argument("experiment", help="experiment YAML file (see experiments/)")
    p.add_argument("--strategy", help="rl, tpe, nsga2, random or evolution (default: the experiment's)")
    p.add_argument("--trials", type=A.integer(1, 10**6), help="finished trials the study should reach")
    p.add_argument("--timeout", type=A.number(0, 10**7, above=True), metavar="MIN", help="stop starting new trials after MIN minutes")
    p.add_argument("--storage", type=A.url, metavar="URL",
                   help="Optuna storage: sqlite:///PATH (default: SQLite in the output folder), "
                        "postgresql://USER:PASSWORD@HOST:PORT/DB (several machines), journal:PATH (one machine, no server)")
    p.add_argument("--study", metavar="NAME", help="study name (default: EXPERIMENT-STRATEGY); processes with the "
                                                   "same storage and study share the search")
    p.add_argument("--workers", type=A.integer(1, 256), default=1, metavar="N", help="run N local worker processes (default: 1)")
    p.add_argument("--heartbeat", type=A.integer(1, 86400), default=10, metavar="SEC",
                   help="workers: seconds between heartbeats of a running trial (default: 10)")
    p.add_argument("--grace", type=A.integer(1, 10**6), default=60, metavar="SEC",
                   help="workers: a trial silent this long (killed worker) is failed and re-queued (default: 60)")
    p.add_argument("--max-retry", type=A.integer(0, 1000), default=3, metavar="N", help="workers: re-runs of a failed trial (default: 3)")
    p.add_argument("--evaluator", metavar="NAME",
                   help="proxy (train), supernet (score with the experiment's supernet) or synthetic[:SECONDS] (fake "
                        "results, to try a storage/worker setup) (default: the experiment's search.evaluator, proxy)")
    p.add_argument("--out", type=A.output_dir, help="output folder (default: the experiment's)")
    p.add_argument("--device", metavar="ID|URL", help="target device: 'this' machine, a device id whose table is in "
                                                      "the experiment's table folder, or the URL of a device's measurement "
                                                      "server (one process: no --workers) (default: latency.device)")
    p.add_argument("--token-file", metavar="FILE", help="with --device URL: the server's token")
    p.add_argument("--no-measure", action="store_true", help="do not re-measure the best network end to end")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from nas.experiment import load_experiment
    from nas.search.runner import run_search, summary_table
    from nas.search.storage import Heartbeat

    experiment = load_experiment(args.experiment)
    if args.out:
        experiment = experiment.replace(out=Path(args.out))
    if args.evaluator:  # the study's identity follows the evaluator
        experiment = experiment.replace(search={"evaluator": args.evaluator})
    url, device = split_target(args.device)
    if device:
        experiment = experiment.replace(latency={"device": device})
    if url and args.workers and args.workers > 1:
        from nas.errors import NasError

        raise NasError("--device URL measures from this process only; run the search without --workers")
    heartbeat = Heartbeat(args.heartbeat, args.grace, args.max_retry)
    with measuring_device(url, args.token_file):
        result = run_search(experiment, strategy=args.strategy, n_trials=args.trials, timeout_min=args.timeout,
                            storage=args.storage, study_name=args.study, evaluator=args.evaluator,
                            progress=not args.json, measure_best=False if args.no_measure else None,
                            workers=args.workers, heartbeat=heartbeat)
    if args.json:
        print_json(result.to_json())
        return 0
    print(f"study {result.study.study_name}: {result.n_trials} finished trials "
          f"({result.distinct} different networks), "
          f"Pareto front of {len(result.pareto)}, hypervolume {result.hypervolume or 0:.5f}")
    table = summary_table(result)
    if not table.empty:
        print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    if result.best is not None:
        print(f"best spec: {result.best.spec}")
    print(f"results in {result.out} ({', '.join(Path(f).name for f in result.files.values())})")
    if result.storage and "://" in result.storage:
        print(f"browse the study: optuna-dashboard {result.storage}")
    return 0
