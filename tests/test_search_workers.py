"""Several worker processes on one study (PostgreSQL and a journal file): one worker SIGKILLed
mid-trial, the survivor re-runs its trial, the budget is exact and no architecture is trained twice."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pytest
from optuna.trial import TrialState

from tests.latency_helpers import SHIPPED_FASHION

from conftest import ROOT, run_cli

DEFAULT_POSTGRES = "postgresql://nas:nas@127.0.0.1:54329/nas_test"  # what .ci/run starts


def postgres_url() -> str | None:
    """NAS_TEST_POSTGRES_URL, or the .ci/run server if one is reachable (else None: skip)."""
    url = os.environ.get("NAS_TEST_POSTGRES_URL")
    if url:
        return url
    try:
        import sqlalchemy

        sqlalchemy.create_engine(DEFAULT_POSTGRES, connect_args={"connect_timeout": 2}).connect().close()
        return DEFAULT_POSTGRES
    except Exception:
        return None


_SKIP_WITHOUT_POSTGRES = pytest.mark.skipif(postgres_url() is None, reason="no PostgreSQL (set NAS_TEST_POSTGRES_URL)")


def needs_postgres(test):
    """Skipped without a server; run on one worker (pytest-xdist group), since these tests share the
    database's public schema, whose Optuna tables the first of them creates."""
    return pytest.mark.xdist_group("postgresql-public-schema")(_SKIP_WITHOUT_POSTGRES(test))


def experiment_dict(name="workers", target_ms=0.05, strategy="random"):
    return {"name": name, "space": str(ROOT / "search_spaces" / "fashion_mnist.yaml"), "out": "unused",
            "reward": {"target_ms": target_ms, "preset": "soft"}, "proxy": {"steps": 1},
            "latency": {"table": str(SHIPPED_FASHION)},  # another device's table: predictions only
            "search": {"strategy": strategy, "n_trials": 20, "seed": 0, "baseline": False}}


def write_experiment(tmp_path, **kw):
    import yaml

    data = experiment_dict(**kw)
    data["out"] = str(tmp_path / "out")
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def start_worker(config_path):
    return subprocess.Popen([sys.executable, "-m", "nas.search.workers", str(config_path)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


KILL_TRIALS = 10  # 3 finished before the kill, the killed one re-run after the grace period, both workers busy


def kill_one_worker_mid_search(storage_url, tmp_path, strategy="random"):
    study_name = f"workers-{uuid.uuid4().hex[:8]}"
    data = experiment_dict(strategy=strategy)
    data["out"] = str(tmp_path / "out")
    config = {"experiment": data, "strategy": strategy, "n_trials": KILL_TRIALS, "timeout_min": None,
              "storage": storage_url,
              "study": study_name, "evaluator": "synthetic:1.5",
              "heartbeat": {"interval": 1, "grace": 3, "max_retry": 3}}
    path = tmp_path / "worker.json"
    path.write_text(json.dumps(config))
    workers = [start_worker(path), start_worker(path)]
    killed = victim = None
    seen_running: set[int] = set()
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and killed is None:
            time.sleep(0.2)
            for w in workers:
                assert w.poll() is None, w.communicate()[1]
            try:
                trials = optuna.load_study(study_name=study_name, storage=storage(storage_url)).get_trials(deepcopy=False)
            except KeyError:  # not created yet
                continue
            complete = [t for t in trials if t.state == TrialState.COMPLETE]
            running = [t for t in trials if t.state == TrialState.RUNNING and "worker" in t.user_attrs]
            fresh = [t for t in running if t.number not in seen_running]  # started < 0.2 s ago: >= 1.3 s to go
            seen_running |= {t.number for t in running}
            running = fresh
            if len(complete) >= 3 and running:
                pid = int(running[0].user_attrs["worker"].rsplit(":", 1)[1])
                (victim,) = [w for w in workers if w.pid == pid]
                os.kill(pid, signal.SIGKILL)
                killed = running[0].number
        assert killed is not None, "the workers finished or stalled before one could be killed"
        (survivor,) = [w for w in workers if w is not victim]
        _, err = survivor.communicate(timeout=90)
        assert survivor.returncode == 0, err
    finally:
        for w in workers:
            w.kill()
            w.wait()
    study = optuna.load_study(study_name=study_name, storage=storage(storage_url))
    return study, killed, survivor.pid


def storage(url):
    from nas.search.storage import make_storage

    return make_storage(url)


def check_outcome(study, killed, survivor_pid):
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == KILL_TRIALS
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    trained = [t.user_attrs["hash"] for t in complete if not t.user_attrs.get("cached")]
    assert len(trained) == len(set(trained))  # no architecture trained twice
    assert trials[killed].state == TrialState.FAIL
    (rerun,) = [t for t in trials if t.user_attrs.get("retry_of") == killed]
    assert rerun.state == TrialState.COMPLETE and rerun.params == trials[killed].params
    assert rerun.user_attrs["worker"].endswith(f":{survivor_pid}")
    workers = {t.user_attrs["worker"] for t in complete}
    assert len(workers) == 2  # both workers did some of the work


@pytest.mark.slow
@needs_postgres
def test_two_workers_on_postgresql_one_killed(tmp_path):
    check_outcome(*kill_one_worker_mid_search(postgres_url(), tmp_path))


@pytest.mark.slow
def test_two_workers_on_a_journal_file_one_killed(tmp_path):
    check_outcome(*kill_one_worker_mid_search(f"journal:{tmp_path / 'journal.log'}", tmp_path, strategy="rl"))


@pytest.mark.slow  # three processes
def test_cli_workers_on_a_journal_file(tmp_path):
    exp = write_experiment(tmp_path)
    journal = tmp_path / "study.journal"
    result = run_cli("search", exp, "--storage", f"journal:{journal}", "--study", "cli", "--workers", "2",
                     "--trials", "6", "--evaluator", "synthetic:0.2", "--no-measure", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["n_trials"] == 6 and summary["study"] == "cli"
    trials = optuna.load_study(study_name="cli", storage=storage(f"journal:{journal}")).get_trials()
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 6
    assert len({t.user_attrs["worker"] for t in trials}) == 2
