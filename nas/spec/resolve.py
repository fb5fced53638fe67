"""Turn a command-line argument into a spec: a named network, a JSON file, a space file
(its baseline), a checkpoint (its spec) or a spec string."""

from __future__ import annotations

from pathlib import Path

from nas.spec.arch import ArchSpec, SpecError
from nas.spec.named import NAMED_NETWORKS, named_spec


def load_spec_arg(arg: str, *, width_mult: float | None = None, num_classes: int | None = None,
                  resolution: int | None = None, in_channels: int | None = None) -> ArchSpec:
    """Resolve NAME | SPEC.json | SPACE.yaml | CHECKPOINT.pt | 'in224x3 stem_... clsK'."""
    if arg in NAMED_NETWORKS:
        return named_spec(arg, width_mult=width_mult, num_classes=num_classes, resolution=resolution,
                          in_channels=in_channels)
    path = Path(arg)
    if arg.lstrip().startswith("in") and "stem_" in arg:
        spec = ArchSpec.from_string(arg)
    elif path.suffix in (".json", ".yaml", ".yml", ".pt", ".pth") or path.exists():
        spec = _spec_from_file(path)
    else:
        raise SpecError(f"unknown network {arg!r}: not a named network ({', '.join(NAMED_NETWORKS)}), "
                        f"not an existing file, not a spec string")
    if width_mult is not None and width_mult != 1.0:
        raise SpecError("--width-mult applies to named networks only")
    return spec.with_io(resolution=resolution, in_channels=in_channels, num_classes=num_classes)


def _spec_from_file(path: Path) -> ArchSpec:
    if not path.is_file():
        raise SpecError(f"file not found: {path}")
    if path.suffix in (".yaml", ".yml"):
        from nas.spec.space import load_space

        return load_space(path).baseline
    if path.suffix in (".pt", ".pth"):
        from nas.train.checkpoint import load_checkpoint  # torch only when a checkpoint is given

        return load_checkpoint(path).spec
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file") from None
    try:
        return ArchSpec.from_json(text)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
