"""``evolution``: regularized (aging) evolution, i.e. :class:`nas.samplers.RegularizedEvolutionSampler`
over the space's decisions, selecting on the reward the loop records on every finished trial. The
population is read back from the study (see :mod:`nas.samplers.evolution`)."""

from __future__ import annotations

from nas.config import STRATEGY_OPTIONS
from nas.errors import NasError
from nas.samplers import RegularizedEvolutionSampler
from nas.samplers.evolution import active_decisions
from nas.search.base import Strategy, distributions, reward_attr

__all__ = ["EvolutionStrategy", "active_decisions"]


class EvolutionStrategy(Strategy):
    name = "evolution"
    OPTIONS = STRATEGY_OPTIONS["evolution"]

    @classmethod
    def check_options(cls, options: dict) -> None:
        super().check_options(options)
        try:
            RegularizedEvolutionSampler(seed=0, **{**cls.OPTIONS, **options})
        except ValueError:
            raise NasError("evolution needs integers 1 <= sample <= population") from None

    @classmethod
    def sampler(cls, seed, options, constraints_func=None, space=None):
        return RegularizedEvolutionSampler(seed=seed, search_space=None if space is None else distributions(space),
                                           reward=reward_attr, **{**cls.OPTIONS, **options})
