"""This machine's fingerprint, and the check that a table was built on a machine like it."""

from __future__ import annotations

import warnings

from nas.errors import NasError
from nas.latency.runtimes import runtime_version
from nas.latency.standalone_measure import device_fingerprint

# What must match between a table's device and this one for its numbers to apply here.
MUST_MATCH = ("cpu_model", "cores", "runtime", "runtime_version", "threads")


class ForeignTableError(NasError):
    """A table built on another device, runtime version or thread count."""


def this_device(runtime: str, threads: int) -> dict:
    """Fingerprint of this machine for ``runtime`` with ``threads`` threads (torch version included)."""
    device = device_fingerprint(runtime, threads, runtime_version(runtime))
    device["torch"] = runtime_version("torch")
    return device


def device_differences(table_device: dict, here: dict) -> list[str]:
    return [f"{k} {table_device.get(k)!r} here {here.get(k)!r}" for k in MUST_MATCH
            if table_device.get(k) != here.get(k)]


def check_device(table_device: dict, where: str, allow_foreign: bool = False, threads: int | None = None) -> None:
    """Refuse a table measured elsewhere (NasError) unless ``allow_foreign`` (then warn).

    ``threads``: the thread count the caller will run with (default: the table's own)."""
    here = this_device(table_device.get("runtime", "onnxruntime"), threads or table_device.get("threads", 1))
    diffs = device_differences(table_device, here)
    if not diffs:
        return
    message = f"{where} was measured on another device or setting ({'; '.join(diffs)})"
    if not allow_foreign:
        raise ForeignTableError(message + "; pass --allow-foreign-table (allow_foreign=True) to use it anyway")
    warnings.warn(message + "; using it anyway (allow_foreign)", stacklevel=3)


def warn_if_busy(threads: int) -> None:
    """Warn (one line on the CLI) when :func:`busy_warning` finds the cores taken."""
    message = busy_warning(threads)
    if message:
        warnings.warn(message, stacklevel=3)


def busy_warning(threads: int) -> str | None:
    """A warning when other processes already keep this machine's cores busy: with more runnable
    threads than cores, calls are preempted in time slices, which cuts long calls more often than
    short ones, so ratios to the reference skew (seen here: a table built beside two training jobs on
    2 cores fitted its calibration networks within 50 % instead of 5 %)."""
    import os

    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return None
    cores = os.cpu_count() or 1
    if load + threads <= cores + 0.5:
        return None
    return (f"the machine is busy (1-minute load {load:.1f} on {cores} cores): timings taken while other "
            f"processes compete for the cores are skewed; measure with at least {threads} core(s) free")
