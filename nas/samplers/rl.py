"""``MnasRLSampler``: MnasNet's recurrent controller trained with PPO, as an Optuna sampler.

    study = optuna.create_study(sampler=MnasRLSampler(seed=0))
    study.optimize(objective, n_trials=50)   # objective suggests categoricals

Sampling: the controller (:mod:`nas.samplers.controller`) emits one token per decision of the
categorical space (see :mod:`nas.samplers._base`), from a generator seeded by (seed, trial
number), so workers sharing a study draw different networks and a resumed study draws what it
would have. The tokens, their log-probability under the policy that drew them and that policy's
version go in the trial's system attribute ``nas:mnas_rl:sample``.

Learning: every finished trial with a reward (COMPLETE, and PRUNED at the value it reached) is
used once. Before each sample and after each trial, the sampler reads the policy from the study;
once ``batch`` finished trials are not yet in its ``seen`` list (lowest numbers first), it takes
``epochs`` PPO steps on them, with the log-probabilities recorded at sampling time as PPO's
old log-probabilities (a trial the policy did not draw, e.g. an enqueued re-run, uses the current
policy's), and writes the new policy back.

Shared state and compare-and-swap: the study's system attribute ``nas:mnas_rl`` holds the policy,
Adam's moments, the reward baseline, the ``seen`` trial numbers and a ``version`` counter. A
writer computes its update from version ``v``, re-reads the attribute and writes ``v + 1`` only if
the version is still ``v``; otherwise it drops its update and starts again from the newer policy.
Optuna's storages have no atomic compare-and-swap, so a write can still land in the
microseconds between another worker's re-read and write. What is lost then is one PPO step, never
a reward: the trials of the overwritten update are not in the surviving ``seen`` list, so the next
update learns from them. Optuna stores a trial's state after the sampler's ``after_trial``, so when
two workers' last trials finish together each sees the other's still running, and a last batch can
wait for the study's next sample (a resumed study learns from it first).
"""

from __future__ import annotations

from typing import Any

import optuna
import torch
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from nas.samplers import optuna_private as private
from nas.samplers._base import (FINISHED, CategoricalSampler, RewardFn, signature_space, space_signature, trial_rng,
                                with_outcome)
from nas.samplers.controller import Controller, load_policy_state, policy_state, ppo_step
from nas.threads import torch_threads

SAMPLE_ATTR = "nas:mnas_rl:sample"
MAX_ATTEMPTS = 5  # compare-and-swap retries before an update is left to the next sync


class MnasRLSampler(CategoricalSampler):
    """MnasNet's RL controller (LSTM policy, PPO) over a study's categorical parameters.

    Args:
        seed: seeds the initial policy and every trial's draw (with the trial number).
        search_space: name -> ``CategoricalDistribution`` in decision order (default: inferred).
        reward: function of the finished ``FrozenTrial`` -> float (default: see ``nas.samplers._base``).
        hidden, lr, batch, epochs, clip, baseline_decay, entropy: the controller and PPO settings.
    """

    NAME = "MnasRLSampler"
    STATE_KEY = "nas:mnas_rl"
    FORMAT = "nas-mnas-rl/1"

    def __init__(self, *, seed: int | None = None, search_space: dict[str, BaseDistribution] | None = None,
                 reward: RewardFn | None = None, hidden: int = 32, lr: float = 0.01, batch: int = 5, epochs: int = 4,
                 clip: float = 0.2, baseline_decay: float = 0.8, entropy: float = 0.001,
                 warn_independent_sampling: bool = True) -> None:
        super().__init__(seed=seed, search_space=search_space, reward=reward,
                         warn_independent_sampling=warn_independent_sampling)
        for key, value in (("hidden", hidden), ("batch", batch), ("epochs", epochs)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        for key, value in (("lr", lr), ("clip", clip)):
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{key} must be > 0, got {value!r}")
        if not isinstance(baseline_decay, (int, float)) or not 0 <= baseline_decay < 1:
            raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay!r}")
        if not isinstance(entropy, (int, float)) or entropy < 0:
            raise ValueError(f"entropy must be >= 0, got {entropy!r}")
        self.hidden, self.lr, self.batch, self.epochs = hidden, float(lr), batch, epochs
        self.clip, self.baseline_decay, self.entropy = float(clip), float(baseline_decay), float(entropy)

    # -- Optuna's sampler interface --
    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        space = self.current_space(study, search_space)
        if not space:
            return {}
        self._check_objectives(study)
        state = self.sync(study, space)
        policy, _ = self._restore(state, space)
        generator = torch.Generator().manual_seed(trial_rng(self._seed, trial.number, "rl").getrandbits(62))
        with torch_threads(1):  # the controller's tensors are tiny: one thread avoids start-up and contention
            tokens = policy.sample(generator)
            with torch.no_grad():
                logp = float(policy.log_prob(torch.tensor([tokens]))[0][0])
        version = state["version"] if state is not None else 0
        private.set_trial_system_attr(study, trial, SAMPLE_ATTR, {"tokens": tokens, "logp": logp, "version": version})
        return {name: dist.choices[t] for (name, dist), t in zip(space.items(), tokens)}

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values) -> None:
        if state not in FINISHED:
            return
        space = self.current_space(study, self.infer_relative_search_space(study, trial))
        if space and (len(study.directions) == 1 or self._reward_fn is not None):
            self.sync(study, space, with_outcome(trial, state, values))

    # -- the policy --
    def _fresh(self, space: dict[str, CategoricalDistribution]) -> Controller:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seed)
            return Controller([len(d.choices) for d in space.values()], self.hidden)

    def _restore(self, state: dict[str, Any] | None, space, optimizer: bool = False
                 ) -> tuple[Controller, torch.optim.Adam | None]:
        """The stored policy (a fresh one without a state), with Adam's state if ``optimizer``."""
        policy = self._fresh(space)
        adam = torch.optim.Adam(policy.parameters(), lr=self.lr) if optimizer else None
        if state is not None:
            load_policy_state(policy, adam, state)
        return policy, adam

    def validate_state(self, state: dict[str, Any]) -> None:
        if state.get("hidden") != self.hidden:
            raise ValueError(f"it was made with hidden={state.get('hidden')!r}, this sampler has hidden={self.hidden}")
        for key in ("version", "updates"):
            if not isinstance(state.get(key), int) or state[key] < 0:
                raise ValueError(f"{key} is {state.get(key)!r}")
        if not isinstance(state.get("seen"), list) or not all(isinstance(n, int) for n in state["seen"]):
            raise ValueError("seen is not a list of trial numbers")
        if state.get("baseline") is not None and not isinstance(state["baseline"], (int, float)):
            raise ValueError("baseline is not a number")
        self._restore(state, signature_space(state["space"]))  # weights of the right shapes, valid base64

    def load(self, study: optuna.Study, space: dict[str, CategoricalDistribution]) -> dict[str, Any] | None:
        state = self.stored_state(study)
        self.check_space(study, state, space)
        return state

    # -- learning --
    def pending(self, study: optuna.Study, space, seen: set[int], extra: FrozenTrial | None
                ) -> list[tuple[int, list[int], float, float | None]]:
        """(number, tokens, reward, logp at sampling) of the finished trials not yet learned from."""
        trials = {t.number: t for t in study.get_trials(deepcopy=False, states=FINISHED)}
        if extra is not None:
            trials[extra.number] = extra
        out = []
        for number in sorted(set(trials) - seen):
            trial = trials[number]
            tokens = self.tokens(trial, space)
            reward = self.reward(study, trial) if tokens is not None else None
            if reward is None:
                continue
            sample = trial.system_attrs.get(SAMPLE_ATTR)
            logp = sample["logp"] if isinstance(sample, dict) and sample.get("tokens") == tokens else None
            out.append((number, tokens, reward, logp))
        return out

    def sync(self, study: optuna.Study, space: dict[str, CategoricalDistribution],
             extra: FrozenTrial | None = None) -> dict[str, Any] | None:
        """Learn from the finished trials the stored policy has not seen (PPO steps of ``batch``
        trials), write the policy under the version check; returns the latest state."""
        state = self.load(study, space)
        for _ in range(MAX_ATTEMPTS):
            seen = set(state["seen"]) if state is not None else set()
            pending = self.pending(study, space, seen, extra)
            if len(pending) < self.batch:
                return state
            new = self._learn(state, space, pending)
            latest = self.load(study, space)
            if (latest["version"] if latest else 0) == (state["version"] if state else 0):
                self.write_state(study, new)
                return new
            state = latest  # another worker updated the policy meanwhile: start again from its
        return state

    def _learn(self, state: dict[str, Any] | None, space, pending) -> dict[str, Any]:
        policy, optimizer = self._restore(state, space, optimizer=True)
        baseline = state["baseline"] if state is not None else None
        seen = list(state["seen"]) if state is not None else []
        updates = state["updates"] if state is not None else 0
        with torch_threads(1):  # the controller's tensors are tiny: one thread avoids start-up and contention
            while len(pending) >= self.batch:
                batch, pending = pending[:self.batch], pending[self.batch:]
                baseline = ppo_step(policy, optimizer, [b[1] for b in batch], [b[2] for b in batch],
                                    [b[3] for b in batch], baseline, epochs=self.epochs, clip=self.clip,
                                    entropy=self.entropy, baseline_decay=self.baseline_decay)
                seen.extend(b[0] for b in batch)
                updates += 1
        return {"format": self.FORMAT, "version": (state["version"] if state is not None else 0) + 1,
                "space": space_signature(space), "hidden": self.hidden, **policy_state(policy, optimizer),
                "baseline": baseline, "seen": sorted(seen), "updates": updates}
