"""Platform-aware neural architecture search for CPUs.

Read top-down: ``nas.spec`` (pure data) -> ``nas.models`` (builder) -> ``nas.train`` ->
``nas.latency`` -> ``nas.reward`` -> ``nas.search`` -> ``nas.netadapt`` -> ``nas.export``.
"""

from nas.errors import NasError

__version__ = "0.1.0"
__all__ = ["NasError", "__version__", "load"]


def load(path, seed: int = 0):
    """Load a checkpoint, run folder, spec JSON, spec string or named network -> (spec, model).

    Checkpoints are read with ``torch.load(weights_only=True)``: pickled code is refused."""
    from nas.load import load as _load

    return _load(path, seed=seed)
