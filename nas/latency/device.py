"""Devices: this machine's fingerprint, device ids, and the rule that measurements stay on their device.

A table belongs to the device it was measured on. Its *device id* is a readable slug plus a short
hash of the fingerprint fields a latency depends on (:data:`IDENTITY`: CPU model, cores, ISA flags,
architecture, runtime and its version, threads), e.g. ``intel-xeon-2c-ort1.32.0-t1-3fa9c2d1``.

- Predicting with any device's table is allowed: it is a prediction *for that device*.
- Adding numbers measured here to a table (new units, validation, re-measured networks) is allowed
  only when the table's device is this machine (:func:`require_this_device`).

While a measurement server is the measuring device (``nas.latency.remote.use_device``, the
commands' ``--device URL``), "this device" is that server's device: its fingerprint comes from the
server, and measurements go there.

Under test only (``PYTEST_CURRENT_TEST`` set), ``NAS_TEST_CPU_MODEL`` replaces this machine's CPU
model, so the whole suite can run as if on a CPU no shipped table was measured on.
"""

from __future__ import annotations

import os
import warnings
from typing import Iterable

from nas.errors import NasError
from nas.latency import remote
from nas.latency.runtimes import runtime_version
from nas.latency.standalone_measure import IDENTITY, device_fingerprint, device_id

__all__ = ["IDENTITY", "THIS", "ForeignTableError", "device_id", "this_device", "is_this_device",
           "require_this_device", "warn_if_busy", "busy_warning"]

TEST_CPU_MODEL = "NAS_TEST_CPU_MODEL"
THIS = "this"  # the target name of the machine running the code


class ForeignTableError(NasError):
    """Numbers measured here refused for a table of another device."""


def this_device(runtime: str = "onnxruntime", threads: int = 1) -> dict:
    """Fingerprint of the measuring device for ``runtime`` with ``threads`` threads: this machine
    (torch version included), or the active measurement server's device (onnxruntime only)."""
    client = remote.active()
    if client is not None:
        if runtime != "onnxruntime":
            raise NasError(f"a measurement server measures on onnxruntime, not {runtime!r}")
        return client.fingerprint(threads)
    device = device_fingerprint(runtime, threads, runtime_version(runtime))
    device["torch"] = runtime_version("torch")
    fake = os.environ.get(TEST_CPU_MODEL)
    if fake and os.environ.get("PYTEST_CURRENT_TEST"):
        device["cpu_model"] = fake
    device["id"] = device_id(device)
    return device


def is_this_device(device: dict) -> bool:
    """Whether a table's ``device`` is this machine (same identity fields)."""
    here = this_device(device.get("runtime", "onnxruntime"), int(device.get("threads", 1)))
    return device_id(device) == here["id"]


def require_this_device(table_device: dict, where: str, action: str,
                        missing: Iterable[str] = (), command: str | None = None) -> None:
    """Refuse (:class:`ForeignTableError`, one line) to ``action`` for a table of another device,
    naming both devices, the units it lacks and the command that measures them on its device."""
    if is_this_device(table_device):
        return
    here = this_device(table_device.get("runtime", "onnxruntime"), int(table_device.get("threads", 1)))
    missing = list(missing)
    units = ""
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        units = f"; it lacks {len(missing)} unit(s): {shown}"
    hint = f"; {'measure them' if missing else 'run it'} on that device: {command}" if command else ""
    raise ForeignTableError(f"cannot {action}: {where} is the table of device {device_id(table_device)}, "
                            f"this machine is {here['id']}{units}{hint}")


def warn_if_busy(threads: int) -> None:
    """Warn (one line on the CLI) when :func:`busy_warning` finds the cores taken."""
    if remote.active() is not None:  # this machine's load says nothing about the server's device
        return
    message = busy_warning(threads)
    if message:
        warnings.warn(message, stacklevel=3)


def busy_warning(threads: int) -> str | None:
    """A warning when other processes already keep this machine's cores busy: with more runnable
    threads than cores, calls are preempted in time slices, which cuts long calls more often than
    short ones, so ratios to the reference skew (seen here: a table built beside two training jobs on
    2 cores fitted its calibration networks within 50 % instead of 5 %)."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return None
    cores = os.cpu_count() or 1
    if load + threads <= cores + 0.5:
        return None
    return (f"the machine is busy (1-minute load {load:.1f} on {cores} cores): timings taken while other "
            f"processes compete for the cores are skewed; measure with at least {threads} core(s) free")
