"""Optuna's samplers as strategies: ``random``, ``tpe`` and ``nsga2``.

The sampler chooses every decision through ``trial.suggest_categorical``; nothing else to do.
TPE and NSGA-II handle one objective (the reward) or two (accuracy up, latency down) and, with
``search.constraint``, the latency target as an Optuna constraint (``latency - T <= 0``).
"""

from __future__ import annotations

import optuna

from nas.config import STRATEGY_OPTIONS
from nas.search.base import Strategy


class RandomStrategy(Strategy):
    """Uniform sampling of every decision (the reference every strategy must beat)."""

    name = "random"

    @classmethod
    def sampler(cls, seed, options, constraints_func=None, space=None):
        return optuna.samplers.RandomSampler(seed=seed)


class TPEStrategy(Strategy):
    """Tree-structured Parzen estimator (multivariate), random for the first ``n_startup_trials``."""

    name = "tpe"
    OPTIONS = STRATEGY_OPTIONS["tpe"]

    @classmethod
    def sampler(cls, seed, options, constraints_func=None, space=None):
        opts = {**cls.OPTIONS, **options}
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=opts["n_startup_trials"],
                                          multivariate=opts["multivariate"], constraints_func=constraints_func)


class NSGA2Strategy(Strategy):
    """NSGA-II: the multi-objective genetic algorithm (also runs on one objective)."""

    name = "nsga2"
    OPTIONS = STRATEGY_OPTIONS["nsga2"]

    @classmethod
    def sampler(cls, seed, options, constraints_func=None, space=None):
        opts = {**cls.OPTIONS, **options}
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=opts["population_size"],
                                             mutation_prob=opts["mutation_prob"],
                                             crossover_prob=opts["crossover_prob"], constraints_func=constraints_func)
