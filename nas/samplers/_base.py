"""What both samplers share: their categorical search space, the reward of a trial, the fallback
for other distributions, and their state in the study.

Search space: ``search_space=`` (name -> ``CategoricalDistribution``, in the order the decisions
are made), or, without it, the categorical parameters every finished trial of the study has with
the same choices (Optuna's :class:`~optuna.search_space.IntersectionSearchSpace`, by name). Until a
trial has finished that inferred space is empty, and the first trial is sampled uniformly.
Categoricals outside the space (conditional ones) are sampled uniformly; other distributions go to
an independent :class:`~optuna.samplers.RandomSampler`, with one warning per sampler.

Reward (what RL maximises, what evolution selects on): ``reward=`` (a function of the
:class:`~optuna.trial.FrozenTrial`), or by default the objective value (negated when minimised)
of a COMPLETE trial and, for a PRUNED trial, its last reported intermediate value (the accuracy it
reached when the pruner stopped it). A pruned trial that reported nothing, a FAIL trial, and a
NaN or infinite reward give no reward. With several objectives, ``reward=`` is required.

State: a JSON, versioned system attribute of the study (``nas:<sampler>``) with the space it was
made for; a state that does not parse, has another format or another space is a ``NasError``
and nothing is written.
"""

from __future__ import annotations

import copy
import json
import math
import random
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from nas.errors import NasError
from nas.samplers import optuna_private as private

RewardFn = Callable[[FrozenTrial], "float | None"]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def space_signature(space: dict[str, CategoricalDistribution]) -> list[list[Any]]:
    """The space as JSON: ``[[name, [choices...]], ...]`` in decision order."""
    return json.loads(json.dumps([[name, list(d.choices)] for name, d in space.items()]))


def signature_space(signature: Any) -> dict[str, CategoricalDistribution]:
    if not isinstance(signature, list) or not all(isinstance(e, list) and len(e) == 2 and isinstance(e[0], str)
                                                  and isinstance(e[1], list) and e[1] for e in signature):
        raise ValueError("space is not a list of [name, choices]")
    return {name: CategoricalDistribution(choices) for name, choices in signature}


def default_reward(study: optuna.Study, trial: FrozenTrial) -> float | None:
    """The objective value of a COMPLETE trial, the last intermediate value of a PRUNED one
    (negated when the objective is minimised); None when there is none."""
    if len(study.directions) != 1:
        raise ValueError("with several objectives, pass reward= (a function of the FrozenTrial)")
    if trial.state == TrialState.COMPLETE:
        value = trial.value
    elif trial.state == TrialState.PRUNED and trial.intermediate_values:
        value = trial.intermediate_values[max(trial.intermediate_values)]
    else:
        return None
    return value if study.direction == StudyDirection.MAXIMIZE else -value


def finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def with_outcome(trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> FrozenTrial:
    """A copy of the trial being told (still RUNNING in the storage) with its final state and values."""
    told = copy.copy(trial)
    told.state = state
    told.values = None if values is None or state != TrialState.COMPLETE else list(values)
    return told


def trial_rng(seed: int, number: int, salt: str) -> random.Random:
    """A random generator for one trial number: a resumed study or another worker draws the same."""
    return random.Random(f"{salt}:{seed}:{number}")


class CategoricalSampler(BaseSampler):
    """Base class: a sampler whose own decisions are the categorical parameters of one space."""

    NAME: ClassVar[str] = "categorical"
    STATE_KEY: ClassVar[str] = "nas:categorical"
    FORMAT: ClassVar[str] = "nas-categorical/1"

    def __init__(self, *, seed: int | None = None, search_space: dict[str, BaseDistribution] | None = None,
                 reward: RewardFn | None = None, warn_independent_sampling: bool = True) -> None:
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        self._seed = seed if seed is not None else int(np.random.SeedSequence().entropy % (2 ** 31))
        self._random = RandomSampler(seed=seed)
        self._space = None if search_space is None else self._check_space(search_space)
        self._reward_fn = reward
        self._warn_independent = warn_independent_sampling
        self._warned = False
        self._lock = threading.Lock()
        self._intersections: dict[int, IntersectionSearchSpace] = {}

    @staticmethod
    def _check_space(space: dict[str, BaseDistribution]) -> dict[str, CategoricalDistribution]:
        if not isinstance(space, dict) or not space:
            raise ValueError("search_space must be a non-empty dict of name -> CategoricalDistribution")
        for name, dist in space.items():
            if not isinstance(dist, CategoricalDistribution):
                raise ValueError(f"search_space[{name!r}] is {type(dist).__name__}; only categoricals are sampled")
        return {name: dist for name, dist in space.items() if len(dist.choices) > 1}

    # -- the search space --
    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        if self._space is not None:
            return dict(self._space)
        with self._lock:
            key = id(study)
            if key not in self._intersections:
                self._intersections[key] = IntersectionSearchSpace(include_pruned=True)
            space = self._intersections[key].calculate(study)
        return {name: d for name, d in space.items() if isinstance(d, CategoricalDistribution) and len(d.choices) > 1}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        if not isinstance(param_distribution, CategoricalDistribution) and self._warn_independent:
            with self._lock:
                first, self._warned = not self._warned, True
            if first:
                warnings.warn(f"{self.NAME} samples categorical parameters only; {param_name!r} "
                              f"({type(param_distribution).__name__}) and every other non-categorical parameter "
                              "are sampled by an independent RandomSampler (warn_independent_sampling=False "
                              "silences this warning)", UserWarning, stacklevel=2)
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        self._random.reseed_rng()

    # -- rewards --
    def reward(self, study: optuna.Study, trial: FrozenTrial) -> float | None:
        """The trial's reward (see the module doc), or None."""
        if trial.state not in FINISHED:
            return None
        if self._reward_fn is not None:
            return finite(self._reward_fn(trial))
        return finite(default_reward(study, trial))

    def _check_objectives(self, study: optuna.Study) -> None:
        if len(study.directions) > 1 and self._reward_fn is None:
            raise ValueError(f"{self.NAME} on a study with {len(study.directions)} objectives needs reward= "
                             "(a function of the FrozenTrial returning one float)")

    @staticmethod
    def tokens(trial: FrozenTrial, space: dict[str, CategoricalDistribution]) -> list[int] | None:
        """The index of the trial's choice for each decision of the space (None: it lacks one)."""
        out = []
        for name, dist in space.items():
            if name not in trial.params or trial.distributions.get(name) != dist:
                return None
            out.append(dist.choices.index(trial.params[name]))
        return out

    # -- state in the study --
    def stored_state(self, study: optuna.Study) -> dict[str, Any] | None:
        """The study's state for this sampler (a JSON copy), checked; None if there is none."""
        raw = private.study_system_attrs(study).get(self.STATE_KEY)
        if raw is None:
            return None
        try:
            state = json.loads(json.dumps(raw))
            if not isinstance(state, dict) or state.get("format") != self.FORMAT:
                raise ValueError(f"format is {state.get('format') if isinstance(state, dict) else state!r}, "
                                 f"expected {self.FORMAT}")
            signature_space(state.get("space"))
            self.validate_state(state)
        except (ValueError, TypeError, KeyError, AttributeError, RuntimeError) as exc:
            raise NasError(f"study {study.study_name!r}: the stored {self.NAME} state ({self.STATE_KEY}) is corrupt "
                           f"({exc}); nothing was changed. Delete the attribute or use a new study.") from None
        return state

    def validate_state(self, state: dict[str, Any]) -> None:
        """Sampler-specific checks of a stored state (raise ValueError/KeyError/TypeError)."""

    def check_space(self, study: optuna.Study, state: dict[str, Any] | None,
                    space: dict[str, CategoricalDistribution]) -> None:
        """A NasError if the stored state was made for another space."""
        if state is None or state["space"] == space_signature(space):
            return
        stored = signature_space(state["space"])
        changed = [n for n in space if n in stored and stored[n] != space[n]]
        added, removed = [n for n in space if n not in stored], [n for n in stored if n not in space]
        parts = [f"{label}: {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}"
                 for label, names in (("changed", changed), ("new", added), ("gone", removed)) if names]
        if not parts:
            parts = ["same parameters in another order"]
        raise NasError(f"study {study.study_name!r}: the search space changed since its {self.NAME} state was "
                       f"made ({'; '.join(parts)}); nothing was changed. Use a new study for the new space.")

    def check(self, study: optuna.Study) -> None:
        """Check the study's stored state against this sampler (a NasError if it cannot continue it);
        with ``search_space=`` also the space. Writes nothing."""
        state = self.stored_state(study)
        if self._space is not None:
            self.check_space(study, state, self._space)

    def write_state(self, study: optuna.Study, state: dict[str, Any]) -> None:
        private.set_study_system_attr(study, self.STATE_KEY, json.loads(json.dumps(state)))

    def current_space(self, study: optuna.Study, search_space: dict[str, BaseDistribution]
                      ) -> dict[str, CategoricalDistribution]:
        return {n: d for n, d in search_space.items() if isinstance(d, CategoricalDistribution) and len(d.choices) > 1}
