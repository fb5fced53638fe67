"""Every search strategy by name (their options: :data:`nas.config.STRATEGY_OPTIONS`); the shared
contract test runs over this registry."""

from __future__ import annotations

from nas.search.base import Strategy
from nas.search.evolution import EvolutionStrategy
from nas.search.optuna_strategies import NSGA2Strategy, RandomStrategy, TPEStrategy
from nas.search.rl import RLStrategy

STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in
                                         (RandomStrategy, TPEStrategy, NSGA2Strategy, RLStrategy, EvolutionStrategy)}
