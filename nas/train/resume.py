"""Per-epoch training state for resuming a killed training exactly where its last epoch ended.

The file holds plain data only (tensors, numbers, strings, lists, dicts) and is read with
``torch.load(weights_only=True)``. It is written atomically, so a kill leaves the previous epoch's
state or the new one, never half a file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nas.errors import NasError
from nas.train.checkpoint import load_weights_only
from nas.io import write_atomic

STATE_FORMAT = "nas-train-state/1"
STATE_FILE = "train-state.pt"


@dataclass
class TrainState:
    """Everything the loop needs to continue after ``step`` as if it had never stopped."""

    fingerprint: str
    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict
    torch_rng: torch.Tensor
    data_rng: torch.Tensor
    loss_sum: float = 0.0
    loss_count: int = 0
    images_seen: int = 0
    train_seconds: float = 0.0
    seconds: float = 0.0
    val_acc: float = float("nan")
    history: list[dict] = field(default_factory=list)


def fingerprint(parts: dict) -> str:
    """Short hash of what decides a training's result (config, data, network shapes)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_state(path: str | Path, state: TrainState) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": STATE_FORMAT} | {key: getattr(state, key) for key in TrainState.__dataclass_fields__}
    payload["model"] = {k: v.detach().cpu().contiguous() for k, v in state.model.items()}
    payload["history"] = json.loads(json.dumps(state.history, default=str))
    return write_atomic(path, lambda handle: torch.save(payload, handle), binary=True)


def load_state(path: str | Path) -> TrainState:
    """The state saved at ``path`` (weights-only load); NasError when it is not one."""
    path = Path(path)
    payload = load_weights_only(path, "training state", "not a plain training state")
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise NasError(f"training state {path} has an unknown format; delete it to start over")
    try:
        return TrainState(**{key: payload[key] for key in TrainState.__dataclass_fields__})
    except KeyError as exc:
        raise NasError(f"training state {path} is missing {exc.args[0]!r}; delete it to start over") from None
