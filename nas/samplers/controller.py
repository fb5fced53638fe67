"""The MnasNet controller: a recurrent policy over a sequence of categorical decisions, and PPO.

The controller is an LSTM cell that emits one token per decision, in a fixed order; each decision
has its own softmax head and its own embedding that feeds the chosen token into the next step.
:func:`ppo_step` is one update of PPO's clipped objective (Schulman et al., 2017) on a batch of
(tokens, reward, log-probability at sampling time), with a moving-average reward baseline.

Tensors travel as JSON (float32 arrays in base64; never pickle) so the policy can live in a study.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import torch
import torch.nn as nn


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


def ppo_step(policy: Controller, optimizer: torch.optim.Optimizer, tokens: list[list[int]], rewards: list[float],
             old_logp: list[float | None], baseline: float | None, *, epochs: int, clip: float, entropy: float,
             baseline_decay: float) -> float:
    """One PPO update on a batch; returns the new baseline.

    ``old_logp[i]`` is the log-probability of ``tokens[i]`` under the policy that sampled it; None
    (a trial the policy did not sample: enqueued, added by hand, sampled before the space was known)
    takes the current policy's, i.e. an on-policy step for that row."""
    batch = torch.tensor(tokens, dtype=torch.long)
    reward = torch.tensor(rewards, dtype=torch.float32)
    base = float(reward.mean()) if baseline is None else baseline
    advantage = reward - base
    if len(rewards) > 1 and float(advantage.std()) > 0:
        advantage = advantage / (advantage.std() + 1e-8)
    with torch.no_grad():
        current, _ = policy.log_prob(batch)
    old = torch.tensor([current[i].item() if lp is None else lp for i, lp in enumerate(old_logp)])
    for _ in range(epochs):
        logp, ent = policy.log_prob(batch)
        ratio = torch.exp(logp - old)
        surrogate = torch.min(ratio * advantage, torch.clamp(ratio, 1 - clip, 1 + clip) * advantage)
        loss = -surrogate.mean() - entropy * ent.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for r in rewards:
        base = baseline_decay * base + (1 - baseline_decay) * r
    return base


def encode_tensor(t: torch.Tensor) -> dict[str, Any]:
    array = t.detach().to(torch.float32).contiguous().numpy()
    return {"shape": list(array.shape), "data": base64.b64encode(array.tobytes()).decode()}


def decode_tensor(d: dict[str, Any]) -> torch.Tensor:
    array = np.frombuffer(base64.b64decode(d["data"], validate=True), dtype=np.float32).reshape(d["shape"])
    return torch.from_numpy(array.copy())


def policy_state(policy: Controller, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The policy's weights and Adam's moments as JSON-ready dicts."""
    opt = optimizer.state
    return {"policy": {k: encode_tensor(v) for k, v in policy.state_dict().items()},
            "adam": [{"step": float(opt[p]["step"]), "exp_avg": encode_tensor(opt[p]["exp_avg"]),
                      "exp_avg_sq": encode_tensor(opt[p]["exp_avg_sq"])} if p in opt else None
                     for p in policy.parameters()]}


def load_policy_state(policy: Controller, optimizer: torch.optim.Optimizer | None, state: dict[str, Any]) -> None:
    """Inverse of :func:`policy_state` (Adam's moments checked, and loaded when ``optimizer`` is given);
    raises (KeyError, ValueError, RuntimeError...) on a bad state."""
    policy.load_state_dict({k: decode_tensor(v) for k, v in state["policy"].items()})
    params = list(policy.parameters())
    if len(state["adam"]) != len(params):
        raise ValueError("Adam state does not match the policy")
    for p, saved in zip(params, state["adam"]):
        if saved is not None:
            avg, avg_sq = decode_tensor(saved["exp_avg"]), decode_tensor(saved["exp_avg_sq"])
            if avg.shape != p.shape or avg_sq.shape != p.shape:
                raise ValueError("Adam state does not match the policy")
            if optimizer is not None:
                optimizer.state[p] = {"step": torch.tensor(float(saved["step"])), "exp_avg": avg,
                                      "exp_avg_sq": avg_sq}
