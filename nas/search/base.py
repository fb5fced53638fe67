"""The strategy port: ``ask() -> Proposal`` / ``tell(proposal, record)``, over an Optuna study.

Every strategy records its trials in one Optuna study, so storages, optuna-dashboard and Optuna's
plots work on every search. A proposal is an Optuna trial (RUNNING in the study) plus the
assignment of the space's decisions that it carries as categorical params. Optuna strategies let
their sampler choose the params; ``rl`` and ``evolution`` choose the assignment themselves and hand
it to the study through :class:`PlannedSampler`. Trials enqueued in the study (the re-run of an
interrupted trial) are asked first and keep their params, whatever the strategy.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, ClassVar

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from nas.errors import NasError
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
    attrs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_frozen(cls, trial: FrozenTrial) -> "TrialRecord":
        a = trial.user_attrs
        return cls(number=trial.number, state=trial.state.name, assignment=dict(trial.params),
                   spec=a.get("spec"), hash=a.get("hash"), val_acc=a.get("val_acc"), latency_ms=a.get("latency_ms"),
                   latency_predicted_ms=a.get("latency_predicted_ms"),
                   latency_measured_ms=a.get("latency_measured_ms"), reward=a.get("reward"),
                   seconds=a.get("seconds"), cached=bool(a.get("cached", False)), attrs=dict(a))


def distributions(space: SearchSpace) -> dict[str, CategoricalDistribution]:
    """One categorical Optuna distribution per decision of the space."""
    return {d.name: CategoricalDistribution(list(d.choices)) for d in space.decisions}


def finished_records(study: optuna.Study, states=(TrialState.COMPLETE,)) -> list[TrialRecord]:
    return [TrialRecord.from_frozen(t) for t in study.get_trials(deepcopy=False, states=states)]


def trial_rng(seed: int, number: int, salt: str = "") -> random.Random:
    """A random generator for one trial number: a resumed search draws what it would have drawn."""
    return random.Random(f"{salt}:{seed}:{number}")


class PlannedSampler(optuna.samplers.BaseSampler):
    """Returns the values a strategy planned for the trial being asked (``plan``); records them only."""

    def __init__(self) -> None:
        self.plan: dict[str, Any] = {}

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        if param_name not in self.plan:
            raise RuntimeError(f"no planned value for {param_name}")
        return self.plan[param_name]


class Strategy:
    """Base class: subclasses set ``name`` and implement ``sampler`` and/or ``propose``.

    ``options`` are strategy settings from the experiment's ``search.options`` (checked against
    ``OPTIONS``, name -> default). ``directions`` are the study's optimisation directions.
    """

    name: ClassVar[str] = "base"
    OPTIONS: ClassVar[dict[str, Any]] = {}
    plans_itself: ClassVar[bool] = True  # the strategy, not the Optuna sampler, chooses assignments

    def __init__(self, space: SearchSpace, study: optuna.Study, seed: int = 0, options: dict | None = None):
        self.check_options(options or {})
        self.space, self.study, self.seed = space, study, seed
        self.options = {**self.OPTIONS, **(options or {})}
        self.decisions = space.decisions
        self.distributions = distributions(space)

    @classmethod
    def check_options(cls, options: dict) -> None:
        unknown = sorted(set(options) - set(cls.OPTIONS))
        if unknown:
            allowed = ", ".join(cls.OPTIONS) or "none"
            raise NasError(f"unknown option {unknown[0]!r} for strategy {cls.name} (allowed: {allowed})")

    @classmethod
    def sampler(cls, seed: int, options: dict, constraints_func=None) -> optuna.samplers.BaseSampler:
        """The sampler the study is created with."""
        return PlannedSampler()

    def propose(self, number: int) -> dict[str, Any]:
        """The assignment for trial ``number`` (strategies that plan themselves)."""
        raise NotImplementedError

    def ask(self) -> Proposal:
        trial = self.study.ask()
        if self.plans_itself and isinstance(self.study.sampler, PlannedSampler):
            # Params of an enqueued trial (a re-run) are fixed and take precedence over the plan.
            self.study.sampler.plan = self.propose(trial.number)
        assignment = {d.name: trial.suggest_categorical(d.name, list(d.choices)) for d in self.decisions}
        return Proposal(trial, assignment, self.space.decode(assignment))

    def tell(self, proposal: Proposal, record: TrialRecord) -> None:
        """Learn from a finished trial (called after the study has recorded it)."""
