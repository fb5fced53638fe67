"""Multi-worker search: trials/minute with 1 and 2 local workers, storage overhead per trial.

    python benchmarks/search_workers.py [--postgres URL] [--trials 16] [--seconds 0.5]

Throughput: ``nas search --workers N`` on a journal file with the ``synthetic:SECONDS`` evaluator
(a fixed per-trial time standing in for training), timed from the first trial's start to the last
trial's end (process start-up excluded). Overhead: one in-process loop of instant synthetic trials
per storage; the per-trial time minus the in-memory storage's is what the storage costs a trial
(ask, attrs, claim check, tell, heartbeat thread).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def experiment(out: Path):
    from nas.experiment import experiment_from_dict

    return experiment_from_dict({
        "name": "bench", "space": str(ROOT / "search_spaces" / "fashion_mnist.yaml"), "out": str(out),
        "proxy": {"steps": 1}, "latency": {"table": str(ROOT / "latency_tables" / "fashion_mnist" / "intel-xeon-2.80ghz-2c-ort1.32.0-t1-74165aa5")},
        "reward": {"target_ms": 0.05, "preset": "soft"},
        "search": {"strategy": "random", "n_trials": 10, "seed": 0, "baseline": False}})


def throughput(workers: int, trials: int, seconds: float, tmp: Path) -> float:
    from optuna.trial import TrialState

    from nas.search.runner import run_search

    exp = experiment(tmp / f"w{workers}")
    result = run_search(exp, n_trials=trials, storage=f"journal:{tmp / f'w{workers}.journal'}",
                        evaluator=f"synthetic:{seconds}", workers=workers, progress=False, measure_best=False)
    done = result.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    return 60 * len(done) / span


def per_trial_ms(storage: str, trials: int, tmp: Path) -> float:
    from nas.search.evaluate import SyntheticEvaluator
    from nas.search.runner import open_session
    from nas.search.storage import Heartbeat

    session = open_session(experiment(tmp / "o"), n_trials=trials, storage=storage, study_name=f"bench-{uuid.uuid4().hex[:8]}",
                           evaluator=SyntheticEvaluator(), heartbeat=Heartbeat(1, 5))
    loop = session.loop(progress=False)
    start = time.perf_counter()
    loop.run(trials)
    return 1000 * (time.perf_counter() - start) / trials


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--postgres", default=os.environ.get("NAS_TEST_POSTGRES_URL"), help="PostgreSQL URL (optional)")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=0.5, help="per-trial time of the synthetic evaluator")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rates = {n: throughput(n, args.trials, args.seconds, tmp) for n in (1, 2)}
        print(f"throughput, journal, synthetic:{args.seconds} s/trial, {args.trials} trials:")
        for n, rate in rates.items():
            print(f"  {n} worker{'s' if n > 1 else ' '}: {rate:6.1f} trials/min  (ideal {n * 60 / args.seconds:.1f})")
        print(f"  speed-up 2 vs 1: {rates[2] / rates[1]:.2f}x")
        storages = {"memory": ":memory:", "sqlite": f"sqlite:///{tmp / 'o.db'}", "journal": f"journal:{tmp / 'o.journal'}"}
        if args.postgres:
            storages["postgresql"] = args.postgres
        n = 3 * args.trials
        times = {name: per_trial_ms(url, n, tmp) for name, url in storages.items()}
        print(f"storage cost per trial ({n} instant trials, one process, heartbeats on except memory/sqlite):")
        for name, ms in times.items():
            extra = "" if name == "memory" else f"  (+{ms - times['memory']:.1f} ms over memory)"
            print(f"  {name:10s} {ms:7.1f} ms/trial{extra}")


if __name__ == "__main__":
    main()
