"""Storages: heartbeats on a journal file, and bad input (unreachable database, wrong password,
another experiment's study) refused in one line with the study left untouched."""

import time

import optuna
import pytest
from optuna.trial import TrialState

from conftest import assert_one_line_error, run_cli
from test_search_workers import needs_postgres, postgres_url, write_experiment

from nas.errors import NasError
from nas.search.storage import Heartbeat, fail_stale_trials, make_storage, redact


def test_a_silent_trial_on_a_journal_is_failed_and_requeued(tmp_path):
    storage = make_storage(f"journal:{tmp_path / 'j.log'}", Heartbeat(interval=1, grace=2, max_retry=1))
    study = optuna.create_study(storage=storage)
    alive, dead = study.ask(), study.ask()
    storage.record_heartbeat(dead._trial_id)
    time.sleep(1.2)
    storage.record_heartbeat(alive._trial_id)
    time.sleep(1.2)  # dead: 2.4 s silent > grace; alive: 1.2 s
    fail_stale_trials(study)
    states = {t.number: t.state for t in study.get_trials()}
    assert states[dead.number] == TrialState.FAIL and states[alive.number] == TrialState.RUNNING
    (retry,) = [t for t in study.get_trials() if t.state == TrialState.WAITING]
    assert retry.system_attrs["retry_history"] == [dead.number]


def test_bad_heartbeat_settings_are_refused():
    with pytest.raises(NasError, match="grace period"):
        Heartbeat(interval=5, grace=5)


def test_password_is_hidden_in_messages():
    assert redact("postgresql://nas:secret@db:5432/x") == "postgresql://nas:***@db:5432/x"


def test_unreachable_database_is_one_line(tmp_path):
    exp = write_experiment(tmp_path)
    result = run_cli("search", exp, "--storage", "postgresql://nas:nas@127.0.0.1:1/nas_test", "--evaluator",
                     "synthetic", "--trials", "1", "--no-measure")
    assert_one_line_error(result, "cannot open storage postgresql://nas:***@127.0.0.1:1/nas_test")


@needs_postgres
def test_wrong_password_is_one_line(tmp_path):
    url = postgres_url()
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    bad = f"{scheme}://{creds.split(':')[0]}:wrong-password@{host}"
    result = run_cli("search", write_experiment(tmp_path), "--storage", bad, "--evaluator", "synthetic",
                     "--trials", "1", "--no-measure")
    assert_one_line_error(result, "password authentication failed")
    assert "wrong-password" not in result.stderr


@pytest.mark.slow
@needs_postgres
def test_study_of_another_experiment_is_refused_and_untouched(tmp_path):
    import uuid

    url, study = postgres_url(), f"other-{uuid.uuid4().hex[:8]}"
    first = run_cli("search", write_experiment(tmp_path), "--storage", url, "--study", study, "--evaluator",
                    "synthetic", "--trials", "2", "--no-measure")
    assert first.returncode == 0, first.stderr
    before = optuna.load_study(study_name=study, storage=url)
    snapshot = ([(t.number, t.state, t.params, t.user_attrs) for t in before.get_trials()], before.user_attrs)
    (tmp_path / "b").mkdir()
    other = write_experiment(tmp_path / "b", target_ms=0.07)
    result = run_cli("search", other, "--storage", url, "--study", study, "--evaluator", "synthetic",
                     "--trials", "4", "--no-measure")
    assert_one_line_error(result, "was made by another experiment (different reward)")
    after = optuna.load_study(study_name=study, storage=url)
    assert ([(t.number, t.state, t.params, t.user_attrs) for t in after.get_trials()], after.user_attrs) == snapshot
