"""Measuring units, whole networks and ONNX files with the one protocol.

:class:`MeasureConfig` is the user-facing setting (runtime, threads, run counts); the timing itself
is ``standalone_measure.time_interleaved``, shared with the torch-free entry point. A config with
``reference_runs`` > 0 (every table built by ``nas lut build``) times graphs paired with a reference
network, on the time base of ``reference_ms`` (see ``standalone_measure``).

While a measurement server is active (``nas.latency.remote.use_device``), the runners are
:class:`~nas.latency.remote.RemoteGraph` (the exported ONNX bytes) and :func:`timed` sends them to
the server, which times them with the same protocol.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from nas.errors import NasError
from nas.latency import remote
from nas.latency.calibration import overhead_onnx
from nas.latency.keys import UnitKey
from nas.latency.runtimes import RUNTIMES, Runner, onnx_runner, torch_runner
from nas.latency.standalone_measure import REFERENCE_ID, Measurement, Protocol, time_interleaved
from nas.spec.arch import ArchSpec

__all__ = ["MeasureConfig", "Measurement", "measure_units", "measure_spec", "measure_specs", "measure_onnx",
           "measure_reference", "timed", "TABLE_PROTOCOL"]


# The protocol `nas lut build` (and benchmarks/lut_build.py) builds tables with: paired with the
# reference network (the space's baseline cut to its first blocks), 5 passes x 20 calls per unit,
# 5 reference calls framing every burst. Five bursts of 20 calls frame a unit half as often as ten of
# 10 (the framing and the per-burst warm-up are most of a build's timing), for the same 100 calls.
TABLE_PROTOCOL = {"passes": 5, "runs": 20, "reference_runs": 5}

# Whole networks (calibration, validation) are timed with this many times the passes of the units:
# the same statistic, a third of its noise, for seconds of a build.
NETWORK_PASSES_FACTOR = 3


@dataclass(frozen=True)
class MeasureConfig:
    """Runtime and protocol settings. Defaults: onnxruntime, 1 thread, 4 interleaved passes x 50 runs,
    unpaired (absolute wall-clock times). ``reference`` (a spec string), ``reference_ms`` and
    ``reference_runs`` > 0 select the paired protocol that tables are built and compared with."""

    runtime: str = "onnxruntime"
    threads: int = 1
    warmup: int = 10
    runs: int = 50
    passes: int = 4
    max_iqr: float = 0.1
    remeasure: int = 2
    seed: int = 0
    group: int = 16
    statistic: str = "median"
    reference_runs: int = 0
    reference: str | None = None       # spec string of the reference network (paired protocol)
    reference_ms: float | None = None  # its latency: the time base (None until measured)

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise NasError(f"unknown runtime {self.runtime!r} (choose from: {', '.join(RUNTIMES)})")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise NasError(f"threads must be an integer >= 1, got {self.threads!r}")
        try:
            self.protocol.check()
        except ValueError as exc:
            raise NasError(f"measurement settings: {exc}") from None

    @classmethod
    def for_table(cls, table) -> "MeasureConfig":
        """The runtime, threads and protocol a table was measured with (to add entries to it or to
        measure networks comparable with its predictions)."""
        protocol = table.meta.get("protocol", {})
        names = ("warmup", "runs", "passes", "max_iqr", "remeasure", "seed", "group", "statistic", "reference_runs")
        reference = table.meta.get("reference") or {}
        return cls(runtime=table.runtime, threads=table.threads, reference=reference.get("spec"),
                   reference_ms=reference.get("ms"), **{k: protocol[k] for k in names if k in protocol})

    @classmethod
    def comparable_with(cls, table: str | Path | None, threads: int = 1) -> "MeasureConfig":
        """The settings for measuring networks whose latency is set beside ``table``'s predictions:
        the table's own (:meth:`for_table`, with :meth:`for_networks`' passes), or the default protocol at ``threads`` without a table.
        Refused (:class:`~nas.latency.device.ForeignTableError`) for another device's table: a time
        taken here is no latency of that device."""
        if table is None:
            return cls(threads=threads)
        from nas.latency.device import require_this_device
        from nas.latency.table import load_table

        loaded = load_table(table)
        require_this_device(loaded.device, f"latency table {loaded.path}", "measure networks here beside its "
                            "predictions")
        return cls.for_table(loaded).for_networks()

    @property
    def protocol(self) -> Protocol:
        return Protocol(threads=self.threads, warmup=self.warmup, runs=self.runs, passes=self.passes,
                        max_iqr=self.max_iqr, remeasure=self.remeasure, seed=self.seed, group=self.group,
                        statistic=self.statistic, reference_runs=self.reference_runs)

    @property
    def paired(self) -> bool:
        return self.reference_runs > 0

    def for_networks(self) -> "MeasureConfig":
        """The same protocol with :data:`NETWORK_PASSES_FACTOR` times the passes: for the few whole
        networks a table is calibrated and validated on, whose timings every prediction is judged by."""
        return replace(self, passes=self.passes * NETWORK_PASSES_FACTOR)


def _remote_runtime(config: MeasureConfig) -> bool:
    """Whether graphs go to a measurement server (which measures on onnxruntime only)."""
    if remote.active() is None:
        return False
    if config.runtime != "onnxruntime":
        raise NasError(f"a measurement server measures on onnxruntime, not {config.runtime!r}")
    return True


def graph_runner(model: bytes | str | Path, config: MeasureConfig) -> Runner:
    """An ONNX graph (bytes or a file) ready to time: on the active measurement server, else an
    onnxruntime session here."""
    if _remote_runtime(config):
        return remote.RemoteGraph(model if isinstance(model, bytes) else Path(model).read_bytes())
    return onnx_runner(model, config.threads, config.seed)


def unit_runner(key: UnitKey, config: MeasureConfig) -> Runner:
    from nas.latency import kernels  # torch, only when something is measured

    if config.runtime == "torch" and not _remote_runtime(config):
        return torch_runner(kernels.unit_module(key), key.input_shape, config.threads, config.seed)
    return graph_runner(kernels.export_unit(key), config)


def spec_runner(spec: ArchSpec, config: MeasureConfig) -> Runner:
    from nas.latency import kernels

    if config.runtime == "torch" and not _remote_runtime(config):
        return torch_runner(kernels.network_module(spec), kernels.network_input_shape(spec), config.threads,
                            config.seed)
    return graph_runner(kernels.export_spec(spec), config)


def reference_runner(config: MeasureConfig) -> Runner | None:
    """The paired protocol's reference network, ready to run (None when unpaired; one session per
    reference, runtime, threads and seed, kept for the process)."""
    if not config.paired:
        return None
    if not config.reference:
        raise NasError("the paired protocol (reference_runs > 0) needs a reference network")
    if _remote_runtime(config):
        return remote.RemoteGraph(_reference_onnx(config.reference))
    return _reference_runner(config.reference, config.runtime, config.threads, config.seed)


@functools.lru_cache(maxsize=4)
def _reference_runner(spec: str, runtime: str, threads: int, seed: int) -> Runner:
    return spec_runner(ArchSpec.from_string(spec), MeasureConfig(runtime=runtime, threads=threads, seed=seed))


@functools.lru_cache(maxsize=4)
def _reference_onnx(spec: str) -> bytes:
    from nas.latency import kernels

    return kernels.export_spec(ArchSpec.from_string(spec))


def measure_reference(config: MeasureConfig) -> float:
    """The reference network's own latency (ms): the time base a new table's entries are put on."""
    return timed({REFERENCE_ID: reference_runner(config)}, replace(config, reference_runs=0))[REFERENCE_ID].median_ms


def timed(runners: dict[str, Runner], config: MeasureConfig) -> dict[str, Measurement]:
    """``time_interleaved`` with the config's protocol (paired with its reference when it has one)."""
    if config.paired and not config.reference_ms:
        raise NasError("the paired protocol needs the reference network's latency (reference_ms)")
    if _remote_runtime(config):  # the same protocol, timed on the server's device
        graphs = {name: _remote_graph(name, r).onnx for name, r in runners.items()}
        reference = reference_runner(config)
        return remote.active().measure(graphs, config.protocol, reference and reference.onnx, config.reference_ms)
    return time_interleaved(runners, config.protocol, reference_runner(config), config.reference_ms)


def _remote_graph(name: str, runner: Runner) -> "remote.RemoteGraph":
    if not isinstance(runner, remote.RemoteGraph):
        raise NasError(f"{name}: only ONNX graphs can be sent to a measurement server")
    return runner


ANCHOR = "anchor:"  # runner-name prefix of the anchor units timed beside new ones


def drift_scale(anchors: dict[UnitKey, float], measured: dict[str, Measurement]) -> float:
    """How much faster the machine runs now than when the table was measured: the median over the
    anchor units of (table latency / latency measured now)."""
    ratios = [ms / measured[ANCHOR + k.id].median_ms for k, ms in anchors.items()
              if measured[ANCHOR + k.id].median_ms > 0]
    return float(np.median(ratios)) if ratios else 1.0


def measure_units(keys: Iterable[UnitKey], config: MeasureConfig,
                  on_measured: Callable[[UnitKey, Measurement], None],
                  on_group: Callable[[int], None] | None = None,
                  anchors: dict[UnitKey, float] | None = None,
                  still_missing: Callable[[list[UnitKey]], list[UnitKey]] | None = None) -> list[float]:
    """Measure units in interleaved groups of ``config.group``; ``on_measured`` gets each result as
    soon as its group is done (so a caller can write it to disk), ``on_group`` the group's size,
    ``still_missing`` (optional) drops the keys of a group that another writer measured meanwhile.

    Graphs are exported in this process, between the groups' timings: exporting the next group in a
    second process while timing (measured: a 1.5-minute build instead of 3 on 2 cores) validated at
    40 % within ±5 % against 74 % for the sequential build on the same idle machine.

    ``anchors`` (units already in a table -> their table latency) are timed in every group too, and
    the group's results are scaled by :func:`drift_scale`, so that entries added to a table later,
    while the machine runs faster or slower, stay comparable with the old ones. Returns the scales."""
    keys, anchors, scales = list(keys), anchors or {}, []
    anchor_runners = {ANCHOR + k.id: unit_runner(k, config) for k in anchors}
    for first in range(0, len(keys), config.group):
        group = keys[first:first + config.group]
        chunk = still_missing(group) if still_missing is not None else group
        runners = {k.id: unit_runner(k, config) for k in chunk}
        results = timed(runners | anchor_runners, config) if runners else {}
        scale = drift_scale(anchors, results) if anchors and runners else 1.0
        scales.append(scale)
        for key in chunk:
            on_measured(key, results[key.id].scaled(scale))
        if on_group is not None:
            on_group(len(group))
    return scales


def overhead_runner(config: MeasureConfig) -> Runner:
    """The fixed cost of one call: a trivial graph (onnxruntime) or a ReLU on one value (torch)."""
    if config.runtime == "torch":
        from torch import nn

        return torch_runner(nn.ReLU(), (1, 1), config.threads, config.seed)
    return graph_runner(overhead_onnx(), config)


def measure_specs(specs: list[ArchSpec], config: MeasureConfig, with_overhead: bool = False):
    """Whole networks end to end, interleaved with each other (same protocol as the units).

    With ``with_overhead`` returns ``(measurements, overhead measurement)``, the per-call overhead
    timed in the same passes."""
    runners = {f"net{i}": spec_runner(s, config) for i, s in enumerate(specs)}
    if with_overhead:
        runners["overhead"] = overhead_runner(config)
    results = timed(runners, config)
    measured = [results[f"net{i}"] for i in range(len(specs))]
    return (measured, results["overhead"]) if with_overhead else measured


def measure_spec(spec: ArchSpec, config: MeasureConfig | None = None) -> Measurement:
    return measure_specs([spec], config or MeasureConfig())[0]


def onnx_file_runner(path: str | Path, config: MeasureConfig) -> Runner:
    """A runner of an exported ONNX file (batch-1 input; dynamic dims are set to 1) on onnxruntime,
    here or on the active measurement server (which checks the model itself)."""
    if config.runtime != "onnxruntime":
        raise NasError(f"an ONNX file is measured on onnxruntime, not {config.runtime!r}")
    path = Path(path)
    if not path.is_file():
        raise NasError(f"file not found: {path}")
    try:
        return graph_runner(path, config)
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
        raise NasError(f"{path}: not a loadable ONNX model ({str(exc).splitlines()[0][:200]})") from None


def measure_onnx(path: str | Path, config: MeasureConfig | None = None) -> Measurement:
    """An exported ONNX model (batch-1 input; dynamic dims are set to 1) on onnxruntime."""
    config = config or MeasureConfig()
    return timed({"model": onnx_file_runner(path, config)}, config)["model"]
