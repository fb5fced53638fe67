"""Turn a command-line argument into a spec: a named network, a JSON file, a space file
(its baseline), a checkpoint (its spec) or a spec string."""

from __future__ import annotations

from pathlib import Path

from nas.io import MAX_JSON_BYTES, read_text_bounded
from nas.spec.arch import ArchSpec, SpecError
from nas.spec.named import NAMED_NETWORKS, named_spec

MAX_CHECKPOINT_BYTES = 2 << 30  # a checkpoint file: 2 GiB (a network within the spec limits is < 1 GiB)
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


def check_checkpoint_file(path: Path) -> None:
    """A checkpoint is a regular file of at most :data:`MAX_CHECKPOINT_BYTES` (read with weights_only)."""
    try:
        size = path.stat().st_size if path.is_file() else None
    except OSError:
        size = None
    if size is None:
        raise SpecError(f"checkpoint {path} not found")
    if size > MAX_CHECKPOINT_BYTES:
        raise SpecError(f"checkpoint {path} is {size:,} bytes, more than the limit of {MAX_CHECKPOINT_BYTES:,}")


def _spec_from_file(path: Path) -> ArchSpec:
    if not _is_file(path):
        raise SpecError(f"file not found: {path}")
    if path.suffix in (".yaml", ".yml"):
        from nas.spec.space import load_space

        return load_space(path).baseline
    if path.suffix in (".pt", ".pth"):
        from nas.train.checkpoint import load_checkpoint  # torch only when a checkpoint is given

        check_checkpoint_file(path)
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
