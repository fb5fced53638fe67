"""Checkpoints holding only plain data: spec JSON, a state dict of tensors and JSON-able metrics.

Loading always uses ``torch.load(weights_only=True)``; anything else is refused, never retried
with full unpickling.
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from nas.errors import NasError
from nas.io import write_atomic

FORMAT = "nas-checkpoint/1"
MAX_CHECKPOINT_BYTES = 2 << 30  # a checkpoint file: 2 GiB (a network within the spec limits is < 1 GiB)


@dataclass
class Checkpoint:
    """A loaded checkpoint: the network spec, its weights and the metrics saved with it."""

    spec: Any
    state_dict: dict[str, torch.Tensor]
    metrics: dict = field(default_factory=dict)


def _plain(metrics: dict | None) -> dict:
    """Metrics reduced to JSON types (str, numbers, bools, None, lists, dicts)."""
    return json.loads(json.dumps(metrics or {}, default=str))


def save_checkpoint(path: str | Path, spec: Any, model: nn.Module, metrics: dict | None = None) -> Path:
    """Write the checkpoint atomically (temporary file in the same folder, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "spec_json": spec.to_json(), "state_dict": state, "metrics": _plain(metrics)}
    return write_atomic(path, lambda handle: torch.save(payload, handle), binary=True)


def _reason(exc: BaseException) -> str:
    """Short cause of a failed weights-only load (torch's advice to unpickle unsafely is dropped)."""
    if isinstance(exc, pickle.UnpicklingError):
        return "it holds Python objects other than tensors and plain data"
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:160]


def check_checkpoint_file(path: Path) -> None:
    """A checkpoint is a regular file of at most :data:`MAX_CHECKPOINT_BYTES`."""
    try:
        size = path.stat().st_size if path.is_file() else None
    except OSError:
        size = None
    if size is None:
        raise NasError(f"checkpoint {path} not found")
    if size > MAX_CHECKPOINT_BYTES:
        raise NasError(f"checkpoint {path} is {size:,} bytes, more than the limit of {MAX_CHECKPOINT_BYTES:,}")


def load_weights_only(path: Path, what: str, reason: str) -> Any:
    """``torch.load(weights_only=True)`` on the CPU: the one place the package reads a torch file.
    Anything but tensors and plain data is refused (``what refused: reason (cause)``), never retried
    with full unpickling."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # UnpicklingError, zip/format errors, ...
        raise NasError(f"{what} {path} refused: {reason} ({_reason(exc)})") from None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`, refusing anything but plain weights."""
    from nas.spec import ArchSpec

    path = Path(path)
    check_checkpoint_file(path)
    payload = load_weights_only(path, "checkpoint", "not a plain weights checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise NasError(f"checkpoint {path} has format {found!r}, expected {FORMAT!r}")
    for key, kind in (("spec_json", str), ("state_dict", dict), ("metrics", dict)):
        if not isinstance(payload.get(key), kind):
            raise NasError(f"checkpoint {path} is missing {key!r} (or it has the wrong type)")
    state = payload["state_dict"]
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise NasError(f"checkpoint {path}: state_dict entry {bad[0]!r} is not a tensor")
    try:
        spec = ArchSpec.from_json(payload["spec_json"])
    except NasError as exc:
        raise NasError(f"checkpoint {path}: invalid spec ({exc})") from None
    return Checkpoint(spec, state, payload["metrics"])


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """NasError naming the first missing, unexpected or mis-shaped key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise NasError(f"{source} does not match the spec: missing key {missing[0]!r} ({len(missing)} missing)")
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise NasError(f"{source} does not match the spec: unexpected key {unexpected[0]!r}")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise NasError(
                f"{source} does not match the spec: {key!r} has shape {tuple(state[key].shape)}, "
                f"the spec needs {tuple(tensor.shape)}"
            )


def load_model(path: str | Path) -> tuple[Any, nn.Module]:
    """(spec, model) with the checkpoint's weights loaded strictly; the model is in eval mode."""
    from nas.models import build_model

    checkpoint = load_checkpoint(path)
    model = build_model(checkpoint.spec)
    check_state_dict(model, checkpoint.state_dict, f"checkpoint {path}")
    model.load_state_dict(checkpoint.state_dict, strict=True)
    model.eval()
    return checkpoint.spec, model
