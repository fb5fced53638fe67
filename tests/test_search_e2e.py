"""The real pipeline (Fashion-MNIST, training, the shipped table) on a seconds-long budget:
SIGKILL mid-search, rerun, results; and optuna-dashboard reading a finished study over HTTP."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from conftest import ROOT, run_cli

pytestmark = pytest.mark.slow  # the whole pipeline on real data: the full tier only



def load(db: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


def study_exists(db: Path, name: str) -> bool:
    """Read-only look at the database: opening it with Optuna while the search is creating its schema
    would race it (both would write the schema version)."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            return con.execute("SELECT 1 FROM studies WHERE study_name = ?", (name,)).fetchone() is not None
    except sqlite3.Error:
        return False


def test_sigkill_mid_search_then_rerun_loses_at_most_that_trial(tmp_path, tiny_test_experiment):
    import yaml

    TINY = tiny_test_experiment
    data = yaml.safe_load(TINY.read_text())
    data["proxy"]["steps"] = 20  # trials long enough to be seen running on a fast CPU (polled every 20 ms)
    TINY.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "nas", "search", str(TINY), "--out", str(out), "--trials", "3", "--no-measure"]
    errors = tmp_path / "search.stderr"  # shown when the search ends before it could be killed
    child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=errors.open("w"))
    db, deadline, killed_in = out / "study.db", time.monotonic() + 120, None
    try:
        while time.monotonic() < deadline and child.poll() is None:
            if study_exists(db, "tiny_test-random"):
                trials = load(db, "tiny_test-random").get_trials(deepcopy=False)
                complete = [t for t in trials if t.state == TrialState.COMPLETE]
                running = [t for t in trials if t.state == TrialState.RUNNING]
                if complete and running:
                    killed_in = running[0].number
                    os.kill(child.pid, signal.SIGKILL)
                    break
            time.sleep(0.02)
    finally:
        child.kill()
        child.wait()
    assert killed_in is not None, f"the search finished or stalled before it could be killed: {errors.read_text()}"
    kept = {t.number: t.user_attrs["hash"] for t in load(db, "tiny_test-random").get_trials(states=(TrialState.COMPLETE,))}

    result = run_cli("search", TINY, "--out", out, "--trials", "3", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    study = load(db, "tiny_test-random")
    trials = study.get_trials(deepcopy=False)
    assert summary["n_trials"] == 3 and summary["out"] == str(out)
    assert {t.number: t.user_attrs["hash"] for t in trials if t.number in kept} == kept  # finished work kept
    assert trials[killed_in].state == TrialState.FAIL
    assert [t for t in trials if t.user_attrs.get("retry_of") == killed_in][0].state == TrialState.COMPLETE
    assert len([t for t in trials if t.state == TrialState.FAIL]) == 1  # lost: only the killed trial

    best = summary["best"]
    assert 0 <= best["val_acc"] <= 1 and best["latency_predicted_ms"] > 0 and best["latency_remeasured_ms"] > 0
    assert summary["baseline"]["hash"] and summary["pareto"]
    table = pd.read_csv(out / "trials.csv")
    assert {"spec", "hash", "val_acc", "latency_predicted_ms", "latency_measured_ms", "reward", "seconds"} <= set(table)
    assert (out / "pareto.png").stat().st_size > 10_000
    assert json.loads((out / "best_spec.json").read_text())


def test_optuna_dashboard_serves_our_trials(tmp_path, tiny_test_experiment):
    TINY = tiny_test_experiment
    optuna_dashboard = pytest.importorskip("optuna_dashboard")
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from nas.experiment import load_experiment
    from nas.search.evaluate import SyntheticEvaluator
    from nas.search.runner import run_search

    exp = load_experiment(TINY).replace(out=tmp_path, search={"n_trials": 2, "baseline": False})
    run_search(exp, evaluator=SyntheticEvaluator(), progress=False, measure_best=False)
    storage = f"sqlite:///{tmp_path / 'study.db'}"

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    server = make_server("127.0.0.1", 0, optuna_dashboard.wsgi(storage), handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}/api/studies"
        studies = json.load(urllib.request.urlopen(base, timeout=30))["study_summaries"]
        (ours,) = [s for s in studies if s["study_name"] == "tiny_test-random"]
        detail = json.load(urllib.request.urlopen(f"{base}/{ours['study_id']}?after=0", timeout=30))
    finally:
        server.shutdown()
        thread.join(timeout=10)
    assert len(detail["trials"]) == 2
    stored = optuna.load_study(study_name="tiny_test-random", storage=storage).get_trials()
    for served, trial in zip(detail["trials"], stored):
        attrs = {a["key"]: a["value"] for a in served["user_attrs"]}
        assert attrs["spec"] == trial.user_attrs["spec"] and attrs["hash"] == trial.user_attrs["hash"]
        assert {"val_acc", "latency_predicted_ms", "latency_measured_ms", "reward"} <= set(attrs)
        assert len(served["params"]) == len(trial.params)
