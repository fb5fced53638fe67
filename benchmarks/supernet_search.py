"""The supernet search against the proxy search at equal total wall time, over seeds (issue 20).

    PYTHONPATH=. python3 benchmarks/supernet_search.py experiments/fashion_mnist.yaml --out runs/bench_supernet_search \\
        --seeds 0 1 2 --supernet-minutes 60 --sampling sandwich --metric likelihood --candidates 2000 --epochs 10 \\
        --target 0.7

Per seed s (the searches' seed and the supernet's training seed):

1. supernet arm: a supernet trained for ``--supernet-minutes`` (``--sampling``) into OUT/s<s>/supernet, then a
   search of ``--candidates`` trials scored by it (``--metric``: top-1 accuracy or likelihood). Its time is the
   supernet's training plus the search's.
2. proxy arm: the experiment's proxy search, same strategy and seed, for the same total time.
3. each arm's best network (by reward) trained from scratch with the experiment's full-training recipe run
   for ``--epochs``, and its test accuracy.

The space's baseline is trained once with the same recipe. Then every final network and the baseline are
timed end to end, interleaved in one run (the table's protocol, this machine). ``--target R`` sets the reward's
latency target to R times the baseline's predicted latency (default: the experiment's target).

Prints every (seed, arm) row, the mean and std of test accuracy and measured latency per arm, the baseline,
and the two comparisons the issue asks for: the supernet search at least as accurate as the proxy search,
and >= 1 pt above the baseline at <= 0.7x its measured latency. Rows in OUT/results.csv; each search's
trials, Pareto plot (the whole explored front) and summary in its folder.

Resumable: OUT/state.json records the settings, every finished piece and the seconds each search has spent
(more seeds can be added later; other settings on the same OUT are refused). A search's
time is booked every ``--book-minutes`` (a crash loses at most that much of the record; the trials are in
its Optuna study); the supernet and the final trainings continue from their checkpoints.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from nas.errors import NasError  # noqa: E402
from nas.io import parse_json, write_text_atomic  # noqa: E402

ARMS = ("supernet", "proxy")
MANY_TRIALS = 10**6  # a search bounded by its time, not its trials
SETTINGS = ("supernet_minutes", "sampling", "metric", "candidates", "epochs", "target", "strategy", "options",
            "subset")  # of one --out


class State:
    """OUT/state.json: finished pieces (supernet seconds, best specs, trainings) and searches' booked seconds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict = {}
        if path.exists():
            data = parse_json(path.read_text(), NasError, str(path))
            if not isinstance(data, dict):
                raise NasError(f"{path} is not a JSON object (not a state this benchmark wrote)")
            self.data = data

    def get(self, key: str, default=None):
        return self.data.get(key, default)

    def put(self, key: str, value) -> None:
        self.data[key] = value
        write_text_atomic(self.path, json.dumps(self.data, indent=1) + "\n")


def timed_search(exp, state: State, key: str, *, seconds: float | None = None, trials: int | None = None,
                 book_minutes: float = 5.0):
    """Run (or resume) ``exp``'s search until it has spent ``seconds`` or finished ``trials`` trials, booking its
    wall time in ``state[key]`` every ``book_minutes``; returns (best spec string, seconds spent, trials,
    different networks among them)."""
    from nas.search import run_search
    from nas.search.loop import FINISHED  # what the search loop counts towards its trials

    while True:
        spent = state.get(f"{key}_seconds", 0.0)
        left = None if seconds is None else seconds - spent
        chunk = book_minutes if left is None else min(book_minutes, left / 60)
        start = time.perf_counter()
        result = run_search(exp, n_trials=trials or MANY_TRIALS, timeout_min=max(chunk, 1e-3), progress=False,
                            measure_best=False)
        state.put(f"{key}_seconds", spent + time.perf_counter() - start)
        n = len(result.study.get_trials(deepcopy=False, states=FINISHED))
        if (trials is not None and n >= trials) or (left is not None and left <= chunk * 60):
            if result.best is None:
                raise NasError(f"the {key} search finished no trial")
            return result.best.spec, state.get(f"{key}_seconds"), n, result.distinct


def train_supernet_for(exp, splits, args, seed: int, folder: Path) -> float:
    """The arm's supernet (trained, or continued, here); its training seconds."""
    from nas.supernet.train import settings_for, train_supernet

    settings = settings_for(exp, minutes=args.supernet_minutes, sampling=args.sampling)
    settings = dataclasses.replace(settings, train=dataclasses.replace(settings.train, seed=seed))
    return train_supernet(exp.load_space(), splits, settings, folder, progress=True).seconds


def train_final(exp, splits, spec: str, folder: Path, state: State, key: str) -> dict:
    """``spec`` trained with the experiment's full recipe into ``folder`` (once; resumes from its checkpoint)."""
    from nas.run import train_spec
    from nas.spec import ArchSpec

    if state.get(key) is None:
        state.put(key, train_spec(exp, ArchSpec.from_string(spec), folder, progress=True, splits=splits))
    return state.get(key)


def run_seed(exp, splits, args, seed: int, state: State) -> None:
    """Both arms of one seed (each piece skipped when ``state`` has it)."""
    folder = args.out / f"s{seed}"
    searched = exp.replace(search={"seed": seed, "timeout_min": None})
    if state.get(f"s{seed}_supernet_train_seconds") is None:
        state.put(f"s{seed}_supernet_train_seconds", train_supernet_for(exp, splits, args, seed, folder / "supernet"))
    budget = state.get(f"s{seed}_supernet_train_seconds")
    if state.get(f"s{seed}_supernet_best") is None:
        scorer = {"path": str(folder / "supernet"), "metric": args.metric or exp.supernet.metric}
        arm = searched.replace(out=folder / "supernet_search", search={"evaluator": "supernet"}, supernet=scorer)
        best, seconds, n, distinct = timed_search(arm, state, f"s{seed}_supernet_search", trials=args.candidates,
                                                  book_minutes=args.book_minutes)
        state.put(f"s{seed}_supernet_best", {"spec": best, "search_seconds": seconds, "candidates": n,
                                             "distinct": distinct})
    total = budget + state.get(f"s{seed}_supernet_best")["search_seconds"]
    if state.get(f"s{seed}_proxy_best") is None:
        arm = searched.replace(out=folder / "proxy_search", search={"evaluator": "proxy"})
        best, seconds, n, distinct = timed_search(arm, state, f"s{seed}_proxy_search", seconds=total,
                                                  book_minutes=args.book_minutes)
        state.put(f"s{seed}_proxy_best", {"spec": best, "search_seconds": seconds, "candidates": n,
                                          "distinct": distinct})
    for name in ARMS:
        train_final(exp, splits, state.get(f"s{seed}_{name}_best")["spec"], folder / f"{name}_final", state,
                    f"s{seed}_{name}_final")


def rows_for(exp, args, state: State) -> list[dict]:
    """One row per (seed, arm) and the baseline's, with latencies measured interleaved in one run."""
    from nas.latency import load_predictor
    from nas.search.results import remeasure
    from nas.spec import ArchSpec

    specs, rows = {}, []
    for seed in args.seeds:
        for name in ARMS:
            best, final = state.get(f"s{seed}_{name}_best"), state.get(f"s{seed}_{name}_final")
            time_spent = best["search_seconds"] + (state.get(f"s{seed}_supernet_train_seconds") if name == "supernet"
                                                   else 0.0)
            rows.append({"arm": name, "seed": seed, "minutes": time_spent / 60, "candidates": best["candidates"],
                         "distinct": best.get("distinct"), "test_acc": final["test_acc"], "spec": best["spec"]})
            specs[f"s{seed} {name}"] = ArchSpec.from_string(best["spec"])
    baseline = state.get("baseline_final")
    specs["baseline"] = ArchSpec.from_string(baseline["spec"])
    rows.append({"arm": "baseline", "seed": None, "minutes": None, "candidates": None, "distinct": None,
                 "test_acc": baseline["test_acc"], "spec": baseline["spec"]})
    measured = remeasure(specs, exp.latency.table, exp.latency.threads)
    predictor = load_predictor(exp.latency.table)
    for row, name in zip(rows, specs):
        row["predicted_ms"] = predictor.predict(specs[name])
        row["measured_ms"] = measured[name]
    return rows


def spread(values: list[float]) -> float:
    """The standard deviation over seeds (NaN for one seed)."""
    return statistics.stdev(values) if len(values) > 1 else float("nan")


def summary_lines(rows: list[dict]) -> list[str]:
    """Mean and std per arm, and the issue's two comparisons."""
    base = next(r for r in rows if r["arm"] == "baseline")
    lines, means = [], {}
    for name in ARMS:
        mine = [r for r in rows if r["arm"] == name]
        acc = [100 * r["test_acc"] for r in mine]
        ms = [r["measured_ms"] for r in mine]
        means[name] = (statistics.mean(acc), statistics.mean(ms))
        lines.append(f"{name + ' search':<16} test {means[name][0]:.2f} +- {spread(acc):.2f} %, measured "
                     f"{means[name][1]:.3f} +- {spread(ms):.3f} ms, {statistics.mean(r['minutes'] for r in mine):.1f} "
                     f"min, {statistics.mean(r['candidates'] for r in mine):,.0f} candidates, "
                     f"{statistics.mean(r['distinct'] or 0 for r in mine):,.0f} of them different "
                     f"(mean over {len(mine)} seeds)")
    base_acc, base_ms = 100 * base["test_acc"], base["measured_ms"]
    lines.append(f"{'baseline':<16} test {base_acc:.2f} %, measured {base_ms:.3f} ms")
    gap = means["supernet"][0] - means["proxy"][0]
    lines.append(f"supernet search vs proxy search: {gap:+.2f} pt "
                 f"({'at least as accurate' if gap >= 0 else 'less accurate'})")
    above, ratio = means["supernet"][0] - base_acc, means["supernet"][1] / base_ms
    lines.append(f"supernet search vs baseline: {above:+.2f} pt at {ratio:.2f}x its measured latency "
                 f"({'met' if above >= 1 and ratio <= 0.7 else 'not met'}: >= 1 pt at <= 0.7x)")
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    from nas.config import SUPERNET_METRICS, SUPERNET_SAMPLINGS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("experiment")
    p.add_argument("--out", type=Path, required=True, help="folder of the state, the searches and the trainings")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--supernet-minutes", type=float, default=60.0, help="each seed's supernet training (default 60, "
                   "the issue's budget)")
    p.add_argument("--sampling", choices=SUPERNET_SAMPLINGS, default="sandwich",
                   help="the supernet's training rule (default sandwich, which ranks better)")
    p.add_argument("--metric", choices=SUPERNET_METRICS, help="the supernet arm's score of a candidate "
                   "(default: the experiment's supernet.metric)")
    p.add_argument("--candidates", type=int, default=2000, help="trials of the supernet search (default 2000)")
    p.add_argument("--epochs", type=float, help="epochs of the final trainings (default: the experiment's recipe)")
    p.add_argument("--target", type=float, help="latency target as a multiple of the baseline's predicted latency")
    p.add_argument("--strategy", help="search strategy of both arms (default: the experiment's)")
    p.add_argument("--options", help="the strategy's settings for both arms, a JSON object, e.g. "
                   "'{\"population\": 50, \"sample\": 10}' for evolution (default: the experiment's, or the "
                   "strategy's defaults with --strategy)")
    p.add_argument("--subset", type=int, help="train the supernets and the final networks on this many images "
                   "(smoke runs; default: the whole training split)")
    p.add_argument("--book-minutes", type=float, default=5.0, help="how often a search's time is saved (default 5)")
    args = p.parse_args(argv)
    for name in ("supernet_minutes", "candidates", "book_minutes", "epochs", "target", "subset"):
        value = getattr(args, name)
        if value is not None and not 0 < value < 1e7:
            p.error(f"--{name.replace('_', '-')} must be a number > 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except NasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from nas.data import load_data
    from nas.experiment import load_experiment, with_resolved_table
    from nas.latency import load_predictor
    from nas.latency.catalog import measures_here
    from nas.search.study import check_strategy

    exp = with_resolved_table(load_experiment(args.experiment))
    if exp.latency.table is None or not measures_here(exp.latency.table):
        raise NasError(f"the benchmark predicts with this machine's table and measures the final networks here; "
                       f"latency.table is {exp.latency.table} (set latency.device: this)")
    if args.epochs:
        exp = exp.replace(train={"epochs": args.epochs})
    if args.strategy and args.strategy != exp.search.strategy:  # the experiment's options are its own strategy's
        exp = exp.replace(search={"strategy": args.strategy, "options": {}})
    if args.options:
        options = parse_json(args.options, NasError, "--options")
        if not isinstance(options, dict):
            raise NasError("--options is not a JSON object of the strategy's settings")
        exp = exp.replace(search={"options": options})
    check_strategy(exp)  # before any training
    if args.target:
        target = args.target * load_predictor(exp.latency.table).predict(exp.load_space().baseline)
        exp = exp.replace(reward={"target_ms": target})
    args.out.mkdir(parents=True, exist_ok=True)
    state = State(args.out / "state.json")
    settings = {name: getattr(args, name) for name in SETTINGS} | {"experiment": exp.name}
    if state.get("settings", settings) != settings:
        raise NasError(f"{args.out} holds a run with other settings ({state.get('settings')}); use another --out")
    state.put("settings", settings)
    d = exp.data
    splits = load_data(d.name, d.data_dir, d.val_fraction, d.seed, args.subset)  # the supernet and final trainings
    for seed in args.seeds:
        run_seed(exp, splits, args, seed, state)
    train_final(exp, splits, exp.load_space().baseline.to_string(), args.out / "baseline_final", state, "baseline_final")
    rows = rows_for(exp, args, state)
    frame = pd.DataFrame(rows).astype({"seed": "Int64", "candidates": "Int64", "distinct": "Int64"})
    write_text_atomic(args.out / "results.csv", frame.to_csv(index=False))
    print(frame.drop(columns="spec").to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("\n".join(summary_lines(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
