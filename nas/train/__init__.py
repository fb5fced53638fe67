"""Training on CPU: the loop (:func:`train`), accuracy (:func:`evaluate`) and loss (:func:`validate`), safe
checkpoints, and :func:`train_network`, which goes from a spec to a trained, tested and saved network."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nas.data import DataSplits, ImageDataset, load_data
from nas.errors import NasError
from nas.io import write_text_atomic
from nas.train.checkpoint import Checkpoint, check_state_dict, load_checkpoint, load_model, save_checkpoint
from nas.train.resume import STATE_FILE
from nas.train.trainer import TrainConfig, TrainResult, Validation, evaluate, lr_at, train, validate


@dataclass
class TrainReport:
    """Result of :func:`train_network`; ``metrics`` is what ``metrics.json`` holds."""

    spec: Any
    model: torch.nn.Module
    result: TrainResult
    metrics: dict = field(default_factory=dict)
    out: Path | None = None


def check_spec_matches(spec: Any, data: ImageDataset, name: str = "the dataset") -> None:
    """NasError when the spec's input channels, resolution or classes differ from the data's."""
    height, width = data.resolution
    want = (data.in_channels, height, data.num_classes)
    have = (spec.in_channels, spec.resolution, spec.num_classes)
    if height != width or want != have:
        raise NasError(
            f"spec is for {have[1]}x{have[1]}x{have[0]} inputs and {have[2]} classes but {name} has "
            f"{height}x{width}x{want[0]} images and {want[2]} classes; adapt the spec (e.g. with_io)"
        )


def train_network(
    spec: Any,
    data: str | DataSplits = "fashion-mnist",
    data_dir: str | Path | None = None,
    config: TrainConfig | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    *,
    val_fraction: float = 0.1,
    subset: int | None = None,
    data_seed: int = 0,
    data_name: str | None = None,
    resume: bool = True,
) -> TrainReport:
    """Build ``spec``, train it (val for monitoring), test it, and optionally save it to ``out``.

    ``data`` is a dataset name or already loaded :class:`DataSplits`. ``out`` receives
    ``checkpoint.pt``, ``spec.json`` and ``metrics.json``. The data split uses ``data_seed``
    (not the training seed) so every run sees the same val set. With ``out``, the training state is
    saved to ``out/train-state.pt`` at each epoch's end; a rerun (``resume``) continues from it, and
    it is removed once the outputs are written.
    """
    from nas.models import build_model

    config = config or TrainConfig(epochs=1)
    name = data_name or (data if isinstance(data, str) else "the dataset")
    splits = data if isinstance(data, DataSplits) else load_data(data, data_dir, val_fraction, data_seed, subset)
    check_spec_matches(spec, splits.train, name)
    torch.manual_seed(config.seed)
    model = build_model(spec)
    state_path = _state_path(out, resume)
    result = train(model, splits, dataclasses.replace(config, evaluate_test=True), progress=progress,
                   state_path=state_path)
    metrics = _metrics(spec, model, result, config, splits, name)
    out_dir = _write_outputs(Path(out), spec, model, metrics) if out is not None else None
    if out_dir is not None:
        metrics["out"] = str(out_dir)
        Path(out_dir, STATE_FILE).unlink(missing_ok=True)
    return TrainReport(spec, model, result, metrics, out_dir)


def _state_path(out: str | Path | None, resume: bool) -> Path | None:
    """``out/train-state.pt`` (an old one is dropped unless ``resume``); None without ``out``."""
    if out is None:
        return None
    path = Path(out) / STATE_FILE
    if not resume:
        path.unlink(missing_ok=True)
    return path


def _metrics(spec: Any, model: torch.nn.Module, result: TrainResult, config: TrainConfig,
             splits: DataSplits, data_name: str) -> dict:
    return {
        "spec_hash": spec.hash,
        "data": data_name,
        "val_acc": result.val_acc,
        "test_acc": result.test_acc,
        "train_loss": result.train_loss,
        "seconds": result.seconds,
        "seconds_per_epoch": result.train_seconds / max(result.epochs, 1e-9),
        "images_per_sec": result.images_per_sec,
        "steps": result.steps,
        "epochs": result.epochs,
        "params": sum(p.numel() for p in model.parameters()),
        "splits": splits.sizes(),
        "normalization": {"mean": list(splits.train.mean), "std": list(splits.train.std)},
        "config": dataclasses.asdict(config) | config.resolved() | {"precision": result.precision},
        "compiled": result.compiled,
        "compile_seconds": result.compile_seconds,
        "history": result.history,
    }


def _write_outputs(out: Path, spec: Any, model: torch.nn.Module, metrics: dict) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NasError(f"cannot create output folder {out} ({exc.strerror})") from None
    save_checkpoint(out / "checkpoint.pt", spec, model, metrics)
    write_text_atomic(out / "spec.json", spec.to_json() + "\n")
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2, default=str) + "\n")
    return out


__all__ = [
    "Checkpoint", "TrainConfig", "TrainReport", "TrainResult", "check_spec_matches", "check_state_dict",
    "evaluate", "load_checkpoint", "load_model", "lr_at", "save_checkpoint", "train", "train_network",
]
