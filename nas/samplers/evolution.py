"""``RegularizedEvolutionSampler``: regularized (aging) evolution (Real et al., 2019) as an Optuna sampler.

    study = optuna.create_study(sampler=RegularizedEvolutionSampler(seed=0, population=10, sample=3))
    study.optimize(objective, n_trials=50)   # objective suggests categoricals

The population is read from the study, never kept in memory: the last ``population`` finished
trials (by number, before the trial being sampled) that have a reward and a choice for every
decision of the space (see :mod:`nas.samplers._base`: COMPLETE trials, and PRUNED ones at the
value they reached). The oldest dies first, whatever its reward. Until the population is full,
trials are uniform samples. Then each trial draws ``sample`` members, takes the one with the
highest reward as parent and changes exactly one decision that matters (a block past its stage's
depth does not, for the ``s{i}.b{j}.*`` / ``s{i}.depth`` names of a ``nas`` space), so the child
is a new network. The parent's number goes in the trial's system attribute
``nas:evolution:parent``.

Every draw comes from a generator seeded by (seed, trial number), so workers sharing the study
draw differently and a resumed study draws what it would have. The only stored state is the
space the population was made for (system attribute ``nas:evolution``), so a study whose space
changed, or whose stored state is corrupt, is a ``NasError`` and nothing is written.
"""

from __future__ import annotations

import random
import re
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial

from nas.samplers import optuna_private as private
from nas.samplers._base import FINISHED, CategoricalSampler, RewardFn, space_signature, trial_rng

PARENT_ATTR = "nas:evolution:parent"
_BLOCK = re.compile(r"^(s\d+)\.b(\d+)\.[^.]+$")


def active_decisions(assignment: dict[str, Any], names: list[str]) -> list[str]:
    """Decisions that change the network: all, except a block's (``s{i}.b{j}.*``) past its stage's
    depth (``s{i}.depth`` in the assignment)."""
    out = []
    for name in names:
        match = _BLOCK.match(name)
        if match is not None:
            depth = assignment.get(f"{match.group(1)}.depth")
            if isinstance(depth, int) and int(match.group(2)) >= depth:
                continue
        out.append(name)
    return out


def mutate(assignment: dict[str, Any], space: dict[str, CategoricalDistribution], rng: random.Random) -> dict[str, Any]:
    """``assignment`` with one decision that matters changed to another of its choices."""
    names = [n for n in active_decisions(assignment, list(space)) if len(space[n].choices) > 1]
    if not names:
        return dict(assignment)
    name = rng.choice(names)
    child = dict(assignment)
    child[name] = rng.choice([c for c in space[name].choices if c != assignment[name]])
    return child


class RegularizedEvolutionSampler(CategoricalSampler):
    """Aging evolution over a study's categorical parameters.

    Args:
        seed: seeds every trial's draws (with the trial number).
        population: how many of the latest rewarded trials are alive.
        sample: tournament size (members drawn to pick the parent), ``1 <= sample <= population``.
        search_space: name -> ``CategoricalDistribution`` (default: inferred from the study).
        reward: function of the finished ``FrozenTrial`` -> float (default: see ``nas.samplers._base``).
    """

    NAME = "RegularizedEvolutionSampler"
    STATE_KEY = "nas:evolution"
    FORMAT = "nas-evolution/1"

    def __init__(self, *, seed: int | None = None, population: int = 10, sample: int = 3,
                 search_space: dict[str, BaseDistribution] | None = None, reward: RewardFn | None = None,
                 warn_independent_sampling: bool = True) -> None:
        super().__init__(seed=seed, search_space=search_space, reward=reward,
                         warn_independent_sampling=warn_independent_sampling)
        if not (isinstance(population, int) and isinstance(sample, int) and not isinstance(population, bool)
                and not isinstance(sample, bool) and 1 <= sample <= population):
            raise ValueError(f"evolution needs integers 1 <= sample <= population, got sample={sample!r}, "
                             f"population={population!r}")
        self.population, self.sample = population, sample

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        space = self.current_space(study, search_space)
        if not space:
            return {}
        self._check_objectives(study)
        state = self.stored_state(study)
        self.check_space(study, state, space)
        if state is None:
            self.write_state(study, {"format": self.FORMAT, "space": space_signature(space)})
        rng = trial_rng(self._seed, trial.number, "evolution")
        alive = self.members(study, space, trial.number, self.population)
        if len(alive) < self.population:
            return {name: rng.choice(dist.choices) for name, dist in space.items()}
        number, params, _ = max(rng.sample(alive, self.sample), key=lambda m: (m[2], -m[0]))
        private.set_trial_system_attr(study, trial, PARENT_ATTR, number)
        return mutate(params, space, rng)

    def members(self, study: optuna.Study, space: dict[str, CategoricalDistribution], before: int, most: int
                ) -> list[tuple[int, dict[str, Any], float]]:
        """(number, params, reward) of the latest ``most`` finished, rewarded trials numbered below ``before``,
        oldest first. The study is read newest first, so a long study costs no more per sample than a short one."""
        out = []
        for t in sorted(study.get_trials(deepcopy=False, states=FINISHED), key=lambda t: -t.number):
            if len(out) == most:
                break
            if t.number >= before or self.tokens(t, space) is None:
                continue
            reward = self.reward(study, t)
            if reward is not None:
                out.append((t.number, {n: t.params[n] for n in space}, reward))
        return out[::-1]
