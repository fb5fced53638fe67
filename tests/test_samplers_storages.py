"""Optuna's storage conformance suite on every storage ``make_storage`` returns (PostgreSQL when a
server is up: NAS_TEST_POSTGRES_URL or the .ci/run one), and the private-Optuna-API guard."""

import importlib
import inspect
import os
import uuid

import optuna
import pytest
from optuna.testing.pytest_storages import StorageTestCase

from nas.samplers import optuna_private
from nas.search.storage import Heartbeat, HeartbeatJournalStorage, make_storage
from test_search_workers import postgres_url

HEARTBEAT = Heartbeat(interval=1, grace=2)


def postgres_schema_url(url: str):
    """A fresh schema of the test database per test (the suite expects an empty storage)."""
    import sqlalchemy

    schema = f"nas_storage_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}", lambda: _drop(engine, schema)


def _drop(engine, schema):
    import sqlalchemy

    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


KINDS = ["memory", "journal", "journal+heartbeat", "sqlite", "sqlite+heartbeat", "postgresql",
         "postgresql+heartbeat"]


@pytest.fixture
def fast_dir(tmp_path):
    """A folder in memory (/dev/shm) where there is one, else ``tmp_path``: SQLite's and the journal's
    syncs to disk are most of the conformance suite's time and none of what it checks."""
    import shutil
    import tempfile
    from pathlib import Path

    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(dir=shm, prefix="nas-storage-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=KINDS)
def storage(request, fast_dir):
    tmp_path = fast_dir
    kind = request.param
    heartbeat = HEARTBEAT if kind.endswith("+heartbeat") else None
    cleanup = None
    if kind == "memory":
        url = ":memory:"
    elif kind.startswith("journal"):
        url = f"journal:{tmp_path / 'journal.log'}"
    elif kind.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'study.db'}"
    else:
        if postgres_url() is None:
            pytest.skip("no PostgreSQL (set NAS_TEST_POSTGRES_URL)")
        url, cleanup = postgres_schema_url(postgres_url())
    backend = make_storage(url, heartbeat)
    if kind == "journal+heartbeat":
        assert isinstance(backend, HeartbeatJournalStorage)
    yield backend
    if isinstance(backend, optuna.storages.RDBStorage):
        backend.remove_session()
        backend.engine.dispose()
    if cleanup is not None:
        cleanup()


@pytest.mark.slow
class TestMakeStorage(StorageTestCase):
    """Optuna's StorageTestCase, parametrized over ``KINDS``."""


# -- the private Optuna API ----------------------------------------------------------------------------
# What nas.samplers.optuna_private relies on, as the tested Optuna (5.0) has it. An upgrade that changes
# one fails here: check the use in optuna_private, then update this table and the version pin.
SIGNATURES = {
    ("optuna._hypervolume", "compute_hypervolume"): "(loss_vals: 'np.ndarray', reference_point: 'np.ndarray', "
                                                    "assume_pareto: 'bool' = False) -> 'float'",
    ("optuna.storages._heartbeat", "get_heartbeat_thread"): "(trial_id: 'int', storage: 'BaseStorage') -> "
                                                            "'BaseHeartbeatThread'",
    ("optuna.storages._heartbeat", "is_heartbeat_enabled"): "(storage: 'BaseStorage') -> 'bool'",
}


def test_every_private_optuna_name_still_exists():
    for module, name in optuna_private.PRIVATE_API:
        assert hasattr(importlib.import_module(module), name), f"{module}.{name} is gone"
    for (module, name), signature in SIGNATURES.items():
        assert str(inspect.signature(getattr(importlib.import_module(module), name))) == signature, (module, name)
    heartbeat = importlib.import_module("optuna.storages._heartbeat")
    for method in ("record_heartbeat", "_get_stale_trial_ids", "get_heartbeat_interval",
                   "get_heartbeat_stale_trial_callback"):
        assert hasattr(heartbeat.BaseHeartbeat, method), method
    models = importlib.import_module("optuna.storages._rdb.models")
    assert hasattr(models.TrialHeartbeatModel, "trial_id")


def test_every_private_attribute_still_exists(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    trial = study.ask()
    frozen = study.get_trials()[0]
    objects = {"optuna.study.Study": study, "optuna.trial.Trial": trial, "optuna.trial.FrozenTrial": frozen,
               "optuna.storages._cached_storage._CachedStorage": optuna_private.storage_of(study)}
    for owner, attribute in optuna_private.PRIVATE_ATTRIBUTES:
        assert hasattr(objects[owner], attribute), f"{owner}.{attribute} is gone"
    # And the helpers built on them work on a real storage.
    optuna_private.set_study_system_attr(study, "k", {"v": [1]})
    assert optuna_private.study_system_attrs(study)["k"] == {"v": [1]}
    optuna_private.set_trial_system_attr(study, frozen, "t", 2)
    assert optuna_private.trial_system_attrs(study, trial)["t"] == 2
    optuna_private.set_trial_user_attr_by_number(study, 0, "u", 3)
    assert study.get_trials()[0].user_attrs["u"] == 3
    assert optuna_private.rdb_trial_ids_with_heartbeat(optuna_private.rdb_storage(study)) == set()
    assert optuna_private.hypervolume_of_losses(__import__("numpy").array([[1.0, 1.0]]),
                                                __import__("numpy").array([2.0, 2.0])) == 1.0


def test_the_package_uses_no_private_optuna_api_elsewhere():
    import re
    from pathlib import Path

    root = Path(optuna_private.__file__).resolve().parents[1]
    private_use = re.compile(r"optuna(\.\w+)*\._\w+|\._(storage|study_id|trial_id)\b")
    offenders = [f"{path.relative_to(root)}:{n}" for path in root.rglob("*.py") if path.name != "optuna_private.py"
                 for n, line in enumerate(path.read_text().splitlines(), 1) if private_use.search(line)]
    assert offenders == []


def test_without_heartbeat_on_sqlite_keeps_trials_that_beat(tmp_path):
    # A study wraps its RDBStorage in Optuna's cache: the heartbeat table must still be consulted, or a
    # process joining a shared database would fail the live trials of the other workers.
    from nas.search.storage import without_heartbeat

    study = optuna.create_study(storage=make_storage(f"sqlite:///{tmp_path / 's.db'}", HEARTBEAT))
    beating, orphan = study.ask(), study.ask()
    optuna_private.rdb_storage(study).record_heartbeat(optuna_private.trial_id(beating))
    assert [t.number for t in without_heartbeat(study)] == [orphan.number]
