"""Opening a search: the study (created, resumed or joined), its identity, the latency target.

The study lives in an Optuna storage (default: SQLite in the output folder; see
:mod:`nas.search.storage`). Running the same command again resumes: finished trials are kept. A
study records the experiment that made it (:func:`identity`); nothing is written to a study of
another experiment.

Interrupted trials: with one process on SQLite, a trial left RUNNING by a killed process is marked
FAIL at the next start and its params are enqueued, so the next trial re-runs it
(:func:`recover_interrupted`). With several workers (``--workers``, or processes on several
machines sharing PostgreSQL or a journal file), heartbeats do it instead: the trial of a killed
worker is failed after the grace period and re-queued, and a surviving worker runs it
(:mod:`nas.search.workers`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from nas.errors import NasError
from nas.experiment import Experiment
from nas.search.strategies import STRATEGIES
from nas.search.evaluate import make_evaluator
from nas.search.loop import SearchLoop, baseline_latency
from nas.search.storage import Heartbeat, heartbeats_on, kind, make_storage, redact, without_heartbeat
from nas.spec import SearchSpace
from nas.train.cpu import resolve_scoring_precision

IDENTITY_ATTR = "nas_experiment"


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / 'study.db').resolve()}"


def identity(experiment: Experiment, space: SearchSpace, strategy: str) -> dict[str, Any]:
    """What a study must agree on to be resumed (or joined) by this experiment (a supernet search's
    study also records its supernet section: its accuracies are not a proxy search's; with the
    precision ``auto`` resolves to on this machine, so that workers on CPUs with and without bf16 do not
    score one study's candidates in two precisions)."""
    out = {"space_hash": space.hash, "reward": asdict(experiment.reward),
           "objectives": experiment.search.objectives, "strategy": strategy,
           "proxy": asdict(experiment.proxy), "data": asdict(experiment.data),
           "latency_source": experiment.latency.source}
    if experiment.search.evaluator == "supernet":
        section = asdict(experiment.supernet)
        out["supernet"] = section | {"precision": resolve_scoring_precision(section["precision"])}
    return out


def _precision_hint(want: dict[str, Any], have: dict[str, Any]) -> str:
    """Where only the supernet's scoring precision differs: which each side uses."""
    mine, theirs = want.get("supernet"), have.get("supernet")
    if not (isinstance(mine, dict) and isinstance(theirs, dict)) or mine == theirs:
        return ""
    if {**theirs, "precision": mine["precision"]} != mine:
        return ""
    return (f": this machine scores candidates in {mine['precision']}, the study in {theirs.get('precision')}; "
            "set supernet.precision to the study's")


def _pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def open_study(experiment: Experiment, space: SearchSpace, strategy: str, storage: str, study_name: str,
               target_ms: float, heartbeat: Heartbeat | None = None) -> optuna.Study:
    """Create the study, or load it and check it belongs to this experiment (nothing is written to
    a study of another experiment)."""
    cls = STRATEGIES[strategy]
    target = target_ms
    constraints = None
    if experiment.search.constraint:
        constraints = lambda t: [t.user_attrs.get("latency_ms", float("inf")) - target]  # noqa: E731
    directions = ["maximize"] if experiment.search.objectives == "reward" else ["maximize", "minimize"]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    backend = make_storage(storage, heartbeat)
    try:
        sampler = cls.sampler(experiment.search.seed, strategy_options(experiment, strategy), constraints, space)
        study = optuna.create_study(storage=backend, study_name=study_name, directions=directions, sampler=sampler,
                                    pruner=_pruner(experiment.proxy.pruner), load_if_exists=True)
    except (ValueError, ImportError, optuna.exceptions.StorageInternalError) as exc:
        raise NasError(f"cannot open study {study_name!r} in {redact(storage)}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # SQLAlchemy errors: bad URL, unreachable server
        raise NasError(f"cannot open storage {redact(storage)}: {str(exc).splitlines()[0][:200]}") from None
    want = json.loads(json.dumps(identity(experiment, space, strategy)))
    have = study.user_attrs.get(IDENTITY_ATTR)
    if isinstance(have, dict) and isinstance(have.get("supernet"), dict):  # made before supernet.metric existed
        have = have | {"supernet": {"metric": "accuracy"} | have["supernet"]}
    if have is None:
        study.set_user_attr(IDENTITY_ATTR, want)
    elif have != want:
        diff = sorted(k for k in want if want[k] != have.get(k))
        raise NasError(f"study {study_name!r} in {redact(storage)} was made by another experiment (different "
                       f"{', '.join(diff)}{_precision_hint(want, have)}); use another out folder or --storage")
    if [d.name for d in study.directions] != [d.upper() for d in directions]:
        raise NasError(f"study {study_name!r} has directions {study.directions}, expected {directions}")
    if hasattr(sampler, "check"):
        sampler.check(study)  # a corrupt or foreign stored policy/population: NasError before any trial
    return study


def recover_interrupted(study: optuna.Study) -> list[int]:
    """Mark trials left RUNNING (a killed process) FAIL and enqueue their params for a re-run. With
    heartbeats only the trials that never beat (other workers' trials are alive or fail when stale)."""
    numbers = []
    running = without_heartbeat(study) if heartbeats_on(study) else study.get_trials(deepcopy=False,
                                                                                        states=(TrialState.RUNNING,))
    for trial in running:
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number})
        numbers.append(trial.number)
    return numbers


def _stored_target(study: optuna.Study, target: float) -> float:
    """The target a study was started with (a resumed study keeps it, even if re-measured)."""
    if "target_ms" not in study.user_attrs:
        study.set_user_attr("target_ms", float(target))
    return float(study.user_attrs["target_ms"])


@dataclass
class Session:
    """A validated, opened search: what ``run_search`` and each worker process share."""

    experiment: Experiment  # target_ms resolved to the study's
    space: SearchSpace
    study: optuna.Study
    strategy: str
    options: dict
    n_trials: int
    timeout_min: float | None
    storage: str
    out: Path
    evaluator: Any
    heartbeat: Heartbeat | None

    def loop(self, progress: bool) -> "SearchLoop":
        chosen = STRATEGIES[self.strategy](self.space, self.study, self.experiment.search.seed, self.options)
        return SearchLoop(self.experiment, self.study, chosen, self.evaluator, progress)


def uses_heartbeats(storage: str, workers: int) -> bool:
    """Heartbeats whenever several processes may share the study: a server or journal storage
    (other machines or processes may join), or SQLite with ``--workers``. One process on SQLite
    recovers its interrupted trials at start instead (no grace period to wait)."""
    return kind(storage) not in ("sqlite", "memory") or (kind(storage) == "sqlite" and workers > 1)


def check_strategy(experiment: Experiment, strategy: str | None = None) -> str:
    """The strategy to run (``strategy`` or the experiment's) and its options, checked by the strategy
    itself (before any work: a table build, the baseline); returns its name."""
    strategy = strategy or experiment.search.strategy
    if strategy not in STRATEGIES:
        raise NasError(f"unknown strategy {strategy!r} (choose from: {', '.join(STRATEGIES)})")
    STRATEGIES[strategy].check_options(strategy_options(experiment, strategy))
    return strategy


def strategy_options(experiment: Experiment, strategy: str) -> dict:
    """The experiment's ``search.options`` when it runs its own strategy; none for another one."""
    return experiment.search.options if strategy == experiment.search.strategy else {}


def open_session(experiment: Experiment, *, strategy: str | None = None, n_trials: int | None = None,
                 timeout_min: float | None = None, storage: str | None = None, study_name: str | None = None,
                 evaluator=None, heartbeat: Heartbeat | None = None, workers: int = 1) -> Session:
    """Check the arguments, open (or create) the study and resolve the latency target."""
    strategy = check_strategy(experiment, strategy)
    options = strategy_options(experiment, strategy)
    n_trials = n_trials if n_trials is not None else experiment.search.n_trials
    if n_trials < 1:
        raise NasError(f"the number of trials must be >= 1, got {n_trials}")
    if workers < 1:
        raise NasError(f"the number of workers must be >= 1, got {workers}")
    timeout_min = timeout_min if timeout_min is not None else experiment.search.timeout_min
    if timeout_min is not None and not timeout_min > 0:
        raise NasError(f"the timeout must be > 0 minutes, got {timeout_min}")
    space = experiment.load_space()
    out = Path(experiment.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NasError(f"cannot create output folder {out} ({exc.strerror})") from None
    storage = storage or experiment.search.storage or default_storage(out)
    study_name = study_name or experiment.search.study or f"{experiment.name}-{strategy}"
    if uses_heartbeats(storage, workers):
        heartbeat = heartbeat or Heartbeat()
    else:
        heartbeat = None
    if evaluator is None or isinstance(evaluator, str):
        evaluator = make_evaluator(evaluator or experiment.search.evaluator, experiment)
    target = experiment.reward.target_ms
    if target == "baseline":
        target = baseline_latency(evaluator, space)
    study = open_study(experiment, space, strategy, storage, study_name, target, heartbeat)
    target = _stored_target(study, target)
    experiment = experiment.replace(reward={"target_ms": target})
    return Session(experiment, space, study, strategy, options, n_trials, timeout_min, storage, out, evaluator,
                   heartbeat)
