"""Platform-aware neural architecture search for CPUs.

Read top-down: ``nas.spec`` (pure data) -> ``nas.models`` (builder) -> ``nas.train`` ->
``nas.latency`` -> ``nas.reward`` -> ``nas.search`` -> ``nas.netadapt`` -> ``nas.export``.
"""

from nas.errors import NasError

__version__ = "0.1.0"
__all__ = ["NasError", "__version__"]
