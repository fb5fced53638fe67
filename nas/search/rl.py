"""``rl``: MnasNet's recurrent controller trained with PPO, i.e. :class:`nas.samplers.MnasRLSampler`
over the space's decisions (in the space's order), learning from the reward the loop records on
every finished trial (a pruned one at the accuracy it reached). The policy lives in the study; see
:mod:`nas.samplers.rl` for how workers share it and how a resumed search continues it."""

from __future__ import annotations

from nas.config import STRATEGY_OPTIONS
from nas.errors import NasError
from nas.samplers import MnasRLSampler
from nas.search.base import Strategy, distributions, reward_attr


class RLStrategy(Strategy):
    """MnasNet's RL search: the controller samples, PPO learns from the reward."""

    name = "rl"
    OPTIONS = STRATEGY_OPTIONS["rl"]

    @classmethod
    def check_options(cls, options: dict) -> None:
        super().check_options(options)
        try:
            MnasRLSampler(seed=0, **{**cls.OPTIONS, **options})
        except ValueError as exc:
            raise NasError(f"rl option {exc}") from None

    @classmethod
    def sampler(cls, seed, options, constraints_func=None, space=None):
        return MnasRLSampler(seed=seed, search_space=None if space is None else distributions(space),
                             reward=reward_attr, **{**cls.OPTIONS, **options})
