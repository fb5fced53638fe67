"""Search strategies against `random` at the same trial budget, over several seeds.

    python benchmarks/search_strategies.py                     # fast: synthetic accuracy, table latency
    python benchmarks/search_strategies.py --evaluator proxy --trials 30 --strategies random tpe rl \
        --cache runs/bench_strategies_cache [--proxy-threads 1]          # real proxy training (long)

Prints, per strategy, the mean (and std) over seeds of the best reward found and of the
hypervolume of the (accuracy, latency) front (reference point: accuracy 0, latency 2T), and the
search seconds. The fast evaluator scores accuracy with a saturating function of MAdds (see
``nas.search.evaluate.SyntheticEvaluator``) and latency with the experiment's table, so it
measures how well each strategy trades the two under the reward, not real accuracy.

With ``--evaluator proxy`` every candidate is trained by the experiment's proxy (no pruner, one
evaluation at the end). ``--cache DIR`` keeps each evaluation as ``DIR/<spec hash>.json``: a network
that two strategies or seeds both sample is trained once (Optuna's TPE starts with the same random
trials as ``random`` under the same seed), a rerun after a crash resumes, and two processes started
with different ``--seeds`` on one cache share their work.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from nas.experiment import load_experiment  # noqa: E402
from nas.io import write_text_atomic  # noqa: E402
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
            stored = json.loads(path.read_text())
            stored.pop("spec", None)
            latency, predicted, measured = self.inner.latency(spec)
            return dataclasses.replace(Evaluation(**stored), latency_ms=latency, latency_predicted_ms=predicted,
                                       latency_measured_ms=measured)
        result = self.inner.evaluate(spec, report)
        record = {"spec": spec.to_string(), **dataclasses.asdict(result)}
        write_text_atomic(path, json.dumps(record) + "\n")
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="experiments/fashion_mnist.yaml")
    parser.add_argument("--evaluator", choices=["fast", "proxy"], default="fast")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--strategies", nargs="+", default=sorted(STRATEGIES))
    parser.add_argument("--cache", type=Path, help="keep proxy evaluations here (shared, resumable)")
    parser.add_argument("--proxy-threads", type=int, help="torch threads of the proxy training")
    args = parser.parse_args()

    proxy = {"pruner": "none", "eval_every": None}
    if args.proxy_threads:
        proxy["threads"] = args.proxy_threads
    exp = load_experiment(args.experiment).replace(proxy=proxy)
    if args.evaluator == "fast":
        from nas.latency import load_predictor

        predictor = load_predictor(exp.latency.table, allow_foreign=exp.latency.allow_foreign)
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
                rows.append({"strategy": strategy, "seed": seed, "best_reward": result.best.reward,
                             "hypervolume": result.hypervolume, "seconds": time.perf_counter() - start})
                print(f"  {strategy:9s} seed {seed}: best reward {result.best.reward:.4f}, "
                      f"hypervolume {result.hypervolume:.5f}", flush=True)
    df = pd.DataFrame(rows)
    table = df.groupby("strategy").agg(best_reward=("best_reward", "mean"), best_reward_std=("best_reward", "std"),
                                       hypervolume=("hypervolume", "mean"), hypervolume_std=("hypervolume", "std"),
                                       seconds=("seconds", "mean"))
    random_reward = table.loc["random", "best_reward"] if "random" in table.index else float("nan")
    table["vs_random"] = table["best_reward"] - random_reward
    print(f"\n{args.evaluator} evaluator, {args.trials} trials, seeds {args.seeds} ({exp.name}):")
    print(table.sort_values("best_reward", ascending=False).to_string(float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
