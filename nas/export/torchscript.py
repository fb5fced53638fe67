"""TorchScript export (traced) with the metadata as extra files, reloaded and checked against PyTorch."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from nas.export.onnx import TOLERANCE, ExportCheckError, max_abs_diff, random_batch, torch_outputs


def export_torchscript(model: Any, spec: Any, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Trace ``model`` on one example and save it; ``metadata`` goes into ``extra/<key>`` entries
    (read them back with ``torch.jit.load(path, _extra_files={key: ''})``)."""
    import torch

    path = Path(path)
    model.eval()
    example = torch.zeros(1, spec.in_channels, spec.resolution, spec.resolution)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        with torch.no_grad():
            traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={k: str(v) for k, v in (metadata or {}).items()})
    return path


def load_torchscript(path: str | Path, metadata_keys: tuple[str, ...] = ()) -> tuple[Any, dict[str, str]]:
    """(module, {key: value}) for the requested metadata keys."""
    import torch

    extra = {key: "" for key in metadata_keys}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module.eval(), {k: v.decode() if isinstance(v, bytes) else v for k, v in extra.items()}


def check_torchscript(path: str | Path, model: Any, spec: Any, batch: int = 4, seed: int = 0,
                      tolerance: float = TOLERANCE, expected: Any = None) -> float:
    """Reload the saved file and compare it with PyTorch on a random batch; max abs difference.

    The reloaded program runs without the JIT's profiling optimisations (they are not part of the
    file, and their first calls cost more than the whole check)."""
    import torch

    module, _ = load_torchscript(path)
    x = random_batch(spec, batch, seed)
    with torch.jit.optimized_execution(False):
        ours = torch_outputs(module, x)
    diff = max_abs_diff(ours, torch_outputs(model, x) if expected is None else expected)
    if not diff <= tolerance:
        raise ExportCheckError(f"{path}: TorchScript and PyTorch outputs differ by {diff:.3g} (> {tolerance:g})")
    return diff
