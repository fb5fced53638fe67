"""Tables for a device without torch: export ONNX kernels here, measure there, import the results.

1. ``export_for_device`` (``nas lut export-kernels``) writes every unit of a space (and the
   calibration networks and the overhead graph) as ONNX files + ``manifest.json`` + a copy of
   ``standalone_measure.py``.
2. On the device: ``python standalone_measure.py KERNELS_DIR`` (onnxruntime + numpy only) writes
   ``results.csv`` and ``device.json``.
3. ``import_results`` (``nas lut import``) turns the folder into a normal table, calibration included.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable

from nas.errors import NasError
from nas.latency.build import reference_spec, requested_units, space_record
from nas.latency.calibration import fit_calibration, overhead_onnx
from nas.latency.keys import key_from_row, unique_keys
from nas.latency.measure import MeasureConfig
from nas.latency.predict import LatencyPredictor
from nas.latency.standalone_measure import REFERENCE_ID, Measurement, read_results
from nas.latency.table import TableError, TableWriter, load_table, table_dir, update_meta
from nas.spec.arch import ArchSpec
from nas.spec.space import SearchSpace

OVERHEAD_ID = "overhead"


def export_for_device(out: str | Path, space: SearchSpace | None = None, specs: Iterable[ArchSpec] = (),
                      narrower: bool = False, config: MeasureConfig | None = None, progress: bool = True) -> Path:
    """Write the kernels folder; returns the manifest's path."""
    config = config or MeasureConfig()
    if config.runtime != "onnxruntime":
        raise NasError("exported kernels are measured with onnxruntime; --runtime torch is not available here")
    specs = list(specs)
    if space is None and not specs:
        raise NasError("nothing to export: give a space and/or specs")
    keys, calib = requested_units(space, specs, narrower)
    from nas.latency.kernels import export_kernels  # torch: only here, not for `nas lut import`

    networks = {f"net:calib{i}": spec for i, spec in enumerate(calib)}
    info = {"space": None if space is None else space_record(space),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    reference = reference_spec(space, specs) if config.paired else None
    return export_kernels(out, unique_keys(keys), networks, config.protocol, info,
                          extra_graphs={OVERHEAD_ID: overhead_onnx()}, progress=progress, reference=reference)


def import_results(kernels_dir: str | Path, out: str | Path) -> Path:
    """Make a table at ``out`` from a measured kernels folder; returns the table folder."""
    kernels_dir = Path(kernels_dir)
    try:
        manifest = json.loads((kernels_dir / "manifest.json").read_text())
        device = json.loads((kernels_dir / "device.json").read_text())
    except FileNotFoundError as exc:
        raise NasError(f"{kernels_dir}: {Path(exc.filename).name} not found (run standalone_measure.py "
                       f"on the device first)") from None
    except json.JSONDecodeError as exc:
        raise NasError(f"{kernels_dir}: corrupt JSON ({exc})") from None
    results = read_results(kernels_dir / "results.csv")
    wanted = [u["id"] for u in manifest["units"]] + [n["id"] for n in manifest.get("networks", [])]
    missing = [i for i in wanted if i not in results]
    if missing:
        raise NasError(f"{kernels_dir}: {len(missing)} graph(s) not measured yet (first: {missing[0]}); "
                       f"run standalone_measure.py again")

    def measurement(graph_id: str) -> Measurement:
        r = results[graph_id]
        return Measurement(float(r["median_ms"]), float(r["iqr_ms"]), int(r["runs"]))

    directory = table_dir(out)
    if (directory / "meta.json").exists():
        raise TableError(f"{directory} already holds a table; import into a new folder")
    protocol = device.pop("protocol", manifest["protocol"])
    reference = None
    if protocol.get("reference_runs"):
        if REFERENCE_ID not in results or "reference" not in manifest:
            raise NasError(f"{kernels_dir}: the paired protocol's reference network was not measured")
        reference = {"spec": manifest["reference"]["spec"], "ms": measurement(REFERENCE_ID).median_ms}
    meta = {"space": manifest.get("space"), "device": device, "protocol": protocol, "reference": reference,
            "created": device.get("date"), "calibration": None, "imported_from": str(kernels_dir)}
    with TableWriter(directory, meta) as writer:
        for unit in manifest["units"]:
            writer.append(key_from_row(unit["key"]), measurement(unit["id"]))
    nets = [n for n in manifest.get("networks", []) if n["id"].startswith("net:")]
    if nets:
        table = load_table(directory)
        specs = [ArchSpec.from_dict(n["spec"]) for n in nets]
        predictor = LatencyPredictor(table, calibrated=False)
        calibration = fit_calibration(specs, [predictor.terms(s) for s in specs],
                                      [measurement(n["id"]).median_ms for n in nets],
                                      measurement(OVERHEAD_ID).median_ms)
        update_meta(directory, calibration=calibration)
    return directory
