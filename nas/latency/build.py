"""Building a table: enumerate the units, measure the missing ones, calibrate on whole networks.

``build_table`` is resumable: rows already in ``entries.csv`` are skipped, and the calibration is
only measured once every unit is there. ``ensure_entries`` adds the units a few specs need (e.g. the
narrower widths NetAdapt tries) to an existing table with the table's own protocol.
"""

from __future__ import annotations

import datetime
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from nas.errors import NasError
from nas.latency.calibration import CALIBRATION_NETWORKS, fit_calibration
from nas.latency.device import require_this_device, this_device, warn_if_busy
from nas.latency.keys import UnitKey, key_from_row, narrower_specs, space_unit_keys, unique_keys, unit_keys
from nas.latency.measure import TABLE_PROTOCOL, MeasureConfig, measure_reference, measure_specs, measure_units
from nas.latency.table import TableError, TableWriter, load_table, read_meta, table_dir, update_meta
from nas.spec.arch import ArchSpec
from nas.spec.space import SearchSpace

CALIBRATION_SEED = 1_000_003  # validation never samples with it and skips these networks anyway


def calibration_specs(space: SearchSpace, count: int = CALIBRATION_NETWORKS) -> list[ArchSpec]:
    """The fixed networks a space's table is calibrated on (the baseline + seeded samples)."""
    rng = random.Random(CALIBRATION_SEED)
    specs = {} if space.baseline_source is None else {space.baseline.hash: space.baseline}
    for _ in range(100 * count):
        if len(specs) == count:
            break
        spec = space.sample(rng)
        specs.setdefault(spec.hash, spec)
    return list(specs.values())


def space_record(space: SearchSpace) -> dict:
    """What meta.json keeps about the space: enough to rebuild it without the YAML file."""
    definition = space.to_dict()
    definition["description"] = space.description
    if space.baseline_source is not None:
        definition["baseline"] = space.baseline.to_string()
    return {"name": space.name, "hash": space.hash, "source": str(space.source), "definition": definition}


def table_space(table) -> SearchSpace:
    """The space a table was built for (from its meta.json)."""
    from nas.spec.space import space_from_dict

    record = table.meta.get("space")
    if not record:
        raise TableError(f"{table.path} was built from specs, not from a search space")
    if "definition" in record:
        space = space_from_dict(record["definition"], source=f"{table.path}/meta.json")
    else:
        from nas.spec.space import load_space

        space = load_space(record["source"])
    if space.hash != record["hash"]:
        raise TableError(f"{table.path}: the space in meta.json does not match its hash {record['hash']}")
    return space


def table_meta(space: SearchSpace | None, config: MeasureConfig) -> dict:
    return {
        "space": None if space is None else space_record(space),
        "device": this_device(config.runtime, config.threads),
        "protocol": config.protocol.as_dict(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "reference": {"spec": config.reference, "ms": config.reference_ms} if config.paired else None,
        "calibration": None,
        "build_seconds": 0.0,
    }


REFERENCE_BLOCKS = 2  # blocks of the baseline kept in the reference network


def reference_spec(space: SearchSpace | None, specs: list[ArchSpec]) -> ArchSpec:
    """The paired protocol's reference network: the space's baseline (else the first spec) cut to its
    stem, first :data:`REFERENCE_BLOCKS` blocks, last stage and head. A real network of the space
    that tracks the machine's speed as well as the whole baseline does, at a fraction of its time
    (it frames every burst of every unit, so its cost is a large share of a build)."""
    if space is not None and space.baseline_source is not None:
        full = space.baseline
    else:
        full = specs[0] if specs else calibration_specs(space)[0]
    return replace(full, blocks=full.blocks[:REFERENCE_BLOCKS])


def with_reference(directory: Path, space: SearchSpace | None, specs: list[ArchSpec],
                   config: MeasureConfig, progress: bool = True) -> MeasureConfig:
    """A paired config completed with the table's reference network and time base: those stored in
    its meta.json when resuming, else the reference chosen and timed now (once per table)."""
    if not config.paired:
        return config
    stored = read_meta(directory).get("reference") if (directory / "meta.json").exists() else None
    if stored:
        return replace(config, reference=stored["spec"], reference_ms=stored["ms"])
    config = replace(config, reference=config.reference or reference_spec(space, specs).to_string())
    if progress:
        print("timing the reference network (the table's time base) ...", file=sys.stderr, flush=True)
    return replace(config, reference_ms=measure_reference(config))


def _check_same_table(directory: Path, space: SearchSpace | None, config: MeasureConfig) -> None:
    """An existing folder may only be resumed with the same space, runtime and threads."""
    if not (directory / "meta.json").exists():
        return
    meta = read_meta(directory)
    old_space = (meta.get("space") or {}).get("hash")
    if space is not None and old_space is not None and old_space != space.hash:
        raise TableError(f"{directory} holds a table of space {meta['space'].get('name')!r} "
                         f"(hash {old_space}), not of {space.name!r} (hash {space.hash}); use another --out")
    device = meta.get("device", {})
    statistic = meta.get("protocol", {}).get("statistic", "median")
    if statistic != config.statistic:
        raise TableError(f"{directory} was measured with statistic {statistic!r}, not {config.statistic!r}")
    if bool(meta.get("reference")) != config.paired:
        raise TableError(f"{directory} was measured {'with' if meta.get('reference') else 'without'} a reference "
                         f"network (paired protocol); resume it with the same --reference-runs setting")
    if (device.get("runtime"), device.get("threads")) != (config.runtime, config.threads):
        raise TableError(f"{directory} was built with runtime {device.get('runtime')!r} and "
                         f"{device.get('threads')} thread(s), not {config.runtime!r} and {config.threads}")
    require_this_device(device, f"latency table {directory}", "add measurements taken here")


ANCHORS = 8  # existing entries re-timed beside units added to a finished table


def pick_anchors(directory: Path, keys: list[UnitKey], count: int = ANCHORS) -> dict[UnitKey, float]:
    """Entries of a finished (calibrated) table to re-time beside new units: those of ``keys`` the
    table has (the same networks' other units), topped up with seeded random entries. Empty while
    the table is still being built: one build is one measuring campaign."""
    if not (directory / "meta.json").exists():
        return {}
    table = load_table(directory)
    if table.calibration is None or len(table) == 0:
        return {}
    present = [k for k in unique_keys(keys) if k.id in table]
    chosen = present[:: max(1, len(present) // count)][:count]
    if len(chosen) < count:
        ids = sorted(set(table.entries.index) - {k.id for k in chosen})
        extra = random.Random(CALIBRATION_SEED).sample(ids, min(count - len(chosen), len(ids)))
        chosen += [key_from_row(table.entries.loc[i].to_dict() | {"id": i}) for i in extra]
    return {k: table.median_ms(k.id) for k in chosen}


def measure_missing(directory: Path, keys: Iterable[UnitKey], config: MeasureConfig, meta: dict,
                    progress: bool = True, anchors_from: Path | None = None) -> int:
    """Measure and append the keys the table lacks; returns how many were added. Units added to a
    finished table are scaled to its campaign by re-timed anchors (:func:`pick_anchors`)."""
    start = time.perf_counter()
    keys = list(keys)
    # a reference keeps paired tables on time; unpaired ones re-time anchors of the (base) table
    anchors = {} if config.paired else pick_anchors(anchors_from or directory, keys)
    with TableWriter(directory, meta) as writer:
        pending = [k for k in unique_keys(keys) if k.id not in writer.ids]
        scales = []
        if pending:
            bar = tqdm(total=len(pending), desc="measure units", unit="unit", disable=not progress)
            scales = measure_units(pending, config, on_measured=writer.append, on_group=bar.update, anchors=anchors,
                                   still_missing=writer.still_missing)
            bar.close()
    seconds = time.perf_counter() - start
    meta_now = read_meta(directory)
    updates = {"build_seconds": round((meta_now.get("build_seconds") or 0.0) + seconds, 1)}
    if anchors and scales:
        added = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "units": len(pending), "anchors": len(anchors), "drift_scales": [round(s, 4) for s in scales]}
        updates["additions"] = (meta_now.get("additions") or []) + [added]
    update_meta(directory, **updates)
    return len(pending)


def requested_units(space: SearchSpace | None, specs: list[ArchSpec],
                    narrower: bool) -> tuple[list[UnitKey], list[ArchSpec]]:
    """The units a table for ``space`` and ``specs`` needs (with ``narrower``: also of every spec one
    NetAdapt cut away), and the whole networks it is calibrated on."""
    keys: list[UnitKey] = space_unit_keys(space) if space is not None else []
    for spec in specs:
        keys += unit_keys(spec)
        if narrower:
            for other in narrower_specs(spec):
                keys += unit_keys(other)
    calib = calibration_specs(space) if space is not None else specs
    for spec in calib:
        keys += unit_keys(spec)
    return keys, calib


def build_table(out: str | Path, space: SearchSpace | None = None, specs: Iterable[ArchSpec] = (),
                config: MeasureConfig | None = None, narrower: bool = False, progress: bool = True,
                calibrate: bool = True) -> Path:
    """Build (or resume) the table at ``out``: every unit ``space`` can produce plus the units of
    ``specs`` (and, with ``narrower``, of every spec one NetAdapt cut away from them); then
    calibrate on whole networks of the space. Returns the table folder."""
    config = config or MeasureConfig()
    directory = table_dir(out)
    specs = list(specs)
    if space is None and not specs:
        raise NasError("nothing to build: give a space and/or specs")
    _check_same_table(directory, space, config)
    warn_if_busy(config.threads)
    config = with_reference(directory, space, specs, config, progress)
    keys, calib = requested_units(space, specs, narrower)
    measure_missing(directory, keys, config, table_meta(space, config), progress)
    if calibrate and load_table(directory).calibration is None:
        calibrate_table(directory, calib, config, progress)
    return directory


def calibrate_table(directory: Path, specs: list[ArchSpec], config: MeasureConfig, progress: bool = True) -> dict:
    """Measure ``specs`` end to end (interleaved) and store the fitted calibration in meta.json."""
    from nas.latency.predict import LatencyPredictor

    table = load_table(directory)
    predictor = LatencyPredictor(table, calibrated=False)
    if progress:
        print(f"calibrating on {len(specs)} whole networks ...", file=sys.stderr, flush=True)
    measured, overhead = measure_specs(specs, config.for_networks(), with_overhead=True)
    calibration = fit_calibration(specs, [predictor.entries(s) for s in specs], [m.median_ms for m in measured],
                                  overhead.median_ms)
    update_meta(directory, calibration=calibration)
    return calibration


def ensure_entries(table_path: str | Path, specs: Iterable[ArchSpec], config: MeasureConfig | None = None,
                   progress: bool = True, overlay: str | Path | None = None) -> int:
    """Measure and append the units of ``specs`` that the table (with ``overlay``) lacks, with the
    table's runtime, threads and protocol. The rows go to ``overlay`` when given (a run-local folder:
    the table itself is left as it is), else into the table. Refused (one line naming the units and
    the command) when the table is another device's. Returns the number of units added."""
    directory = table_dir(table_path)
    table = load_table(directory, overlay=overlay)
    specs = list(specs)
    missing = unique_keys([k for spec in specs for k in unit_keys(spec) if k.id not in table])
    if not missing:
        return 0
    require_this_device(table.device, f"latency table {directory}", "measure the units it lacks",
                        missing=[k.id for k in missing], command=measure_command(directory, specs))
    if config is None:
        config = MeasureConfig.for_table(table)
    elif (config.runtime, config.threads) != (table.runtime, table.threads):
        raise TableError(f"{directory} was built with {table.runtime!r} on {table.threads} thread(s); "
                         f"cannot add entries measured with {config.runtime!r} on {config.threads}")
    target = directory if overlay is None else table_dir(overlay)
    meta = table.meta if overlay is None else {**table.meta, "overlay_of": str(directory)}
    return measure_missing(target, missing, config, meta, progress, anchors_from=directory)


def measure_command(directory: Path, specs: list[ArchSpec]) -> str:
    """The command that measures the units of ``specs`` (and their narrower widths) on a table's device."""
    nets = " ".join(f"--spec '{s.to_string()}'" for s in specs[:1]) + (" --spec ..." if len(specs) > 1 else "")
    return f"nas lut build {nets} --narrower --out {directory}"


def build_default_table(out: Path, space: SearchSpace, runtime: str = "onnxruntime", threads: int = 1,
                        progress: bool = True) -> Path:
    """This machine's table of ``space`` with the default protocol (what ``nas lut build --space``
    builds), made on first use by the commands that need it; resumable like any build."""
    from nas.latency.keys import space_unit_keys

    config = MeasureConfig(runtime=runtime, threads=threads, **TABLE_PROTOCOL)
    if progress:
        print(f"no latency table of this machine for space {space.name!r}: measuring it now at {out} "
              f"({len(space_unit_keys(space))} units, a few minutes; a rerun resumes and later runs reuse it)",
              file=sys.stderr, flush=True)
    return build_table(out, space, config=config, progress=progress)
