"""The strategy port: a named Optuna sampler plus ``ask() -> Proposal``, over an Optuna study.

Every strategy records its trials in one Optuna study, so storages, optuna-dashboard and Optuna's
plots work on every search. A strategy is the study's sampler (Optuna's, or one of
:mod:`nas.samplers`) with the settings of the experiment's ``search.options``; it chooses every
decision through ``trial.suggest_categorical``. A proposal is an Optuna trial (RUNNING in the
study) plus the assignment of the space's decisions that it carries as categorical params. Trials
enqueued in the study (the re-run of an interrupted trial) are asked first and keep their params,
whatever the strategy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from nas.config import check_strategy_options
from nas.spec import ArchSpec, SearchSpace


@dataclass(frozen=True)
class Proposal:
    """A candidate to evaluate: the RUNNING Optuna trial, its assignment and the decoded spec."""

    trial: optuna.Trial
    assignment: dict[str, Any]
    spec: ArchSpec

    @property
    def number(self) -> int:
        return self.trial.number


@dataclass(frozen=True)
class TrialRecord:
    """A finished trial as the strategies and results see it (immutable, like Optuna's FrozenTrial)."""

    number: int
    state: str  # COMPLETE, PRUNED, FAIL
    assignment: dict[str, Any]
    spec: str | None = None
    hash: str | None = None
    val_acc: float | None = None
    latency_ms: float | None = None
    latency_predicted_ms: float | None = None
    latency_measured_ms: float | None = None
    reward: float | None = None
    seconds: float | None = None
    cached: bool = False
    val_top1: float | None = None  # top-1 val accuracy where val_acc is another score (supernet likelihood)
    val_loss: float | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_frozen(cls, trial: FrozenTrial) -> "TrialRecord":
        a = trial.user_attrs
        return cls(number=trial.number, state=trial.state.name, assignment=dict(trial.params),
                   spec=a.get("spec"), hash=a.get("hash"), val_acc=a.get("val_acc"), latency_ms=a.get("latency_ms"),
                   latency_predicted_ms=a.get("latency_predicted_ms"),
                   latency_measured_ms=a.get("latency_measured_ms"), reward=a.get("reward"),
                   seconds=a.get("seconds"), cached=bool(a.get("cached", False)), val_top1=a.get("val_top1"),
                   val_loss=a.get("val_loss"), attrs=dict(a))


def distributions(space: SearchSpace) -> dict[str, CategoricalDistribution]:
    """One categorical Optuna distribution per decision of the space."""
    return {d.name: CategoricalDistribution(list(d.choices)) for d in space.decisions}


def finished_records(study: optuna.Study, states=(TrialState.COMPLETE,)) -> list[TrialRecord]:
    return [TrialRecord.from_frozen(t) for t in study.get_trials(deepcopy=False, states=states)]


def reward_attr(trial: FrozenTrial) -> float | None:
    """The MnasNet reward the loop records on a finished trial (complete, pruned at the accuracy it
    reached, or cached): what ``rl`` and ``evolution`` learn from."""
    return trial.user_attrs.get("reward")


class Strategy:
    """Base class: subclasses set ``name`` and implement ``sampler``.

    ``options`` are strategy settings from the experiment's ``search.options`` (checked against
    ``OPTIONS``, name -> default). ``directions`` are the study's optimisation directions.
    """

    name: ClassVar[str] = "base"
    OPTIONS: ClassVar[dict[str, Any]] = {}

    def __init__(self, space: SearchSpace, study: optuna.Study, seed: int = 0, options: dict | None = None):
        self.check_options(options or {})
        self.space, self.study, self.seed = space, study, seed
        self.options = {**self.OPTIONS, **(options or {})}
        self.decisions = space.decisions
        self.distributions = distributions(space)

    @classmethod
    def check_options(cls, options: dict) -> None:
        """The options are this strategy's, of the right types (:func:`nas.config.check_strategy_options`);
        a strategy adds its own rules."""
        check_strategy_options(cls.name, options)

    @classmethod
    def sampler(cls, seed: int, options: dict, constraints_func=None,
                space: SearchSpace | None = None) -> optuna.samplers.BaseSampler:
        """The sampler the study is created with (``space``: the decisions it will be asked for)."""
        raise NotImplementedError

    def ask(self) -> Proposal:
        trial = self.study.ask()  # an enqueued trial's params (a re-run) take precedence over the sampler's
        assignment = {d.name: trial.suggest_categorical(d.name, list(d.choices)) for d in self.decisions}
        return Proposal(trial, assignment, self.space.decode(assignment))
