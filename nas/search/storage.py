"""Where a study lives: Optuna storages from a URL, with heartbeats for several workers.

URLs: any SQLAlchemy URL (``sqlite:///PATH``, ``postgresql://USER:PASSWORD@HOST:PORT/DB``),
``journal:PATH`` (Optuna's JournalStorage on a file: several processes on one machine, no server)
or ``:memory:`` (nothing kept; tests and benchmarks).

Heartbeats (several workers): every running trial's worker records a heartbeat every
``interval`` seconds; a RUNNING trial whose heartbeat is older than ``grace`` seconds (its worker
was killed, or its machine lost) is marked FAIL by the next worker that looks, and Optuna's
:class:`~optuna.storages.RetryHeartbeatStaleTrialCallback` enqueues a copy (WAITING, same params,
``retry_history`` in its system attrs) that the next ``ask`` of any worker picks up. RDBStorage
(PostgreSQL, SQLite) has this built in; Optuna 5.0's JournalStorage has no heartbeat, so
:class:`HeartbeatJournalStorage` adds it (the heartbeat is a timestamp system attr of the trial).
The loop records heartbeats with Optuna's own heartbeat thread (what ``study.optimize`` uses) around
each trial, because our loop is ask/tell (the strategies choose the params between ask and tell).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from nas.errors import NasError
from nas.samplers import optuna_private as private
from nas.samplers.optuna_private import BaseHeartbeat, BaseHeartbeatThread

HEARTBEAT_ATTR = "nas_heartbeat"
# Our loop is ask/tell with Optuna's heartbeat thread around each trial (see above), which is what
# Study.optimize does; Optuna's warning that heartbeats are meant for Study.optimize does not apply.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


@dataclass(frozen=True)
class Heartbeat:
    """Seconds between heartbeats, seconds of silence before a trial is failed, re-runs per trial."""

    interval: int = 10
    grace: int = 60
    max_retry: int = 3

    def __post_init__(self) -> None:
        if not (isinstance(self.interval, int) and self.interval >= 1):
            raise NasError(f"the heartbeat interval must be a whole number of seconds >= 1, got {self.interval!r}")
        if not (isinstance(self.grace, int) and self.grace > self.interval):
            raise NasError(f"the grace period ({self.grace!r} s) must be a whole number of seconds larger than "
                           f"the heartbeat interval ({self.interval} s)")
        if not (isinstance(self.max_retry, int) and self.max_retry >= 0):
            raise NasError(f"max retries must be >= 0, got {self.max_retry!r}")

    def callback(self) -> Callable[[optuna.Study, FrozenTrial], None]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RetryHeartbeatStaleTrialCallback(max_retry=self.max_retry)


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """JournalStorage with heartbeats: a trial's heartbeat is the time (seconds since the epoch, the
    journal is for one machine so there is one clock) in its system attr ``nas_heartbeat``."""

    def __init__(self, path: str, heartbeat: Heartbeat) -> None:
        super().__init__(JournalFileBackend(path))
        self.heartbeat = heartbeat
        self._callback = heartbeat.callback()

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except UpdateFinishedTrialError:  # failed as stale by another worker meanwhile
            pass

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        return [private.trial_id(t) for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
                if HEARTBEAT_ATTR in t.system_attrs and now - t.system_attrs[HEARTBEAT_ATTR] > self.heartbeat.grace]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat.interval

    def get_heartbeat_stale_trial_callback(self):
        return self._callback


def kind(url: str) -> str:
    """``memory``, ``journal``, ``sqlite`` or the SQLAlchemy dialect (``postgresql``, ...)."""
    if url == ":memory:":
        return "memory"
    if url.startswith("journal:"):
        return "journal"
    return url.split(":", 1)[0].split("+", 1)[0]


def redact(url: str) -> str:
    """The URL without its password or secret query values (for messages and summaries): :func:`nas.redact.redact`."""
    from nas.redact import redact as redact_url

    return redact_url(url)


def make_storage(url: str, heartbeat: Heartbeat | None = None) -> BaseStorage | str:
    """An Optuna storage from a URL; with ``heartbeat``, stale trials are failed and re-queued.

    A database that cannot be reached (wrong host, port, password, missing driver) is a
    :class:`NasError` naming the URL (password hidden)."""
    if url == ":memory:":
        return optuna.storages.InMemoryStorage()
    if url.startswith("journal:"):
        path = url[len("journal:"):]
        if not path:
            raise NasError("journal storage needs a file: journal:PATH")
        try:
            if heartbeat is None:
                return JournalStorage(JournalFileBackend(path))
            return HeartbeatJournalStorage(path, heartbeat)
        except OSError as exc:
            raise NasError(f"cannot open journal file {path} ({exc.strerror})") from None
    if "://" not in url:
        raise NasError(f"storage URL {url!r} is not a database URL (sqlite:///PATH, postgresql://USER@HOST/DB), "
                       "journal:PATH or :memory:")
    kwargs = {}
    if heartbeat is not None:
        kwargs = {"heartbeat_interval": heartbeat.interval, "grace_period": heartbeat.grace,
                  "heartbeat_stale_trial_callback": heartbeat.callback()}
    engine = {"pool_pre_ping": True}
    if kind(url) == "postgresql":
        engine["connect_args"] = {"connect_timeout": 10}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine, **kwargs)
    except ImportError as exc:
        raise NasError(f"cannot open storage {redact(url)}: missing database driver ({exc})") from None
    except Exception as exc:  # SQLAlchemy: bad URL, unreachable server, authentication failed
        raise NasError(f"cannot open storage {redact(url)}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:240]


def heartbeats_on(study: optuna.Study) -> bool:
    return private.heartbeat_enabled(study)


def heartbeat_thread(study: optuna.Study, trial: optuna.Trial) -> BaseHeartbeatThread:
    """Optuna's heartbeat thread for one trial (a no-op without heartbeats); use as ``with``."""
    return private.heartbeat_thread(study, trial)


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the trials of killed workers and enqueue their re-runs (Optuna's; a no-op without heartbeats)."""
    if heartbeats_on(study):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


def without_heartbeat(study: optuna.Study) -> list[FrozenTrial]:
    """RUNNING trials that never recorded a heartbeat: left by a process that ran without heartbeats
    (one process on SQLite, an older run), which Optuna would never fail. A worker records its first
    heartbeat right after ``ask``, so these are orphans, re-run at start like a single process does."""
    storage = private.storage_of(study)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if isinstance(storage, HeartbeatJournalStorage):
        return [t for t in running if HEARTBEAT_ATTR not in t.system_attrs]
    rdb = private.rdb_storage(study)
    if rdb is not None:
        beating = private.rdb_trial_ids_with_heartbeat(rdb)
        return [t for t in running if private.trial_id(t) not in beating]
    return running


def retried_from(trial: optuna.Trial | FrozenTrial) -> int | None:
    """The number of the trial this one re-runs (a killed worker's trial), if any."""
    attrs = trial.system_attrs if isinstance(trial, FrozenTrial) else private.trial_system_attrs(trial.study, trial)
    history = attrs.get("retry_history") or []
    return history[-1] if history else None
