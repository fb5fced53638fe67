"""Load a network back: ``nas.load(PATH) -> (spec, model)``; a command-line argument as a spec
(:func:`load_spec_arg`).

PATH is a checkpoint written by ``nas train`` (its trained weights), a run folder holding
``checkpoint.pt`` (and ``spec.json``, which must agree with it), a spec JSON file, a spec string or
a named network (freshly initialised weights, seeded). Checkpoints are read only through
:func:`nas.train.load_checkpoint`, i.e. ``torch.load(weights_only=True)``: a checkpoint carrying
arbitrary pickled objects is refused, never executed.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.errors import NasError
from nas.io import MAX_JSON_BYTES, read_text_bounded
from nas.spec import NAMED_NETWORKS, ArchSpec, SpecError, load_space, named_spec

CHECKPOINT_SUFFIXES = (".pt", ".pth")


@dataclass
class Loaded:
    """A loaded network and where it came from. ``metrics`` are the checkpoint's ({} for a spec)."""

    spec: Any
    model: Any  # nas.models.Network, in eval mode
    kind: str  # "checkpoint" or "spec"
    path: str
    metrics: dict = field(default_factory=dict)

    @property
    def trained(self) -> bool:
        return self.kind == "checkpoint"


def load(path: str | Path, seed: int = 0) -> tuple[Any, Any]:
    """(spec, model in eval mode) from a checkpoint, run folder, spec JSON, spec string or name."""
    loaded = load_source(path, seed=seed)
    return loaded.spec, loaded.model


def load_source(path: str | Path, seed: int = 0) -> Loaded:
    """Like :func:`load`, but also says whether the weights are trained and returns the metrics."""
    checkpoint = _checkpoint_path(Path(path))
    if checkpoint is not None:
        return _load_checkpoint(checkpoint, Path(path))
    from nas.models import build_model

    spec = load_spec_arg(str(path))
    model = build_model(spec, seed=seed).eval()
    return Loaded(spec, model, "spec", str(path))


def _checkpoint_path(path: Path) -> Path | None:
    """The checkpoint file PATH names, or None when PATH is a spec (file, string or name)."""
    text = str(path)
    if text.lstrip().startswith("in") and "stem_" in text:  # a spec string
        return None
    if "\x00" in text or len(text) > 4096:  # not a file name; load_spec_arg says what it is not
        return None
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except OSError:  # e.g. a name too long for a file: not a checkpoint
        return None
    if is_dir:
        candidate = path / "checkpoint.pt"
        if not candidate.is_file():
            raise NasError(f"{path} is a folder without checkpoint.pt")
        return candidate
    if path.suffix in CHECKPOINT_SUFFIXES:
        return path  # load_checkpoint reports a missing file
    if is_file and zipfile.is_zipfile(path):  # torch.save's format, whatever the name
        return path
    return None


def _load_checkpoint(checkpoint: Path, given: Path) -> Loaded:
    from nas.models import build_model
    from nas.train import check_state_dict, load_checkpoint

    saved = load_checkpoint(checkpoint)  # a regular file within the size limit  # weights_only=True; refuses pickled objects
    if given.is_dir() and (given / "spec.json").is_file():
        _check_run_spec(given / "spec.json", saved.spec, checkpoint)
    model = build_model(saved.spec)
    check_state_dict(model, saved.state_dict, f"checkpoint {checkpoint}")
    model.load_state_dict(saved.state_dict, strict=True)
    return Loaded(saved.spec, model.eval(), "checkpoint", str(checkpoint), saved.metrics)


def _check_run_spec(spec_file: Path, spec: Any, checkpoint: Path) -> None:
    from nas.spec import ArchSpec

    from nas.io import read_json

    try:
        written = ArchSpec.from_dict(read_json(spec_file, NasError, "spec file"))
    except NasError as exc:
        raise NasError(f"{spec_file}: {exc}") from None
    if written.hash != spec.hash:
        raise NasError(f"{spec_file} (spec {written.hash}) does not match {checkpoint} (spec {spec.hash})")


# --- a command-line argument as a spec ---------------------------------------------------------------

MAX_ARG_CHARS = 1 << 16


def load_spec_arg(arg: str, *, width_mult: float | None = None, num_classes: int | None = None,
                  resolution: int | None = None, in_channels: int | None = None) -> ArchSpec:
    """Resolve NAME | SPEC.json | SPACE.yaml | CHECKPOINT.pt | 'in224x3 stem_... clsK'."""
    if not isinstance(arg, str) or len(arg) > MAX_ARG_CHARS or "\x00" in arg:
        raise SpecError("network: expected a name, a file or a spec string (no NUL byte, at most 64 KiB)")
    if arg in NAMED_NETWORKS:
        return named_spec(arg, width_mult=width_mult, num_classes=num_classes, resolution=resolution,
                          in_channels=in_channels)
    path = Path(arg)
    if arg.lstrip().startswith("in") and "stem_" in arg:
        spec = ArchSpec.from_string(arg)
    elif path.suffix in (".json", ".yaml", ".yml", ".pt", ".pth") or _exists(path):
        spec = _spec_from_file(path)
    else:
        raise SpecError(f"unknown network {arg!r}: not a named network ({', '.join(NAMED_NETWORKS)}), "
                        f"not an existing file, not a spec string")
    if width_mult is not None and width_mult != 1.0:
        raise SpecError("--width-mult applies to named networks only")
    return spec.with_io(resolution=resolution, in_channels=in_channels, num_classes=num_classes)


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long for a file
        return False


def _spec_from_file(path: Path) -> ArchSpec:
    if not _is_file(path):
        raise SpecError(f"file not found: {path}")
    if path.suffix in (".yaml", ".yml"):
        return load_space(path).baseline
    if path.suffix in (".pt", ".pth"):
        from nas.train.checkpoint import load_checkpoint  # torch only when a checkpoint is given

        return load_checkpoint(path).spec
    text = read_text_bounded(path, SpecError, "spec file", MAX_JSON_BYTES)
    try:
        return ArchSpec.from_json(text)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False
