"""The measurement protocol, runnable on a device that has only onnxruntime and numpy.

This file is the ONE place where latency is timed: ``nas.latency.measure`` imports its
:func:`time_interleaved` and :func:`ort_session`, and the same file is copied to a target device
(an ARM board, a laptop) by ``nas lut export-kernels``, where it runs as::

    python standalone_measure.py KERNELS_DIR [--threads N]

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
import json
import os
import platform
import random
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

def read_results(path: Path) -> dict[str, dict]:
    """Rows already measured (a torn last line from a killed run is ignored)."""
    if not path.exists():
        return {}
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        path.write_text(text)
    rows = list(csv.DictReader(text.splitlines()))
    return {r["id"]: r for r in rows if r.get("runs")}


def measure_manifest(directory: str | os.PathLike, threads: int | None = None,
                     log: Callable[[str], None] = print) -> Path:
    """Measure every graph of ``directory/manifest.json`` not yet in ``results.csv``; returns its path."""
    directory = Path(directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{directory / 'manifest.json'}: format {manifest.get('format')!r} is not {MANIFEST_FORMAT!r}")
    settings = dict(manifest["protocol"])
    settings.pop("version", None)
    if threads is not None:
        settings["threads"] = threads
    protocol = Protocol(**settings)
    protocol.check()
    graphs = manifest["units"] + manifest.get("networks", [])
    results_path = directory / "results.csv"
    done = read_results(results_path)
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
    (directory / "device.json").write_text(json.dumps(device, indent=2) + "\n")
    return results_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time the ONNX kernels of a nas kernels folder with onnxruntime.")
    parser.add_argument("directory", help="folder written by `nas lut export-kernels` (holds manifest.json)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the manifest's)")
    args = parser.parse_args(argv)
    try:
        path = measure_manifest(args.directory, threads=args.threads)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        print(f"standalone_measure: error: {exc}", file=sys.stderr)
        return 2
    print(f"results written to {path}; bring the folder back and run `nas lut import {args.directory}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
