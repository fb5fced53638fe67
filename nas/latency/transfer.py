"""Tables for a device without torch: export ONNX kernels here, measure there, import the results.

1. ``export_for_device`` (``nas lut export-kernels``) writes every unit of a space (and the
   calibration networks and the overhead graph) as ONNX files + ``manifest.json`` + a copy of
   ``standalone_measure.py``.
2. On the device: ``python standalone_measure.py KERNELS_DIR`` (onnxruntime + numpy only) writes
   ``results.csv`` and ``device.json``.
3. ``import_results`` (``nas lut import``) turns the folder into a normal table, calibration included.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable

from nas.errors import NasError
from nas.io import MAX_MANIFEST_BYTES, check_output_dir, read_json
from nas.latency.build import reference_spec, requested_units, space_record
from nas.latency.calibration import fit_calibration, overhead_onnx
from nas.latency.keys import KINDS, UnitKey, key_from_row, unique_keys
from nas.latency.measure import MeasureConfig
from nas.latency.predict import LatencyPredictor
from nas.latency.standalone_measure import (REFERENCE_ID, SETTINGS, ManifestError, Measurement, check_manifest,
                                            check_protocol, read_results)
from nas.latency.table import TableError, TableWriter, load_table, table_dir, update_meta
from nas.spec.arch import ACTIVATIONS, MAX_CHANNELS, ArchSpec
from nas.spec.space import SearchSpace

OVERHEAD_ID = "overhead"
MEASUREMENT_FILES = ("results.csv", "device.json", SETTINGS)  # what standalone_measure.py writes


def export_for_device(out: str | Path, space: SearchSpace | None = None, specs: Iterable[ArchSpec] = (),
                      narrower: bool = False, config: MeasureConfig | None = None, progress: bool = True) -> Path:
    """Write the kernels folder; returns the manifest's path.

    A folder that already holds measurements (results.csv, device.json) is refused: new graphs and a
    new manifest beside old results would import as a table of the old numbers."""
    config = config or MeasureConfig()
    if config.runtime != "onnxruntime":
        raise NasError("exported kernels are measured with onnxruntime; --runtime torch is not available here")
    specs = list(specs)
    if space is None and not specs:
        raise NasError("nothing to export: give a space and/or specs")
    out = check_output_dir(out, "kernels folder", create=True)
    measured = [name for name in MEASUREMENT_FILES if (out / name).exists()]
    if measured:
        raise NasError(f"{out} already holds measurements ({measured[0]}); export into a new folder (or delete "
                       f"{', '.join(measured)} to discard them)")
    keys, calib = requested_units(space, specs, narrower)
    from nas.latency.kernels import export_kernels  # torch: only here, not for `nas lut import`

    networks = {f"net:calib{i}": spec for i, spec in enumerate(calib)}
    info = {"space": None if space is None else space_record(space),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    reference = reference_spec(space, specs) if config.paired else None
    return export_kernels(out, unique_keys(keys), networks, config.protocol, info,
                          extra_graphs={OVERHEAD_ID: overhead_onnx()}, progress=progress, reference=reference)


# --- nas lut import: every field of the folder is checked before a table is made ------------------------

@dataclass(frozen=True)
class _Imported:
    manifest: dict
    device: dict
    results: dict[str, Measurement]
    keys: list[UnitKey]
    networks: list[tuple[str, ArchSpec]]
    reference_spec: str | None


def import_results(kernels_dir: str | Path, out: str | Path) -> Path:
    """Make a table at ``out`` from a measured kernels folder; returns the table folder.

    The whole folder is read and checked first; the table is then written into a temporary folder
    beside ``out`` and renamed onto it, so a failure leaves nothing behind and a retry works."""
    kernels_dir = Path(kernels_dir)
    if not kernels_dir.is_dir():
        raise NasError(f"kernels folder not found: {kernels_dir}")
    directory = table_dir(out)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise TableError(f"{directory} already holds files; import into a new folder")
    check_output_dir(directory, "table folder")
    imported = _read_kernels(kernels_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.import-", dir=directory.parent))
    try:
        _write_table(staging, imported, kernels_dir)
        if directory.exists():
            directory.rmdir()  # empty (checked above)
        os.rename(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _read_kernels(kernels_dir: Path) -> _Imported:
    try:
        manifest = check_manifest(read_json(kernels_dir / "manifest.json", NasError, "kernels manifest",
                                            MAX_MANIFEST_BYTES))
        device = _check_device(read_json(kernels_dir / "device.json", NasError, "device.json"))
        rows = read_results(kernels_dir / "results.csv")
    except ManifestError as exc:
        raise NasError(f"{kernels_dir}: {exc}") from None
    except NasError as exc:
        if not (kernels_dir / "device.json").exists() or not (kernels_dir / "results.csv").exists():
            raise NasError(f"{kernels_dir}: not measured yet (run standalone_measure.py on the device first; "
                           f"{exc})") from None
        raise
    wanted = [u["id"] for u in manifest["units"]] + [n["id"] for n in manifest.get("networks", [])]
    missing = [i for i in wanted if i not in rows]
    if missing:
        raise NasError(f"{kernels_dir}: {len(missing)} graph(s) not measured yet (first: {missing[0]}); "
                       f"run standalone_measure.py again")
    results = {gid: Measurement(float(r["median_ms"]), float(r["iqr_ms"]), int(r["runs"])) for gid, r in rows.items()}
    keys = [_unit_key(unit, f"units[{i}]") for i, unit in enumerate(manifest["units"])]
    networks = []
    for i, net in enumerate(manifest.get("networks", [])):
        if net["id"].startswith("net:"):
            try:
                networks.append((net["id"], ArchSpec.from_dict(net.get("spec"))))
            except NasError as exc:
                raise NasError(f"{kernels_dir}: manifest networks[{i}]: {exc}") from None
    if networks and OVERHEAD_ID not in results:
        raise NasError(f"{kernels_dir}: the calibration needs the {OVERHEAD_ID!r} graph, not in the manifest")
    protocol = device.get("protocol", manifest["protocol"])
    reference_spec = None
    if protocol.get("reference_runs"):
        if REFERENCE_ID not in results or "reference" not in manifest:
            raise NasError(f"{kernels_dir}: the paired protocol's reference network was not measured")
        reference_spec = manifest["reference"]["spec"]
        try:
            ArchSpec.from_string(reference_spec)
        except NasError as exc:
            raise NasError(f"{kernels_dir}: manifest reference: {exc}") from None
    return _Imported(manifest, device, results, keys, networks, reference_spec)


KEY_TYPES = {f.name: f.type for f in fields(UnitKey)}
UNIT_ACTS = (*ACTIVATIONS, "none", "")


def _unit_key(unit: dict, where: str) -> UnitKey:
    """A unit's key from the manifest: exactly the key fields, each of its type and in range, and
    matching the unit's id (an ``act`` with a comma, say, would corrupt every later read of the table)."""
    row = unit["key"]
    fields_given = set(row) - {"id"}
    if fields_given != set(KEY_TYPES):
        odd = sorted(map(str, fields_given ^ set(KEY_TYPES)))
        raise NasError(f"manifest {where}: key fields differ from a unit key's (first: {odd[0][:40]!r})")
    for name, kind in KEY_TYPES.items():
        value = row[name]
        if kind in ("bool", bool):
            ok = isinstance(value, bool)
        elif kind in ("int", int):
            ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_CHANNELS
        else:
            ok = isinstance(value, str)
        if not ok:
            raise NasError(f"manifest {where}: key.{name}: {str(value)[:40]!r} is not a valid {kind}")
    if row["kind"] not in KINDS or row["act"] not in UNIT_ACTS:
        raise NasError(f"manifest {where}: key kind {row['kind'][:40]!r} or act {row['act'][:40]!r} is not "
                       f"one of {', '.join(KINDS)} / {', '.join(a for a in UNIT_ACTS if a)}")
    key = key_from_row({k: v for k, v in row.items() if k != "id"})
    if key.id != unit["id"] or row.get("id", key.id) != key.id:
        raise NasError(f"manifest {where}: id {unit['id'][:80]!r} does not match its key ({key.id})")
    return key


def _check_device(device: Any) -> dict:
    """device.json: a mapping of plain values (text, numbers, flags, lists of text), its protocol checked."""
    if not isinstance(device, dict):
        raise NasError("device.json: expected a JSON object")
    for name, value in device.items():
        if name == "protocol":
            continue
        plain = value is None or isinstance(value, (str, int, float, bool)) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value))
        if not plain or len(str(value)) > 4096:
            raise NasError(f"device.json: {str(name)[:40]!r}: expected text, a number or a list of text")
    if "protocol" in device:
        try:
            check_protocol(device["protocol"], "device.json")
        except ManifestError as exc:
            raise NasError(str(exc)) from None
    threads = device.get("threads", 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise NasError(f"device.json: threads: expected an integer >= 1, got {str(threads)[:40]}")
    return device


def _write_table(directory: Path, imported: _Imported, kernels_dir: Path) -> None:
    manifest, device, results = imported.manifest, dict(imported.device), imported.results
    protocol = device.pop("protocol", manifest["protocol"])
    reference = None
    if imported.reference_spec is not None:
        reference = {"spec": imported.reference_spec, "ms": results[REFERENCE_ID].median_ms}
    meta = {"space": manifest.get("space"), "device": device, "protocol": protocol, "reference": reference,
            "created": device.get("date"), "calibration": None, "imported_from": str(kernels_dir)}
    with TableWriter(directory, meta) as writer:
        for unit, key in zip(manifest["units"], imported.keys):
            writer.append(key, results[unit["id"]])
    if imported.networks:
        table = load_table(directory)
        specs = [spec for _, spec in imported.networks]
        predictor = LatencyPredictor(table, calibrated=False)
        calibration = fit_calibration(specs, [predictor.entries(s) for s in specs],
                                      [results[gid].median_ms for gid, _ in imported.networks],
                                      results[OVERHEAD_ID].median_ms)
        update_meta(directory, calibration=calibration)
