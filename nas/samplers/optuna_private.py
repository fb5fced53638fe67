"""Every use of Optuna's private API in the ``nas`` package, in one place.

Optuna keeps these names out of its public API, so a release may change them without notice.
Everything else in ``nas`` uses Optuna's public API only; ``tests/test_samplers_optuna_private.py``
checks each entry of :data:`PRIVATE_API` against the installed Optuna, so an upgrade that changes
one fails that test first. Tested with optuna 5.0 (pin: ``optuna>=5.0,<5.1``).

Why each is needed:

- a study's storage and id, a trial's id: samplers keep their state in the study's and the
  trial's *system* attributes (Optuna's own samplers do the same), the loop writes a trial's
  user attribute by number (the spec-hash claim);
- the heartbeat machinery (``optuna.storages._heartbeat``): the search loop is ask/tell, so it
  runs Optuna's heartbeat thread around each trial itself, as ``Study.optimize`` does;
- the RDB heartbeat table (``optuna.storages._rdb.models``): which RUNNING trials never beat; a
  study keeps its RDBStorage wrapped in ``optuna.storages._cached_storage._CachedStorage``;
- ``optuna._hypervolume.compute_hypervolume``: Optuna 5.0 has no public hypervolume function.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
from optuna._hypervolume import compute_hypervolume
from optuna.storages._heartbeat import BaseHeartbeat, BaseHeartbeatThread, get_heartbeat_thread, is_heartbeat_enabled
from optuna.trial import FrozenTrial

# (module, attribute) of each private name used here; the upgrade test imports every one.
PRIVATE_API: list[tuple[str, str]] = [
    ("optuna._hypervolume", "compute_hypervolume"),
    ("optuna.storages._heartbeat", "BaseHeartbeat"),
    ("optuna.storages._heartbeat", "BaseHeartbeatThread"),
    ("optuna.storages._heartbeat", "get_heartbeat_thread"),
    ("optuna.storages._heartbeat", "is_heartbeat_enabled"),
    ("optuna.storages._rdb.models", "TrialHeartbeatModel"),
    ("optuna.storages._cached_storage", "_CachedStorage"),
]
# Private attributes of public objects used here.
PRIVATE_ATTRIBUTES: list[tuple[str, str]] = [
    ("optuna.study.Study", "_storage"),
    ("optuna.study.Study", "_study_id"),
    ("optuna.trial.FrozenTrial", "_trial_id"),
    ("optuna.trial.Trial", "_trial_id"),
    ("optuna.storages._cached_storage._CachedStorage", "_backend"),
]

__all__ = ["BaseHeartbeat", "BaseHeartbeatThread", "PRIVATE_API", "PRIVATE_ATTRIBUTES", "storage_of",
           "trial_id", "study_system_attrs", "set_study_system_attr", "trial_system_attrs",
           "set_trial_system_attr", "set_trial_user_attr_by_number", "heartbeat_enabled", "heartbeat_thread",
           "rdb_storage", "rdb_trial_ids_with_heartbeat", "hypervolume_of_losses"]


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    return study._storage


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    return trial._trial_id


def study_system_attrs(study: optuna.Study) -> dict[str, Any]:
    return study._storage.get_study_system_attrs(study._study_id)


def set_study_system_attr(study: optuna.Study, key: str, value: Any) -> None:
    study._storage.set_study_system_attr(study._study_id, key, value)


def trial_system_attrs(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> dict[str, Any]:
    return study._storage.get_trial_system_attrs(trial._trial_id)


def set_trial_system_attr(study: optuna.Study, trial: optuna.Trial | FrozenTrial, key: str, value: Any) -> None:
    study._storage.set_trial_system_attr(trial._trial_id, key, value)


def set_trial_user_attr_by_number(study: optuna.Study, number: int, key: str, value: Any) -> None:
    storage = study._storage
    storage.set_trial_user_attr(storage.get_trial_id_from_study_id_trial_number(study._study_id, number), key, value)


def heartbeat_enabled(study: optuna.Study) -> bool:
    return is_heartbeat_enabled(study._storage)


def heartbeat_thread(study: optuna.Study, trial: optuna.Trial) -> BaseHeartbeatThread:
    return get_heartbeat_thread(trial._trial_id, study._storage)


def rdb_storage(study: optuna.Study) -> optuna.storages.RDBStorage | None:
    """The study's RDBStorage (Optuna wraps it in a cache), or None for other storages."""
    from optuna.storages._cached_storage import _CachedStorage

    storage = study._storage
    if isinstance(storage, _CachedStorage):
        storage = storage._backend
    return storage if isinstance(storage, optuna.storages.RDBStorage) else None


def rdb_trial_ids_with_heartbeat(storage: optuna.storages.RDBStorage) -> set[int]:
    """Ids of the trials that recorded at least one heartbeat in an RDB storage."""
    from optuna.storages._rdb import models

    session = storage.scoped_session()
    try:
        return {tid for (tid,) in session.query(models.TrialHeartbeatModel.trial_id)}
    finally:
        session.close()


def hypervolume_of_losses(losses: np.ndarray, reference: np.ndarray) -> float:
    """Hypervolume of loss vectors (every objective minimised) up to ``reference`` (Optuna's WFG)."""
    return float(compute_hypervolume(losses, reference))
