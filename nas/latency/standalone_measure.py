"""The measurement protocol, runnable on a device that has only onnxruntime and numpy.

This file is the ONE place where latency is timed: ``nas.latency.measure`` imports its
:func:`time_interleaved` and :func:`ort_session`, and the same file is copied to a target device
(an ARM board, a laptop) by ``nas lut export-kernels``, where it runs as::

    python standalone_measure.py KERNELS_DIR [--threads N]

The measurement server copied beside it serves the same protocol over HTTP (see that file)::

    python device_server.py [--host 127.0.0.1] [--port 8765] [--token-file FILE]

It reads ``KERNELS_DIR/manifest.json`` (written by ``nas lut export-kernels``), times every ONNX
graph listed there with the protocol below and appends one CSV row per graph to
``KERNELS_DIR/results.csv`` (flushed per row; a rerun skips graphs already measured), then writes
the device description to ``KERNELS_DIR/device.json``. ``nas lut import KERNELS_DIR`` turns that
into a latency table.

Protocol: onnxruntime CPUExecutionProvider, batch 1, ``intra_op_num_threads`` explicit (default 1),
``inter_op_num_threads`` 1, sequential execution, graph optimisation ORT_ENABLE_ALL, one fixed
input per graph. Graphs are timed *interleaved*: several passes over a group of graphs in a
shuffled order, each pass a warm-up then ``runs`` timed calls per graph; a graph's latency is the
median of its per-pass medians (with ``statistic="p10"``: of its per-pass 10th percentiles; the
field keeps the name ``median_ms``), its spread the IQR of all its timed calls. Graphs whose
IQR/median exceeds ``max_iqr`` (0.1) are measured again (up to ``remeasure`` times), keeping the
steadiest measurement.

Paired with a reference (``reference_runs`` > 0, what tables are built with): a virtual CPU shared
with other tenants changes speed by tens of percent within a minute, so absolute times taken a minute
apart do not compare. Every burst of a graph is then framed by ``reference_runs`` calls of one fixed
reference graph (the space's baseline network), and a pass's value is the graph's statistic divided
by the mean of the two neighbouring reference statistics; the latency is the median of those ratios
times ``reference_ms``, the reference's own latency measured once when the table was started. All of
a table's entries and every network measured beside it are so on one time base; the spread is the
IQR of the per-pass values.

Imports: standard library, numpy and onnxruntime only (a test enforces it).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import json
import math
import os
import platform
import random
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

PROTOCOL_VERSION = "nas-latency-protocol/1"
MANIFEST_FORMAT = "nas-kernels/1"
RESULT_FIELDS = ("id", "median_ms", "iqr_ms", "runs")
# Per-pass statistic -> percentile. "p10" resists a machine shared with other jobs: a preempted call
# is slow, and on a busy machine more than half of the calls of a long graph can be preempted.
STATISTICS = {"median": 50, "p10": 10, "min": 0}
POSITIVE = ("threads", "runs", "passes", "group")  # Protocol fields that must be >= 1 (the others >= 0)
REFERENCE_ID = "reference"  # the reference graph's id in a kernels manifest and its results.csv


@dataclass(frozen=True)
class Protocol:
    """How many calls are timed and how (the measurement's settings, recorded with every table)."""

    threads: int = 1
    warmup: int = 10      # untimed calls before each pass of each graph
    runs: int = 50        # timed calls per pass
    passes: int = 4       # interleaved passes (total timed calls = runs * passes >= 100)
    max_iqr: float = 0.1  # IQR/median above this -> measure again
    remeasure: int = 2    # extra attempts for unsteady graphs
    seed: int = 0         # shuffling of the pass order and the fixed inputs
    group: int = 16       # graphs timed interleaved together (and written to disk together)
    statistic: str = "median"  # per-pass statistic: "median" (the protocol) or "p10" (10th percentile)
    reference_runs: int = 0    # > 0: calls of the reference graph framing every burst (paired protocol)

    def check(self) -> None:
        for name in ("threads", "warmup", "runs", "passes", "group", "reference_runs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name in POSITIVE else 0):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {', '.join(STATISTICS)}, got {self.statistic!r}")
        if self.runs * self.passes < 100:
            raise ValueError(f"runs x passes must be >= 100 timed calls, got {self.runs} x {self.passes}")

    def as_dict(self) -> dict:
        return {"version": PROTOCOL_VERSION, **asdict(self)}


@dataclass(frozen=True)
class Measurement:
    """A timed graph: median latency, interquartile range (both ms) and the number of timed calls."""

    median_ms: float
    iqr_ms: float
    runs: int

    @property
    def spread(self) -> float:
        """IQR / median."""
        return self.iqr_ms / self.median_ms if self.median_ms > 0 else float("inf")

    def scaled(self, factor: float) -> "Measurement":
        return Measurement(median_ms=self.median_ms * factor, iqr_ms=self.iqr_ms * factor, runs=self.runs)


# --- onnxruntime ------------------------------------------------------------------------------------

def ort_session(model: str | bytes | os.PathLike, threads: int):
    """An inference session with the protocol's options (CPU, explicit threads, ORT_ENABLE_ALL)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    model = os.fspath(model) if isinstance(model, os.PathLike) else model
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def fixed_input(shape: Iterable[int], seed: int = 0) -> np.ndarray:
    """The one input a graph is timed with (float32, standard normal, seeded)."""
    return np.random.default_rng(seed).standard_normal(tuple(shape)).astype(np.float32)


def ort_runner(session, seed: int = 0) -> Callable[[], object]:
    """A zero-argument callable running one inference of ``session`` on its fixed input."""
    inp = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    feed = {inp.name: fixed_input(shape, seed)}
    outputs = [o.name for o in session.get_outputs()]
    return lambda: session.run(outputs, feed)


# --- the timing loop ----------------------------------------------------------------------------------

def _time_calls(run: Callable[[], object], warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        run()
    clock = time.perf_counter_ns
    samples = []
    for _ in range(runs):
        start = clock()
        run()
        samples.append(clock() - start)
    return samples


def _statistic(samples: list[float], protocol: Protocol) -> float:
    return float(np.percentile(samples, STATISTICS[protocol.statistic]))


def _one_round(runners: dict[str, Callable[[], object]], protocol: Protocol, rng: random.Random,
               reference: Callable[[], object] | None = None) -> dict[str, Measurement]:
    names = list(runners)
    per_pass: dict[str, list[float]] = {n: [] for n in names}
    pooled: dict[str, list[float]] = {n: [] for n in names}

    def reference_value() -> float:
        return _statistic(_time_calls(reference, min(protocol.warmup, 2), protocol.reference_runs), protocol)

    for _ in range(protocol.passes):
        rng.shuffle(names)
        before = reference_value() if reference is not None else 1.0
        for name in names:
            samples = _time_calls(runners[name], protocol.warmup, protocol.runs)
            pooled[name].extend(samples)
            value = _statistic(samples, protocol)
            if reference is not None:
                after = reference_value()
                value, before = value / ((before + after) / 2), after
            per_pass[name].append(value)
    out = {}
    for name in runners:
        if reference is None:
            q1, q3 = np.percentile(pooled[name], [25, 75])
            median, iqr = float(np.median(per_pass[name])) / 1e6, float(q3 - q1) / 1e6
        else:  # ratios to the reference (scaled to ms by time_interleaved)
            q1, q3 = np.percentile(per_pass[name], [25, 75])
            median, iqr = float(np.median(per_pass[name])), float(q3 - q1)
        out[name] = Measurement(median_ms=median, iqr_ms=iqr, runs=len(pooled[name]))
    return out


def time_interleaved(runners: dict[str, Callable[[], object]], protocol: Protocol,
                     reference: Callable[[], object] | None = None,
                     reference_ms: float | None = None) -> dict[str, Measurement]:
    """Time every runner with the protocol: interleaved passes, shuffled order, re-measure unsteady ones.

    With ``protocol.reference_runs`` > 0, ``reference`` (a runner) frames every burst and the results
    are ratios to it times ``reference_ms`` (see the module docstring)."""
    protocol.check()
    if protocol.reference_runs and (reference is None or not reference_ms or reference_ms <= 0):
        raise ValueError("the paired protocol (reference_runs > 0) needs a reference graph and its latency")
    reference = reference if protocol.reference_runs else None
    rng = random.Random(protocol.seed)
    result = _one_round(runners, protocol, rng, reference)
    for _ in range(protocol.remeasure):
        unsteady = {n: r for n, r in runners.items() if result[n].spread > protocol.max_iqr}
        if not unsteady:
            break
        again = _one_round(unsteady, protocol, rng, reference)
        for name, m in again.items():
            if m.spread < result[name].spread:
                result[name] = m
    if reference is not None:
        result = {name: m.scaled(reference_ms) for name, m in result.items()}
    return result


def time_reference(reference: Callable[[], object], protocol: Protocol) -> Measurement:
    """The reference graph's own latency (unpaired, the same counts): the paired protocol's time base."""
    unpaired = Protocol(**{**asdict(protocol), "reference_runs": 0})
    return time_interleaved({REFERENCE_ID: reference}, unpaired)[REFERENCE_ID]


# --- the device -------------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def isa_flags() -> list[str]:
    """SIMD-relevant CPU flags from /proc/cpuinfo (x86 'flags' or ARM 'Features')."""
    wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
              "amx_tile", "neon", "asimd", "asimddp", "sve", "i8mm", "fphp", "asimdhp", "bf16")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("flags", "features")):
                have = set(line.split(":", 1)[1].split())
                return [f for f in wanted if f in have]
    except OSError:
        pass
    return []


# The fingerprint fields a table's numbers depend on: equal fields, same device.
IDENTITY = ("cpu_model", "cores", "isa_flags", "machine", "runtime", "runtime_version", "threads")


def _slug(text: str) -> str:
    words = re.sub(r"\((r|tm)\)|\bprocessor\b|\bcpu\b|\d+-core", " ", text.lower())
    return "-".join(re.findall(r"[a-z0-9.]+", words))[:40].strip("-.") or "cpu"


def device_id(device: dict) -> str:
    """``<cpu>-<cores>c-<runtime><version>-t<threads>-<hash8>``; the hash covers :data:`IDENTITY`."""
    identity = {k: device.get(k) for k in IDENTITY}
    identity["isa_flags"] = sorted(identity["isa_flags"] or [])
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]
    runtime = {"onnxruntime": "ort", "torch": "torch"}.get(str(device.get("runtime")), "rt")
    return (f"{_slug(str(device.get('cpu_model', 'cpu')))}-{device.get('cores')}c-"
            f"{runtime}{device.get('runtime_version')}-t{device.get('threads')}-{digest}")


def device_fingerprint(runtime: str, threads: int, runtime_version: str | None = None) -> dict:
    """What a table's numbers depend on: CPU, cores, ISA, OS, versions, runtime and threads."""
    if runtime_version is None and runtime == "onnxruntime":
        import onnxruntime

        runtime_version = onnxruntime.__version__
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "isa_flags": isa_flags(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "runtime": runtime,
        "runtime_version": runtime_version,
        "threads": threads,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


# --- the manifest round trip -------------------------------------------------------------------------------
# A manifest and a results.csv come from another machine: every field is checked before any work
# (a ManifestError, a ValueError, names the file and the field).

MAX_MANIFEST_BYTES = 64 << 20
MAX_GRAPHS = 10 ** 6
_GRAPH_ID = re.compile(r"[a-z0-9_:.]{1,200}", re.ASCII)               # unit ids, net:calibN, overhead, reference
_GRAPH_FILE = re.compile(r"graphs/[a-z0-9_.]{1,250}\.onnx", re.ASCII)  # inside the kernels folder, no '..'
SETTINGS = "results.settings.json"  # the protocol results.csv is measured with (a rerun must match it)


class ManifestError(ValueError):
    """A manifest, results.csv or device.json that is malformed or does not belong together."""


def load_json_file(path: Path, max_bytes: int = MAX_MANIFEST_BYTES):
    """A JSON file of at most ``max_bytes`` (no NaN/Infinity); ManifestError otherwise."""
    try:
        if path.stat().st_size > max_bytes:
            raise ManifestError(f"{path}: more than {max_bytes:,} bytes")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{path.name} not found in {path.parent}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read ({exc})") from None

    def refuse(name: str):
        raise ManifestError(f"{path}: {name} is not a number JSON allows")

    try:
        return json.loads(text, parse_constant=refuse)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: corrupt JSON ({exc.msg} at line {exc.lineno})") from None
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, ManifestError):
            raise
        raise ManifestError(f"{path}: corrupt JSON ({type(exc).__name__})") from None


def _is_int(value, minimum: int = 0, maximum: int = 2 ** 31) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= maximum


def _is_number(value, minimum: float = 0.0) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and value >= minimum)


def check_protocol(settings, where: str) -> Protocol:
    """A Protocol from a manifest's or device.json's ``protocol`` mapping, every field checked."""
    if not isinstance(settings, dict):
        raise ManifestError(f"{where}: protocol: expected a mapping")
    settings = dict(settings)
    version = settings.pop("version", PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION:
        raise ManifestError(f"{where}: protocol version {str(version)[:40]!r} is not {PROTOCOL_VERSION!r}")
    names = set(Protocol.__dataclass_fields__)
    unknown = sorted(str(k) for k in settings if k not in names)
    if unknown:
        raise ManifestError(f"{where}: protocol: unknown field {unknown[0][:40]!r}")
    if (not _is_number(settings.get("max_iqr", 0.1)) or not _is_int(settings.get("remeasure", 2), 0, 100)
            or not _is_int(settings.get("seed", 0), 0, 2 ** 32 - 1)):
        raise ManifestError(f"{where}: protocol: max_iqr, remeasure or seed out of range")
    counts = ("threads", "warmup", "runs", "passes", "group", "reference_runs")
    if any(not _is_int(settings.get(name, 1), 0, 10 ** 6) for name in counts):
        raise ManifestError(f"{where}: protocol: {', '.join(counts)} must be integers from 0 to 10^6")
    if not isinstance(settings.get("statistic", "median"), str):
        raise ManifestError(f"{where}: protocol: statistic must be one of {', '.join(STATISTICS)}")
    protocol = Protocol(**settings)
    try:
        protocol.check()
    except ValueError as exc:
        raise ManifestError(f"{where}: protocol: {exc}") from None
    return protocol


def _check_graph(graph, where: str) -> None:
    if not isinstance(graph, dict):
        raise ManifestError(f"{where}: expected a mapping")
    gid, file, shape = graph.get("id"), graph.get("file"), graph.get("input_shape")
    if not isinstance(gid, str) or not _GRAPH_ID.fullmatch(gid):
        raise ManifestError(f"{where}: id {str(gid)[:60]!r} is not [a-z0-9_:.]")
    if not isinstance(file, str) or not _GRAPH_FILE.fullmatch(file):
        raise ManifestError(f"{where} ({gid}): file {str(file)[:60]!r} is not graphs/NAME.onnx")
    if not isinstance(shape, list) or not 1 <= len(shape) <= 4 or not all(_is_int(d, 1, 1 << 16) for d in shape):
        raise ManifestError(f"{where} ({gid}): input_shape must be 1 to 4 integers from 1 to 65536")


def check_manifest(manifest, where: str = "manifest.json") -> dict:
    """A kernels manifest with every field checked (the unit keys themselves are checked by ``nas lut
    import``); returns it. ManifestError names the first bad field."""
    if not isinstance(manifest, dict):
        raise ManifestError(f"{where}: expected a JSON object")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f"{where}: format {str(manifest.get('format'))[:40]!r} is not {MANIFEST_FORMAT!r}")
    check_protocol(manifest.get("protocol"), where)
    units, networks = manifest.get("units"), manifest.get("networks", [])
    if not isinstance(units, list) or not isinstance(networks, list) or len(units) + len(networks) > MAX_GRAPHS:
        raise ManifestError(f"{where}: units and networks must be lists of at most {MAX_GRAPHS:,} graphs")
    for i, unit in enumerate(units):
        _check_graph(unit, f"{where}: units[{i}]")
        if not isinstance(unit.get("key"), dict):
            raise ManifestError(f"{where}: units[{i}]: key: expected a mapping")
    for i, net in enumerate(networks):
        _check_graph(net, f"{where}: networks[{i}]")
    reference = manifest.get("reference")
    if reference is not None:
        _check_graph(reference, f"{where}: reference")
        if reference["id"] != REFERENCE_ID or not isinstance(reference.get("spec"), str):
            raise ManifestError(f"{where}: reference: id must be {REFERENCE_ID!r} with a spec string")
    ids = [g["id"] for g in units + networks] + ([REFERENCE_ID] if reference is not None else [])
    if len(set(ids)) != len(ids):
        raise ManifestError(f"{where}: a graph id appears twice")
    return manifest


def read_manifest(directory: Path) -> dict:
    return check_manifest(load_json_file(directory / "manifest.json"), str(directory / "manifest.json"))


def _complete_text(path: Path) -> str:
    """The file's text up to its last newline (a torn last line of a killed run is left out, not rewritten)."""
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path}: more than {MAX_MANIFEST_BYTES:,} bytes")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8 text") from None
    return text[: text.rfind("\n") + 1]


def read_results(path: Path) -> dict[str, dict]:
    """Rows already measured, every field checked (a torn last line from a killed run is ignored;
    readers never write)."""
    if not path.exists():
        return {}
    lines = _complete_text(path).split("\n")[:-1]
    if not lines:
        return {}
    if lines[0].rstrip("\r").split(",") != list(RESULT_FIELDS):
        raise ManifestError(f"{path}: header is not {','.join(RESULT_FIELDS)}")
    rows = {}
    for number, line in enumerate(lines[1:], start=2):
        cells = line.rstrip("\r").split(",")
        if len(cells) != len(RESULT_FIELDS):
            raise ManifestError(f"{path}:{number}: expected {len(RESULT_FIELDS)} fields, got {len(cells)}")
        gid, median, iqr, runs = cells
        try:
            values = (float(median), float(iqr)) if median.isascii() and iqr.isascii() else (math.nan, math.nan)
        except ValueError:
            values = (math.nan, math.nan)
        count = int(runs) if runs.isascii() and runs.isdigit() and len(runs) < 10 else 0
        if (not _GRAPH_ID.fullmatch(gid) or not all(math.isfinite(v) and v >= 0 for v in values)
                or values[0] <= 0 or count < 1):
            raise ManifestError(f"{path}:{number}: not a measured graph (id, median_ms > 0, iqr_ms >= 0, runs >= 1)")
        rows[gid] = {"id": gid, "median_ms": median, "iqr_ms": iqr, "runs": runs}
    return rows


def _check_rerun(directory: Path, results_path: Path, done: dict, protocol: Protocol, manifest: dict) -> None:
    """results.csv is measured with one protocol: a rerun with another one (e.g. other --threads) is
    refused, never mixed in (the table would claim the second thread count for rows of the first)."""
    settings_path = directory / SETTINGS
    if not done:
        return
    if settings_path.exists():
        recorded_settings = load_json_file(settings_path)
        if not isinstance(recorded_settings, dict):
            raise ManifestError(f"{settings_path}: expected a JSON object")
        recorded = check_protocol(recorded_settings.get("protocol"), str(settings_path))
    else:  # results from before the settings file: measured with the manifest's protocol
        recorded = check_protocol(manifest["protocol"], "manifest.json")
    if recorded != protocol:
        raise ManifestError(f"{results_path} holds {len(done)} graph(s) measured with {recorded.threads} thread(s) "
                            f"and/or other settings than this run ({protocol.threads} thread(s)); rerun with "
                            f"--threads {recorded.threads} to resume, or delete {results_path.name} and {SETTINGS} "
                            f"to start over")


def _write_settings(directory: Path, protocol: Protocol) -> None:
    tmp = directory / (SETTINGS + ".tmp")
    tmp.write_text(json.dumps({"protocol": protocol.as_dict()}, indent=1) + "\n")
    os.replace(tmp, directory / SETTINGS)


def _repair_torn_tail(path: Path) -> None:
    """The writer (only) cuts a torn last line before appending after it."""
    if path.exists():
        size = len(_complete_text(path).encode("utf-8"))
        if size != path.stat().st_size:
            os.truncate(path, size)


def measure_manifest(directory: str | os.PathLike, threads: int | None = None,
                     log: Callable[[str], None] = print) -> Path:
    """Measure every graph of ``directory/manifest.json`` not yet in ``results.csv``; returns its path.

    A rerun resumes; a rerun with other settings (``--threads``) than the rows already measured is
    refused (ManifestError), never mixed in."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    settings = dict(manifest["protocol"])
    settings.pop("version", None)
    if threads is not None:
        settings["threads"] = threads
    protocol = Protocol(**settings)
    protocol.check()
    graphs = manifest["units"] + manifest.get("networks", [])
    results_path = directory / "results.csv"
    done = read_results(results_path)
    _check_rerun(directory, results_path, done, protocol, manifest)
    if not done:
        _write_settings(directory, protocol)
    _repair_torn_tail(results_path)
    pending = [g for g in graphs if g["id"] not in done]
    log(f"{len(graphs)} graphs, {len(done)} already measured, {len(pending)} to go ({protocol.threads} thread(s))")
    new_file = not results_path.exists() or results_path.stat().st_size == 0
    start = time.perf_counter()

    def runner(graph: dict) -> Callable[[], object]:
        return ort_runner(ort_session(directory / graph["file"], protocol.threads), protocol.seed)

    with results_path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=RESULT_FIELDS)

        def write(gid: str, m: Measurement) -> None:
            writer.writerow({"id": gid, "median_ms": f"{m.median_ms:.6f}", "iqr_ms": f"{m.iqr_ms:.6f}", "runs": m.runs})
            fh.flush()

        if new_file:
            writer.writeheader()
            fh.flush()
        reference, reference_ms = None, None
        if protocol.reference_runs:  # the paired protocol: the reference's own latency first (once)
            reference = runner(manifest["reference"])
            if REFERENCE_ID not in done:
                write(REFERENCE_ID, time_reference(reference, protocol))
                done = read_results(results_path)
            reference_ms = float(done[REFERENCE_ID]["median_ms"])
        for first in range(0, len(pending), protocol.group):
            chunk = pending[first:first + protocol.group]
            runners = {g["id"]: runner(g) for g in chunk}
            for gid, m in time_interleaved(runners, protocol, reference, reference_ms).items():
                write(gid, m)
            done_now = first + len(chunk)
            rate = done_now / (time.perf_counter() - start)
            log(f"{done_now}/{len(pending)} measured, ETA {(len(pending) - done_now) / rate:.0f} s")
    device = device_fingerprint("onnxruntime", protocol.threads)
    device["protocol"] = protocol.as_dict()
    tmp = directory / "device.json.tmp"
    tmp.write_text(json.dumps(device, indent=2) + "\n")
    os.replace(tmp, directory / "device.json")
    return results_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time the ONNX kernels of a nas kernels folder with onnxruntime.")
    parser.add_argument("directory", help="folder written by `nas lut export-kernels` (holds manifest.json)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the manifest's)")
    parser.add_argument("--force-threads", action="store_true", help="allow --threads above this machine's cores")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    if args.threads is not None and not (1 <= args.threads <= cores or (args.force_threads and args.threads >= 1)):
        parser.error(f"--threads {args.threads}: must be from 1 to this machine's {cores} cores "
                     f"(add --force-threads to use more)")
    try:
        path = measure_manifest(args.directory, threads=args.threads)
    except (OSError, ValueError) as exc:  # ManifestError is a ValueError
        print(f"standalone_measure: error: {exc}", file=sys.stderr)
        return 2
    print(f"results written to {path}; bring the folder back and run `nas lut import {args.directory}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
