"""Several worker processes on one study: ``nas search EXP --workers N`` (or one ``nas search`` per
machine sharing ``--storage postgresql://...``).

The parent process opens the study (checks it belongs to the experiment, resolves the latency
target, evaluates the baseline once), then starts ``N`` worker processes
(``python -m nas.search.workers CONFIG.json``). Each worker opens the same study with heartbeats
and runs the ordinary loop (:class:`nas.search.loop.SearchLoop`) until the study has
``n_trials`` finished trials; the parent shows one progress bar, forwards Ctrl-C, waits for all of
them and writes the results once. Workers coordinate only through the storage:

- the budget: a worker starts a trial only while finished + running trials leave room (or a
  re-run is waiting); of workers racing for the last slot, the lowest trial numbers keep it;
- no duplicated work: the spec-hash claim of :mod:`nas.search.claims`;
- a killed worker: its trial's heartbeat stops, another worker fails it after the grace period and
  Optuna's retry callback re-queues it (:mod:`nas.search.storage`); the next ``ask`` picks it up;
- the RL policy: it lives in the study, updated under a version check (:mod:`nas.samplers.rl`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nas.errors import NasError
from nas.experiment import experiment_from_dict
from nas.search.loop import FINISHED
from nas.search.storage import Heartbeat
from nas.search.study import open_session

def worker_config(experiment, session, evaluator: str) -> dict[str, Any]:
    hb = session.heartbeat or Heartbeat()
    return {"experiment": experiment.to_dict(), "source": experiment.source, "strategy": session.strategy,
            "n_trials": session.n_trials, "timeout_min": session.timeout_min, "storage": session.storage,
            "study": session.study.study_name, "evaluator": evaluator,
            "heartbeat": dataclasses.asdict(hb)}


def worker_command(config_path: Path) -> list[str]:
    return [sys.executable, "-m", "nas.search.workers", str(config_path)]


def run_workers(experiment, session, workers: int, evaluator: str, progress: bool = True) -> None:
    """Start ``workers`` worker processes on the session's study and wait for them (see module doc)."""
    from tqdm import tqdm

    with tempfile.TemporaryDirectory(prefix="nas-workers-") as tmp:
        config = Path(tmp) / "worker.json"
        config.write_text(json.dumps(worker_config(experiment, session, evaluator)))
        package_root = str(Path(__file__).resolve().parents[2])  # so workers import this nas, installed or not
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        children = [subprocess.Popen(worker_command(config), env=env) for _ in range(workers)]
        bar = tqdm(total=session.n_trials, unit="trial", desc=f"search {session.strategy} ({workers} workers)",
                   disable=None if progress else True, dynamic_ncols=True)
        try:
            while any(c.poll() is None for c in children):
                if not bar.disable:
                    done = len(session.study.get_trials(deepcopy=False, states=FINISHED))
                    bar.update(min(done, session.n_trials) - bar.n)
                time.sleep(0.5)
        except KeyboardInterrupt:
            for c in children:
                if c.poll() is None:
                    c.send_signal(signal.SIGINT)
            for c in children:
                c.wait()
            raise
        finally:
            bar.close()
            for c in children:  # only on an error in this process: do not leave workers behind
                if c.poll() is None:
                    c.kill()
                    c.wait()
    failed = [c.returncode for c in children if c.returncode != 0]
    if failed:
        raise NasError(f"{len(failed)} of {workers} workers failed (exit status {failed[0]}; see their messages above)")


def run_worker(config: dict[str, Any]) -> int:
    """One worker: open the study with heartbeats, run the loop; returns the trials it finished."""
    experiment = experiment_from_dict(config["experiment"], config.get("source", "<worker>"))
    session = open_session(experiment, strategy=config["strategy"], n_trials=config["n_trials"],
                           timeout_min=config["timeout_min"], storage=config["storage"], study_name=config["study"],
                           evaluator=config["evaluator"], heartbeat=Heartbeat(**config["heartbeat"]), workers=2)
    return session.loop(progress=False).run(session.n_trials, session.timeout_min)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m nas.search.workers CONFIG.json", file=sys.stderr)
        return 2
    try:
        run_worker(json.loads(Path(argv[0]).read_text()))
    except NasError as exc:
        print(f"nas search worker {os.getpid()}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
