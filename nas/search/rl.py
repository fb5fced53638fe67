"""The MnasNet controller: a recurrent policy over the space's tokens, trained with PPO.

The controller is an LSTM cell that emits one token per decision of the factorized space, in the
space's order (``s0.depth, s0.width, s0.b0.kernel, ...``); each decision has its own softmax head
and its own embedding that feeds the chosen token into the next step. The reward of each sampled
network (the MnasNet reward) minus a moving-average baseline is the advantage; every ``batch``
rewards the policy takes ``epochs`` steps of PPO's clipped objective (Schulman et al., 2017).

State saved with the study: after every trial the policy, Adam's moments, the baseline and the
unused rewards are stored as JSON (float32 arrays in base64; no pickle) in the study's user
attribute ``rl_state``, so a resumed search, or a worker joining the study, continues the same
policy. Sampling draws from a generator seeded by (seed, trial number).

Several workers (one study, many processes): the study's ``rl_state`` is the one shared policy.
Before sampling, and again on tell, a worker re-loads the latest state and observes every finished
trial not yet in its ``seen`` set (its own and the other workers'), in trial-number order, taking
a PPO step whenever ``batch`` rewards are buffered, then writes the state back. The update is
milliseconds long, so two workers rarely overlap; when they do, the last write wins and the
trials only the losing write had observed are not in the winner's ``seen`` set, so the next sync
observes them again: every reward reaches the policy, at worst one PPO step is recomputed. Each
worker samples from the latest policy, with its own trial number's seed (so workers do not draw
the same network).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from nas.errors import NasError
from nas.search.base import Proposal, Strategy, TrialRecord, finished_records, trial_rng

STATE_ATTR = "rl_state"


class _OneThread:
    """The controller's tensors are tiny: one torch thread avoids thread start-up and contention."""

    def __enter__(self) -> None:
        self.saved = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.saved)


class Controller(nn.Module):
    """LSTM policy over a sequence of categorical decisions with ``choice_counts`` options each."""

    def __init__(self, choice_counts: list[int], hidden: int = 32):
        super().__init__()
        self.choice_counts = list(choice_counts)
        self.start = nn.Parameter(torch.zeros(1, hidden))
        self.cell = nn.LSTMCell(hidden, hidden)
        self.embed = nn.ModuleList(nn.Embedding(n, hidden) for n in choice_counts)
        self.heads = nn.ModuleList(nn.Linear(hidden, n) for n in choice_counts)

    def _steps(self, batch: int):
        """Yield (decision index, logits) while the caller feeds back tokens via ``send``."""
        x = self.start.expand(batch, -1)
        state = None
        for i, head in enumerate(self.heads):
            h, c = self.cell(x, state)
            state = (h, c)
            tokens = yield i, head(h)
            x = self.embed[i](tokens)

    @torch.no_grad()
    def sample(self, generator: torch.Generator) -> list[int]:
        tokens: list[int] = []
        steps = self._steps(1)
        i, logits = next(steps)
        while True:
            token = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).view(1)
            tokens.append(int(token))
            try:
                i, logits = steps.send(token)
            except StopIteration:
                return tokens

    def log_prob(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability and entropy of each row of ``tokens`` (batch, decisions)."""
        logp = torch.zeros(tokens.shape[0])
        entropy = torch.zeros(tokens.shape[0])
        steps = self._steps(tokens.shape[0])
        i, logits = next(steps)
        while True:
            log_softmax = torch.log_softmax(logits, dim=-1)
            logp = logp + log_softmax.gather(1, tokens[:, i:i + 1]).squeeze(1)
            entropy = entropy - (log_softmax.exp() * log_softmax).sum(dim=1)
            try:
                i, logits = steps.send(tokens[:, i])
            except StopIteration:
                return logp, entropy


def _encode(t: torch.Tensor) -> dict:
    array = t.detach().to(torch.float32).contiguous().numpy()
    return {"shape": list(array.shape), "data": base64.b64encode(array.tobytes()).decode()}


def _decode(d: dict) -> torch.Tensor:
    array = np.frombuffer(base64.b64decode(d["data"]), dtype=np.float32).reshape(d["shape"])
    return torch.from_numpy(array.copy())


class RLStrategy(Strategy):
    """MnasNet's RL search: the controller samples, PPO learns from the reward."""

    name = "rl"
    OPTIONS = {"hidden": 32, "lr": 0.01, "batch": 5, "epochs": 4, "clip": 0.2, "baseline_decay": 0.8,
               "entropy": 0.001}

    @classmethod
    def check_options(cls, options: dict) -> None:
        super().check_options(options)
        opts = {**cls.OPTIONS, **options}
        for key in ("hidden", "batch", "epochs"):
            if not isinstance(opts[key], int) or isinstance(opts[key], bool) or opts[key] < 1:
                raise NasError(f"rl option {key} must be a positive integer, got {opts[key]!r}")
        for key in ("lr", "clip"):
            if not isinstance(opts[key], (int, float)) or not opts[key] > 0:
                raise NasError(f"rl option {key} must be > 0, got {opts[key]!r}")
        if not 0 <= opts["baseline_decay"] < 1:
            raise NasError(f"rl option baseline_decay must be in [0, 1), got {opts['baseline_decay']!r}")

    def __init__(self, space, study, seed=0, options=None):
        super().__init__(space, study, seed, options)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.policy = Controller([len(d.choices) for d in self.decisions], self.options["hidden"])
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.options["lr"])
        self.baseline: float | None = None
        self.buffer: list[tuple[list[int], float]] = []
        self.seen: set[int] = set()
        self.updates = 0
        self._load()
        for record in finished_records(self.study):  # trials told before the last save (a crash)
            if record.number not in self.seen:
                self._observe(record)
        self._save()

    # -- the port --
    def propose(self, number: int) -> dict[str, Any]:
        self._sync()
        generator = torch.Generator().manual_seed(trial_rng(self.seed, number, "rl").getrandbits(62))
        with _OneThread():
            tokens = self.policy.sample(generator)
        return {d.name: d.choices[t] for d, t in zip(self.decisions, tokens)}

    def tell(self, proposal: Proposal, record: TrialRecord) -> None:
        self._sync()
        if record.number not in self.seen:
            self._observe(record)
        self._save()

    def _sync(self) -> None:
        """Take the latest policy from the study and learn from the finished trials it has not seen
        (other workers' trials; nothing new with one process)."""
        self._load()
        new = [r for r in finished_records(self.study) if r.number not in self.seen]
        for record in sorted(new, key=lambda r: r.number):
            self._observe(record)

    # -- learning --
    def _tokens(self, assignment: dict[str, Any]) -> list[int]:
        return [list(d.choices).index(assignment[d.name]) for d in self.decisions]

    def _observe(self, record: TrialRecord) -> None:
        self.seen.add(record.number)
        if record.state != "COMPLETE" or record.reward is None:
            return
        self.buffer.append((self._tokens(record.assignment), float(record.reward)))
        if len(self.buffer) >= self.options["batch"]:
            with _OneThread():
                self._update()

    def _update(self) -> None:
        tokens = torch.tensor([t for t, _ in self.buffer], dtype=torch.long)
        rewards = torch.tensor([r for _, r in self.buffer], dtype=torch.float32)
        baseline = float(rewards.mean()) if self.baseline is None else self.baseline
        advantage = rewards - baseline
        if len(self.buffer) > 1 and float(advantage.std()) > 0:
            advantage = advantage / (advantage.std() + 1e-8)
        with torch.no_grad():
            old_logp, _ = self.policy.log_prob(tokens)
        clip = self.options["clip"]
        for _ in range(self.options["epochs"]):
            logp, entropy = self.policy.log_prob(tokens)
            ratio = torch.exp(logp - old_logp)
            surrogate = torch.min(ratio * advantage, torch.clamp(ratio, 1 - clip, 1 + clip) * advantage)
            loss = -surrogate.mean() - self.options["entropy"] * entropy.mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        decay = self.options["baseline_decay"]
        for r in rewards.tolist():
            baseline = decay * baseline + (1 - decay) * r
        self.baseline = baseline
        self.buffer = []
        self.updates += 1

    # -- state in the study --
    def state(self) -> dict[str, Any]:
        params = list(self.policy.parameters())
        opt = self.optimizer.state
        return {
            "format": "nas-rl-state/1",
            "decisions": [d.name for d in self.decisions],
            "hidden": self.options["hidden"],
            "policy": {k: _encode(v) for k, v in self.policy.state_dict().items()},
            "adam": [{"step": float(opt[p]["step"]), "exp_avg": _encode(opt[p]["exp_avg"]),
                      "exp_avg_sq": _encode(opt[p]["exp_avg_sq"])} if p in opt else None for p in params],
            "baseline": self.baseline,
            "buffer": self.buffer,
            "seen": sorted(self.seen),
            "updates": self.updates,
        }

    def _save(self) -> None:
        self.study.set_user_attr(STATE_ATTR, self.state())

    def _load(self) -> None:
        state = self.study.user_attrs.get(STATE_ATTR)
        if state is None:
            return
        if state.get("decisions") != [d.name for d in self.decisions] or state.get("hidden") != self.options["hidden"]:
            raise NasError("the study's saved RL controller was made for another space or hidden size")
        self.policy.load_state_dict({k: _decode(v) for k, v in state["policy"].items()})
        for p, saved in zip(self.policy.parameters(), state["adam"]):
            if saved is not None:
                self.optimizer.state[p] = {"step": torch.tensor(saved["step"]), "exp_avg": _decode(saved["exp_avg"]),
                                           "exp_avg_sq": _decode(saved["exp_avg_sq"])}
        self.baseline = state["baseline"]
        self.buffer = [(list(t), float(r)) for t, r in state["buffer"]]
        self.seen = set(state["seen"])
        self.updates = state["updates"]
