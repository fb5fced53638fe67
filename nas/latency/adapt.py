"""A table for this machine from another device's table and a few networks measured here.

``nas lut adapt SOURCE --samples 10 --out DIR`` measures ``samples`` whole networks of the source
table's space on this machine (the baseline and seeded samples: the networks a table of the space is
calibrated on), with the default protocol paired with the space's reference network timed here,
and fits the source's entries to them with the table calibration (:mod:`nas.latency.calibration`:
summed entries, weights and unit count, least squares). The result is a table of *this* device:

- ``entries.csv``: the source's entries, unchanged (the source device's time base);
- ``meta.json``: this machine's fingerprint, the protocol and reference timed here, the calibration
  that maps the entries to this machine, and ``adapted_from`` (the source's device, path and entries)
  with ``adapted_samples``.

It predicts like any table and validates like one (``nas lut validate DIR`` measures held-out
networks here). Units measured here later (NetAdapt's narrower widths) are put on the entries' time
base by the anchors every addition re-times (``nas.latency.measure.drift_scale``). A rerun after a
kill continues (the entries copy is idempotent; the networks are measured again). Within
``nas.latency.remote.use_device(URL)`` (``nas lut adapt --device URL``) "this machine" is the
measurement server's device: the networks are measured there and the table is that device's.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from nas.errors import NasError
from nas.latency.build import calibrate_table, calibration_specs, table_meta, table_space, with_reference
from nas.latency.device import warn_if_busy
from nas.latency.keys import key_from_row
from nas.latency.measure import TABLE_PROTOCOL, MeasureConfig
from nas.latency.standalone_measure import Measurement
from nas.latency.table import TableWriter, is_table, load_table, read_meta, table_dir, update_meta

MAX_SAMPLES = 500


def adapt_table(source: str | Path, out: str | Path, samples: int = 10, progress: bool = True) -> Path:
    """Write the adapted table to ``out`` (see the module docstring); returns its folder."""
    if isinstance(samples, bool) or not isinstance(samples, int) or not 2 <= samples <= MAX_SAMPLES:
        raise NasError(f"--samples must be an integer from 2 to {MAX_SAMPLES}, got {samples!r}")
    src = load_table(source)
    if len(src) == 0:
        raise NasError(f"{src.path} has no entries to adapt")
    space = table_space(src)
    directory = table_dir(out)
    if directory.resolve() == src.path.resolve():
        raise NasError("--out must be a new folder, not the source table")
    _check_resumable(directory, src)
    start = time.perf_counter()
    config = MeasureConfig(runtime=src.runtime, threads=src.threads, **TABLE_PROTOCOL)
    config = with_reference(directory, space, [], config, progress)
    meta = {**table_meta(space, config), "adapted_samples": samples,
            "adapted_from": {"device": src.device_id, "table": str(src.path), "entries": len(src)}}
    with TableWriter(directory, meta) as writer:
        for unit_id, row in src.entries.iterrows():
            if unit_id not in writer.ids:
                writer.append(key_from_row({"id": unit_id, **row}),
                              Measurement(float(row["median_ms"]), float(row["iqr_ms"]), int(row["runs"])))
    if progress:
        print(f"fitting the entries of device {src.device_id} to this machine:", file=sys.stderr, flush=True)
    warn_if_busy(config.threads)
    calibrate_table(directory, calibration_specs(space, samples), config, progress)
    update_meta(directory, build_seconds=round(time.perf_counter() - start, 1))
    return directory


def _check_resumable(directory: Path, src) -> None:
    """``out`` is new, or an unfinished adaptation of the same source on this machine."""
    if not is_table(directory):
        return
    meta = read_meta(directory)
    origin = meta.get("adapted_from") or {}
    if meta.get("calibration") is not None or origin.get("device") != src.device_id:
        raise NasError(f"{directory} already holds a table; give a new --out folder")
