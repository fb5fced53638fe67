"""Predicted latency of a spec = its table entries, summed and calibrated.

A prediction is for the table's device (:attr:`LatencyPredictor.device_id`), whichever machine makes
it: predicting for another device (a host searching for a board) needs no flag."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from nas.errors import NasError
from nas.latency.calibration import apply_calibration
from nas.latency.keys import UnitKey, unit_keys
from nas.latency.table import LatencyTable, load_table


class MissingEntryError(NasError):
    """A unit of the spec is not in the table; the message names it."""

    def __init__(self, key: UnitKey, table: LatencyTable) -> None:
        self.key = key
        super().__init__(f"latency table {table.path} has no entry for unit {key.id} (measure it on device "
                         f"{table.device_id} with `nas lut build --spec SPEC.json --narrower --out {table.path}`)")


class LatencyPredictor:
    """``predict(spec) -> ms`` from a loaded table (see :mod:`nas.latency.calibration`)."""

    def __init__(self, table: LatencyTable, calibrated: bool = True) -> None:
        self.table = table
        self.calibration = table.calibration if calibrated else None

    @property
    def device_id(self) -> str:
        """The device whose latency this predicts (the table's)."""
        return self.table.device_id

    def entries(self, spec) -> list[tuple[UnitKey, float]]:
        """The spec's units and their table latencies (ms)."""
        out = []
        for key in unit_keys(spec):
            if key.id not in self.table:
                raise MissingEntryError(key, self.table)
            out.append((key, self.table.median_ms(key.id)))
        return out

    def raw_sum(self, spec) -> float:
        return sum(ms for _, ms in self.entries(spec))

    def predict(self, spec) -> float:
        """Predicted end-to-end latency in ms (uncalibrated sum when the table has no calibration)."""
        return apply_calibration(self.calibration, spec, self.entries(spec))

    __call__ = predict

    def unit_breakdown(self, spec) -> pd.DataFrame:
        """One row per unit: id, kind, median_ms, and its share of the raw sum."""
        entries = self.entries(spec)
        df = pd.DataFrame([{"unit": k.id, "kind": k.kind, "median_ms": ms} for k, ms in entries])
        df["share"] = df["median_ms"] / df["median_ms"].sum()
        return df


def load_predictor(path: str | Path, overlay: str | Path | None = None) -> LatencyPredictor:
    """The predictor of the table at ``path`` (plus a run's ``overlay`` rows): latency on the table's
    device, whichever device that is."""
    return LatencyPredictor(load_table(path, overlay=overlay))
