"""Optuna samplers for architecture search, usable on any Optuna study.

- :class:`MnasRLSampler`: MnasNet's recurrent controller trained with PPO (:mod:`nas.samplers.rl`);
- :class:`RegularizedEvolutionSampler`: aging evolution (:mod:`nas.samplers.evolution`).

Both sample a study's categorical parameters, keep their state in the study (so workers on one
storage share it and a resumed study continues it) and pass Optuna's sampler test suite::

    import optuna
    from nas.samplers import MnasRLSampler

    study = optuna.create_study(sampler=MnasRLSampler(seed=0))
    study.optimize(objective, n_trials=50)

Every private Optuna API the package uses is in :mod:`nas.samplers.optuna_private`.
"""

from __future__ import annotations

from nas.samplers.evolution import RegularizedEvolutionSampler
from nas.samplers.rl import MnasRLSampler

__all__ = ["MnasRLSampler", "RegularizedEvolutionSampler"]
