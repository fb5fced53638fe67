"""Platform-aware search: strategies are Optuna samplers, all recorded in an Optuna study.

- :mod:`nas.search.base`: the port (``Strategy.sampler(...)``, ``Strategy.ask() -> Proposal``)
  and immutable :class:`TrialRecord`;
- :mod:`nas.search.optuna_strategies`: ``random``, ``tpe``, ``nsga2``;
- :mod:`nas.search.rl`: ``rl``, MnasNet's recurrent controller trained with PPO
  (:class:`nas.samplers.MnasRLSampler`);
- :mod:`nas.search.evolution`: ``evolution``, regularized (aging) evolution
  (:class:`nas.samplers.RegularizedEvolutionSampler`);
- :mod:`nas.search.evaluate`: proxy training + latency of one candidate;
- :mod:`nas.search.study`: opening (creating, resuming, joining) a study, its identity;
- :mod:`nas.search.claims`: the spec-hash claim protocol (no architecture trained twice);
- :mod:`nas.search.loop`: ask -> evaluate -> tell, the baseline;
- :mod:`nas.search.workers`: several worker processes on one study;
- :mod:`nas.search.results`: trials.csv, best spec, Pareto plot, hypervolume;
- :mod:`nas.search.runner`: ``run_search``, the entry point that puts them in order.
"""

from __future__ import annotations

from nas.search.base import Proposal, Strategy, TrialRecord
from nas.search.strategies import STRATEGIES


def __getattr__(name: str):
    # The runner pulls in torch training and plotting; import it only when asked.
    if name in ("run_search", "SearchResult"):
        from nas.search import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'nas.search' has no attribute {name!r}")


__all__ = ["STRATEGIES", "Proposal", "Strategy", "TrialRecord", "run_search", "SearchResult"]
