"""A latency table on disk: ``entries.csv`` (one row per unit) + ``meta.json`` (provenance).

Rows are appended by :class:`TableWriter` under the table's lock (``.lock``, an advisory
``flock``), one flushed line per unit, so two writers never lose or duplicate a row and a killed
build loses at most the row in flight. Readers never write: a torn last line (a writer killed
mid-line) is ignored when reading and cut off by the next writer, under the lock.
No pickle anywhere: CSV and JSON only, with bounded sizes and every number checked finite.

A run's *overlay* (``load_table(base, overlay=DIR)``) is a second folder of rows for the same
device, protocol and time base (e.g. the narrower widths NetAdapt measured in one run): read together
with the base table, written without touching it.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from nas.errors import NasError
from nas.io import write_text_atomic
from nas.latency.calibration import COEFFICIENTS, MAX_CALIBRATION_NETWORKS, MODEL, refit_calibration
from nas.latency.keys import UnitKey, key_from_row, unit_keys
from nas.latency.standalone_measure import Measurement

TABLE_FORMAT = "nas-latency-table/1"
ENTRIES = "entries.csv"
META = "meta.json"
LOCK = ".lock"
KEY_COLUMNS = [f.name for f in fields(UnitKey)]
COLUMNS = ["id", *KEY_COLUMNS, "median_ms", "iqr_ms", "runs"]
MAX_META_BYTES = 4 << 20       # a meta.json is a few kB; refuse anything absurd before parsing it
MAX_ENTRIES_BYTES = 256 << 20  # ~1.5 M rows


class TableError(NasError):
    """A missing, corrupt or mismatched latency table."""


@dataclass
class LatencyTable:
    """A loaded table: ``entries`` indexed by unit id (with a run's overlay rows, if read with one),
    ``meta`` as stored."""

    path: Path
    entries: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def space_hash(self) -> str | None:
        return (self.meta.get("space") or {}).get("hash")

    @property
    def space_name(self) -> str | None:
        return (self.meta.get("space") or {}).get("name")

    @property
    def device(self) -> dict[str, Any]:
        return self.meta.get("device", {})

    @property
    def device_id(self) -> str:
        from nas.latency.device import device_id

        return device_id(self.device)

    @property
    def runtime(self) -> str:
        return self.device.get("runtime", "onnxruntime")

    @property
    def threads(self) -> int:
        return int(self.device.get("threads", 1))

    @property
    def calibration(self) -> dict[str, Any] | None:
        return self.meta.get("calibration")

    def __contains__(self, unit_id: str) -> bool:
        return unit_id in self.entries.index

    def __len__(self) -> int:
        return len(self.entries)

    def median_ms(self, unit_id: str) -> float:
        return float(self.entries.at[unit_id, "median_ms"])


def table_dir(path: str | Path) -> Path:
    """Accept the table folder or one of its two files."""
    path = Path(path)
    return path.parent if path.name in (ENTRIES, META) else path


def is_table(path: str | Path) -> bool:
    return (table_dir(path) / META).is_file()


def _read_bounded(path: Path, limit: int) -> bytes:
    with path.open("rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise TableError(f"{path}: larger than {limit >> 20} MiB, not a latency table file")
    return data


def read_meta(directory: Path) -> dict[str, Any]:
    meta_path = directory / META
    if not meta_path.is_file():
        raise TableError(f"no latency table at {directory} ({META} not found)")
    try:
        meta = json.loads(_read_bounded(meta_path, MAX_META_BYTES), parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise TableError(f"{meta_path}: corrupt metadata ({str(exc).splitlines()[0][:200]})") from None
    if not isinstance(meta, dict) or meta.get("format") != TABLE_FORMAT:
        raise TableError(f"{meta_path}: not a {TABLE_FORMAT} metadata file")
    _check_meta(meta, meta_path)
    return meta


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def _check_meta(meta: dict[str, Any], where: Path) -> None:
    device = meta.get("device")
    if not isinstance(device, dict) or not isinstance(device.get("cpu_model", ""), str):
        raise TableError(f"{where}: corrupt metadata (no device description)")
    threads = device.get("threads", 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise TableError(f"{where}: corrupt metadata (device threads {threads!r})")
    for name in ("space", "reference", "calibration", "protocol"):
        if meta.get(name) is not None and not isinstance(meta[name], dict):
            raise TableError(f"{where}: corrupt metadata ({name} is not an object)")
    _check_space_record(meta.get("space"), where)
    reference = meta.get("reference") or {}
    if reference and not (isinstance(reference.get("ms"), (int, float)) and math.isfinite(reference["ms"])
                          and reference["ms"] > 0 and isinstance(reference.get("spec"), str)):
        raise TableError(f"{where}: corrupt metadata (reference network or its latency)")
    _check_calibration(meta.get("calibration"), where)


def _check_calibration(calibration: dict[str, Any] | None, where: Path) -> None:
    """A calibration must be of the model this version applies, with a finite coefficient per feature
    (the one on the summed entries positive) and a positive common scale; an older model's must hold
    the networks it was fitted on and their measured latencies (:func:`load_table` refits it)."""
    if not calibration:
        return
    if calibration.get("model") != MODEL:
        specs, measured = calibration.get("specs"), calibration.get("measured_ms")
        if not (isinstance(specs, list) and isinstance(measured, list) and 0 < len(specs) == len(measured)
                <= MAX_CALIBRATION_NETWORKS and all(isinstance(s, str) for s in specs)
                and all(_positive_number(m) for m in measured)):
            raise TableError(f"{where}: calibration model {str(calibration.get('model'))[:80]!r} is not {MODEL!r} "
                             f"and holds no measured networks to refit it from (delete its \"calibration\" from "
                             f"meta.json and run `nas lut build --out {where.parent}` on its device)")
        return
    coefficients = calibration.get("coefficients")
    if not isinstance(coefficients, dict) or set(coefficients) != set(COEFFICIENTS) or not all(
            _finite_number(c) for c in coefficients.values()) or not all(
            _positive_number(v) for v in (coefficients["units"], calibration.get("scale"))):
        raise TableError(f"{where}: corrupt metadata (calibration coefficients)")


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_number(value: Any) -> bool:
    return _finite_number(value) and value > 0


def _check_space_record(record: dict[str, Any] | None, where: Path) -> None:
    """A table's space definition must have the hash it is filed under (a table cannot claim another
    space's hash)."""
    if not record or "definition" not in record:
        return
    from nas.spec.space import space_from_dict

    try:
        space = space_from_dict(record["definition"], source=str(where))
    except NasError as exc:
        raise TableError(f"{where}: corrupt metadata (space definition: {str(exc)[:200]})") from None
    if space.hash != record.get("hash"):
        raise TableError(f"{where}: corrupt metadata (the space definition has hash {space.hash}, "
                         f"not the {str(record.get('hash'))[:20]!r} it is filed under)")


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    """Atomic replace, so a kill never leaves half a meta.json."""
    write_text_atomic(directory / META, json.dumps(meta, indent=2, default=str, allow_nan=False) + "\n")


def _complete_text(path: Path) -> str:
    """The file's complete lines (a torn last line from a killed writer is left out, not repaired)."""
    text = _read_bounded(path, MAX_ENTRIES_BYTES).decode("utf-8")
    return text if text.endswith("\n") or not text else text[: text.rfind("\n") + 1]


def read_entries(directory: Path) -> pd.DataFrame:
    path = directory / ENTRIES
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS).set_index("id")
    try:
        rows = list(csv.reader(io.StringIO(_complete_text(path))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise TableError(f"{path}: corrupt table CSV ({str(exc).splitlines()[0][:200]})") from None
    if not rows:
        return pd.DataFrame(columns=COLUMNS).set_index("id")
    if rows[0] != COLUMNS:
        raise TableError(f"{path}: corrupt table CSV (the header is not {','.join(COLUMNS)})")
    records, seen = [], set()
    for line, row in enumerate(rows[1:], start=2):
        record = _parse_row(row, path, line)
        if record["id"] in seen:
            raise TableError(f"{path}: corrupt table CSV (unit {record['id']!r} appears twice)")
        seen.add(record["id"])
        records.append(record)
    return pd.DataFrame.from_records(records, columns=COLUMNS).set_index("id")


def _parse_row(row: list[str], path: Path, line: int) -> dict[str, Any]:
    if len(row) != len(COLUMNS):
        raise TableError(f"{path}: corrupt table CSV (row {line} has {len(row)} fields, not {len(COLUMNS)})")
    record = dict(zip(COLUMNS, row))
    try:
        key = key_from_row(record)
    except (ValueError, KeyError, TypeError) as exc:
        raise TableError(f"{path}: corrupt table CSV (row {line}: {str(exc)[:200]})") from None
    record.update(key.as_row())
    for column in ("median_ms", "iqr_ms"):
        try:
            value = float(record[column])
        except ValueError:
            value = float("nan")
        if not (math.isfinite(value) and value >= 0):
            raise TableError(f"{path}: corrupt table CSV (row {line}: {column} {record[column][:40]!r} is not "
                             f"a finite non-negative number)")
        record[column] = value
    if not record["runs"].isascii() or not record["runs"].isdigit():
        raise TableError(f"{path}: corrupt table CSV (row {line}: runs {record['runs'][:40]!r})")
    record["runs"] = int(record["runs"])
    return record


def load_table(path: str | Path, overlay: str | Path | None = None) -> LatencyTable:
    """The table at ``path``; with ``overlay``, plus the rows of that run-local folder (if it exists)."""
    directory = table_dir(path)
    meta = read_meta(directory)
    entries = read_entries(directory)
    overlay_dir = None if overlay is None else table_dir(overlay)
    if overlay_dir is not None and (overlay_dir / ENTRIES).exists():
        extra = read_entries(overlay_dir)
        entries = pd.concat([entries, extra[~extra.index.isin(entries.index)]])
    table = LatencyTable(directory, entries, meta)
    if (meta.get("calibration") or {}).get("model") not in (None, MODEL):
        meta["calibration"] = _refitted_calibration(table)
    return table


def _refitted_calibration(table: LatencyTable) -> dict[str, Any]:
    """An older version's calibration fitted again, in memory, with this version's model from the
    networks and latencies it stores: no new measurement, nothing written."""
    def entries_of(spec) -> list[tuple[UnitKey, float]]:
        return [(key, table.median_ms(key.id)) for key in unit_keys(spec)]

    try:
        return refit_calibration(table.meta["calibration"], entries_of)
    except (NasError, KeyError, ValueError, TypeError) as exc:
        raise TableError(f"{table.path / META}: corrupt metadata (the older calibration cannot be refitted: "
                         f"{str(exc)[:200]})") from None


@contextlib.contextmanager
def table_lock(directory: Path) -> Iterator[None]:
    """The table's advisory lock (``flock`` on ``.lock``): one writer at a time, across processes."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class TableWriter:
    """Appends measured rows to a table folder, one flushed line per unit, under the table's lock.

    Before each row it reads what other writers appended since (so a row is never written twice),
    and a torn last line left by a killed writer is cut off first."""

    def __init__(self, directory: str | Path, meta: dict[str, Any]) -> None:
        self.directory = table_dir(directory)
        self.path = self.directory / ENTRIES
        with table_lock(self.directory):
            if not (self.directory / META).exists():
                write_meta(self.directory, {"format": TABLE_FORMAT, **meta})
            self.ids: set[str] = set()
            self._offset = 0
            self._catch_up()

    def _catch_up(self) -> None:
        """Under the lock: cut a torn tail, write the header of a new file, read rows added since."""
        if os.path.islink(self.path):
            raise TableError(f"{self.path} is a symbolic link; a table file must be a regular file")
        with self.path.open("ab"):
            pass
        size = self.path.stat().st_size
        with self.path.open("r+b") as fh:
            if size < self._offset:
                raise TableError(f"{self.path} shrank while it was being written")
            fh.seek(self._offset)
            new = fh.read()
            if new and not new.endswith(b"\n"):
                cut = new.rfind(b"\n") + 1
                fh.truncate(self._offset + cut)
                new = new[:cut]
            if self._offset == 0 and not new:
                fh.write((",".join(COLUMNS) + "\n").encode())
                self._offset = fh.tell()
                return
        lines = new.decode("utf-8").splitlines()
        if self._offset == 0:
            lines = lines[1:]  # the header
        self.ids.update(line.split(",", 1)[0] for line in lines if line)
        self._offset += len(new)

    def append(self, key: UnitKey, m: Measurement) -> bool:
        """Write ``key``'s row unless some writer already did; True when this call wrote it."""
        if not (math.isfinite(m.median_ms) and m.median_ms >= 0 and math.isfinite(m.iqr_ms) and m.iqr_ms >= 0):
            raise ValueError(f"bad measurement for {key.id}: {m}")
        row = key.as_row()
        line = ",".join([row["id"], *(str(row[c]) for c in KEY_COLUMNS), f"{m.median_ms:.6f}", f"{m.iqr_ms:.6f}",
                         str(m.runs)]) + "\n"
        if line.count(",") != len(COLUMNS) - 1 or '"' in line:
            raise ValueError(f"unit key {key.id!r} has a field with a comma or quote")
        with table_lock(self.directory):
            self._catch_up()
            if key.id in self.ids:
                return False
            with self.path.open("ab") as fh:
                fh.write(line.encode())  # one write per row
            self._offset += len(line.encode())
            self.ids.add(key.id)
        return True

    def still_missing(self, keys: list[UnitKey]) -> list[UnitKey]:
        """``keys`` less those some writer has written by now (read under the lock)."""
        with table_lock(self.directory):
            self._catch_up()
        return [k for k in keys if k.id not in self.ids]

    def close(self) -> None:
        pass

    def __enter__(self) -> "TableWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def update_meta(path: str | Path, **changes: Any) -> dict[str, Any]:
    """Read-modify-write of meta.json under the table's lock."""
    directory = table_dir(path)
    with table_lock(directory):
        meta = read_meta(directory)
        meta.update(changes)
        write_meta(directory, meta)
    return meta
