"""Search strategies against `random` at the same trial budget, over several seeds.

    python benchmarks/search_strategies.py                     # fast: synthetic accuracy, table latency
    python benchmarks/search_strategies.py --evaluator proxy --trials 30 --strategies random tpe rl \
        --cache runs/bench_strategies_cache [--proxy-threads 1]          # real proxy training (long)
    python benchmarks/search_strategies.py --pruner median --strategies random rl   # median pruner on

Prints, per strategy, the mean (and std) over seeds of the best reward found and of the
hypervolume of the (accuracy, latency) front (reference point: accuracy 0, latency 2T), and the
search seconds. The fast evaluator scores accuracy with a saturating function of MAdds (see
``nas.search.evaluate.SyntheticEvaluator``) and latency with the experiment's table, so it
measures how well each strategy trades the two under the reward, not real accuracy.

With ``--evaluator proxy`` every candidate is trained by the experiment's proxy (by default no
pruner, one evaluation at the end). ``--pruner median`` turns Optuna's median pruner on, with the
experiment's ``proxy.eval_every`` intermediate evaluations (the fast evaluator reports 4 steps);
the table then also shows how many trials were pruned and, for ``rl``, how many finished trials
the policy learned from (every one: pruned trials at the accuracy they reached).
``--cache DIR`` keeps each evaluation as ``DIR/<spec hash>.json`` with its intermediate
accuracies: a network that two strategies or seeds both sample is trained once (Optuna's TPE
starts with the same random trials as ``random`` under the same seed), a rerun after a crash
resumes, and two processes started with different ``--seeds`` on one cache share their work. With a
pruner, a cache hit replays the stored accuracies to this study's pruner, so the hit is pruned
exactly where a fresh training would be; a network stored as pruned earlier than this study would
prune it is trained again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from nas.experiment import load_experiment, with_resolved_table  # noqa: E402
from nas.io import write_text_atomic  # noqa: E402
from nas.samplers import MnasRLSampler  # noqa: E402
from nas.samplers.optuna_private import study_system_attrs  # noqa: E402
from nas.search import STRATEGIES  # noqa: E402
from nas.search.evaluate import Evaluation, ProxyEvaluator, SyntheticEvaluator  # noqa: E402
from nas.search.runner import run_search  # noqa: E402


class CachedEvaluator:
    """Wraps an evaluator: one JSON file per spec hash in ``directory`` (JSON, never pickle).

    The cache keeps what is expensive, the proxy training's accuracy; the latency is looked up again
    in the experiment's table on every hit, so a cache filled before a table was rebuilt scores its
    networks with the table as it is now."""

    def __init__(self, inner, directory: Path) -> None:
        self.inner, self.directory = inner, directory
        directory.mkdir(parents=True, exist_ok=True)

    def evaluate(self, spec, report=None) -> Evaluation:
        path = self.directory / f"{spec.hash}.json"
        if path.is_file():
            hit = self._replay(json.loads(path.read_text()), spec, report)
            if hit is not None:
                return hit
        reports: list[list[float]] = []

        def recording(step, epoch, val_acc):
            reports.append([step, epoch, val_acc])
            return bool(report(step, epoch, val_acc)) if report is not None else False

        result = self.inner.evaluate(spec, recording)
        record = {"spec": spec.to_string(), **dataclasses.asdict(result), "reports": reports}
        write_text_atomic(path, json.dumps(record) + "\n")
        return result

    def _replay(self, stored: dict, spec, report) -> Evaluation | None:
        """The stored evaluation, its intermediate accuracies told to ``report`` (pruned where the
        pruner says so); None if it was pruned earlier than this study would prune it."""
        stored.pop("spec", None)
        reports = stored.pop("reports", [])
        latency, predicted, measured = self.inner.latency(spec)
        known = {f.name for f in dataclasses.fields(Evaluation)}  # a cache of an earlier version may hold more
        evaluation = Evaluation(**{k: v for k, v in stored.items() if k in known})
        result = dataclasses.replace(evaluation, latency_ms=latency, latency_predicted_ms=predicted,
                                     latency_measured_ms=measured)
        for i, (step, epoch, val_acc) in enumerate(reports):
            last = i == len(reports) - 1  # a finished training's last report never prunes it
            if report is not None and report(int(step), epoch, val_acc) and (result.pruned or not last):
                return dataclasses.replace(result, val_acc=val_acc, steps=int(step), pruned=True)
        return None if result.pruned else result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="experiments/fashion_mnist.yaml")
    parser.add_argument("--evaluator", choices=["fast", "proxy"], default="fast")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--strategies", nargs="+", default=sorted(STRATEGIES))
    parser.add_argument("--cache", type=Path, help="keep proxy evaluations here (shared, resumable)")
    parser.add_argument("--proxy-threads", type=int, help="torch threads of the proxy training")
    parser.add_argument("--pruner", choices=["none", "median", "hyperband"], default="none",
                        help="Optuna pruner (default none: one evaluation per trial, at the end)")
    parser.add_argument("--device", default="this",
                        help="whose latency table scores the networks: this machine's (default; built on first use) "
                             "or a device id from the experiment's table folder (any device's table predicts)")
    args = parser.parse_args()

    proxy = {"pruner": "none", "eval_every": None} if args.pruner == "none" else {"pruner": args.pruner}
    if args.proxy_threads:
        proxy["threads"] = args.proxy_threads
    exp = with_resolved_table(load_experiment(args.experiment).replace(proxy=proxy, latency={"device": args.device}))
    if args.evaluator == "fast":
        from nas.latency import load_predictor

        predictor = load_predictor(exp.latency.table)
        evaluator = SyntheticEvaluator(predictor=predictor)
        storage = ":memory:"
    else:
        evaluator = ProxyEvaluator(exp)
        if args.cache:
            evaluator = CachedEvaluator(evaluator, args.cache)
        storage = None  # SQLite in a temporary folder per run (resumable only within it)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in args.strategies:
            for seed in args.seeds:
                run_exp = exp.replace(out=Path(tmp) / f"{strategy}-{seed}",
                                      search={"seed": seed, "n_trials": args.trials, "timeout_min": None,
                                              "baseline": False, "options": {}})
                start = time.perf_counter()
                result = run_search(run_exp, strategy=strategy, evaluator=evaluator, storage=storage, progress=False,
                                    measure_best=False)
                trials = result.study.get_trials(deepcopy=False)
                pruned = sum(t.state == TrialState.PRUNED for t in trials)
                learned = float("nan")
                if strategy == "rl":
                    learned = len(study_system_attrs(result.study).get(MnasRLSampler.STATE_KEY, {}).get("seen", []))
                rows.append({"strategy": strategy, "seed": seed, "best_reward": result.best.reward,
                             "hypervolume": result.hypervolume, "pruned": pruned, "rl_learned_from": learned,
                             "seconds": time.perf_counter() - start})
                print(f"  {strategy:9s} seed {seed}: best reward {result.best.reward:.4f}, "
                      f"hypervolume {result.hypervolume:.5f}, {pruned} pruned"
                      + (f", policy learned from {learned} trials" if strategy == "rl" else ""), flush=True)
    df = pd.DataFrame(rows)
    table = df.groupby("strategy").agg(best_reward=("best_reward", "mean"), best_reward_std=("best_reward", "std"),
                                       hypervolume=("hypervolume", "mean"), hypervolume_std=("hypervolume", "std"),
                                       pruned=("pruned", "mean"), rl_learned_from=("rl_learned_from", "mean"),
                                       seconds=("seconds", "mean"))
    random_reward = table.loc["random", "best_reward"] if "random" in table.index else float("nan")
    table["vs_random"] = table["best_reward"] - random_reward
    print(f"\n{args.evaluator} evaluator, {args.trials} trials, seeds {args.seeds}, pruner {args.pruner} "
          f"({exp.name}):")
    print(table.sort_values("best_reward", ascending=False).to_string(float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
