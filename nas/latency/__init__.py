"""On-device latency: unit keys from specs, the measurement protocol, lookup tables, the predictor.

Typical use::

    from nas.latency import load_predictor, measure_spec, MeasureConfig
    table = resolve_table("latency_tables/fashion_mnist", space)   # this machine's (built on first use)
    predictor = load_predictor(table)
    predictor.predict(spec)                 # ms, from the table
    measure_spec(spec, MeasureConfig())     # Measurement(median_ms, iqr_ms, runs), end to end

Modules: ``keys`` (UnitKey, unit_keys, space enumeration; torch-free), ``standalone_measure`` (the
timing protocol; onnxruntime + numpy only), ``runtimes``, ``kernels`` (units as ONNX graphs),
``measure``, ``table`` (CSV + meta.json), ``build`` (build / resume / ensure_entries),
``calibration``, ``predict``, ``validate``, ``device`` (fingerprints, device ids, the rule that
measurements stay on their device), ``catalog`` (a space's folder of tables, one per device).
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> module. Imported lazily (PEP 562) so that ``nas.latency.keys`` and
# ``nas.latency.standalone_measure`` stay importable without torch.
_EXPORTS = {
    "UnitKey": "keys", "unit_keys": "keys", "space_unit_keys": "keys", "narrower_specs": "keys",
    "MeasureConfig": "measure", "Measurement": "measure", "measure_spec": "measure", "measure_specs": "measure",
    "measure_onnx": "measure",
    "LatencyTable": "table", "load_table": "table", "TableError": "table",
    "LatencyPredictor": "predict", "load_predictor": "predict", "MissingEntryError": "predict",
    "build_table": "build", "ensure_entries": "build", "calibration_specs": "build",
    "ForeignTableError": "device", "require_this_device": "device", "this_device": "device", "device_id": "device",
    "resolve_table": "catalog", "find_table": "catalog", "device_tables": "catalog",
    "validate_table": "validate",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nas.latency' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"nas.latency.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
