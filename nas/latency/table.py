"""A latency table on disk: ``entries.csv`` (one row per unit) + ``meta.json`` (provenance).

Rows are appended and flushed one at a time while a table is built, so a killed build loses at most
the rows in flight; reopening repairs a torn last line, and a rerun skips ids already present.
No pickle anywhere: CSV and JSON only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from nas.errors import NasError
from nas.latency.keys import UnitKey, key_from_row
from nas.latency.standalone_measure import Measurement

TABLE_FORMAT = "nas-latency-table/1"
ENTRIES = "entries.csv"
META = "meta.json"
KEY_COLUMNS = [f.name for f in fields(UnitKey)]
COLUMNS = ["id", *KEY_COLUMNS, "median_ms", "iqr_ms", "runs"]


class TableError(NasError):
    """A missing, corrupt or mismatched latency table."""


@dataclass
class LatencyTable:
    """A loaded table: ``entries`` indexed by unit id, ``meta`` as stored."""

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


def read_meta(directory: Path) -> dict[str, Any]:
    meta_path = directory / META
    if not meta_path.is_file():
        raise TableError(f"no latency table at {directory} ({META} not found)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TableError(f"{meta_path}: corrupt metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != TABLE_FORMAT:
        raise TableError(f"{meta_path}: not a {TABLE_FORMAT} metadata file")
    return meta


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    """Atomic replace, so a kill never leaves half a meta.json."""
    tmp = directory / (META + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    tmp.replace(directory / META)


def read_entries(directory: Path) -> pd.DataFrame:
    path = directory / ENTRIES
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS).set_index("id")
    _repair_torn_line(path)
    try:
        df = pd.read_csv(path, dtype={"act": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise TableError(f"{path}: corrupt table CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise TableError(f"{path}: corrupt table CSV (missing column {missing[0]!r})")
    for column in ("median_ms", "iqr_ms", "runs"):
        values = pd.to_numeric(df[column], errors="coerce")
        bad = values.isna() | (values < 0)
        if bad.any():
            raise TableError(f"{path}: corrupt table CSV (row {int(bad.idxmax()) + 2}: {column} "
                             f"{df[column][bad.idxmax()]!r} is not a non-negative number)")
        df[column] = values
    for i, row in enumerate(df.to_dict("records")):
        try:
            key_from_row(row)
        except (ValueError, KeyError, TypeError) as exc:
            raise TableError(f"{path}: corrupt table CSV (row {i + 2}: {exc})") from None
    dup = df["id"].duplicated()
    if dup.any():
        raise TableError(f"{path}: corrupt table CSV (unit {df['id'][dup.idxmax()]!r} appears twice)")
    return df[COLUMNS].set_index("id")


def _repair_torn_line(path: Path) -> None:
    """Drop a last line cut by a kill (no trailing newline)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def load_table(path: str | Path) -> LatencyTable:
    directory = table_dir(path)
    meta = read_meta(directory)
    return LatencyTable(directory, read_entries(directory), meta)


class TableWriter:
    """Appends measured rows to a table folder, one flushed line per unit."""

    def __init__(self, directory: str | Path, meta: dict[str, Any]) -> None:
        self.directory = table_dir(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        if not (self.directory / META).exists():
            write_meta(self.directory, {"format": TABLE_FORMAT, **meta})
        existing = read_entries(self.directory)
        self.ids = set(existing.index)
        path = self.directory / ENTRIES
        new = not path.exists() or path.stat().st_size == 0
        self._fh = path.open("a", newline="")
        if new:
            self._fh.write(",".join(COLUMNS) + "\n")
            self._fh.flush()

    def append(self, key: UnitKey, m: Measurement) -> None:
        if key.id in self.ids:
            return
        if not (math.isfinite(m.median_ms) and m.median_ms >= 0):
            raise ValueError(f"bad measurement for {key.id}: {m}")
        row = key.as_row()
        values = [row["id"], *(_cell(row[c]) for c in KEY_COLUMNS), f"{m.median_ms:.6f}", f"{m.iqr_ms:.6f}",
                  str(m.runs)]
        self._fh.write(",".join(values) + "\n")  # one write per row; ids and fields contain no commas
        self._fh.flush()
        self.ids.add(key.id)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "TableWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cell(value: Any) -> str:
    return str(value)


def update_meta(path: str | Path, **changes: Any) -> dict[str, Any]:
    directory = table_dir(path)
    meta = read_meta(directory)
    meta.update(changes)
    write_meta(directory, meta)
    return meta
