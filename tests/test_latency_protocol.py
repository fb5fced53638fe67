"""The timing protocol on a fake clock: statistics, interleaving, re-measuring unsteady graphs."""

import itertools

import pytest

import nas.latency.standalone_measure as sm
from nas.errors import NasError
from nas.latency import MeasureConfig


class FakeClock:
    """A clock that advances by each call's duration; ``slow_after`` (calls, factor) makes the whole
    machine slower from that call on (another tenant arrived)."""

    def __init__(self):
        self.now = 0
        self.log = []
        self.slow_after = None

    def perf_counter_ns(self):
        return self.now

    def runner(self, name, durations_ns):
        cycle = itertools.cycle(durations_ns)

        def run():
            self.log.append(name)
            factor = 1
            if self.slow_after and len(self.log) > self.slow_after[0]:
                factor = self.slow_after[1]
            self.now += next(cycle) * factor
        return run


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(sm, "time", fake)
    return fake


def test_steady_graph_median_iqr_and_run_count(clock):
    p = sm.Protocol(warmup=3, runs=50, passes=4)
    m = sm.time_interleaved({"a": clock.runner("a", [100_000])}, p)["a"]
    assert m == sm.Measurement(median_ms=0.1, iqr_ms=0.0, runs=200)
    assert len(clock.log) == (3 + 50) * 4  # no re-measure


def test_median_of_pass_medians_ignores_one_slow_pass(clock):
    # 5 passes of 20 calls; the second pass is 3x slower (say another job started)
    durations = [100_000] * 20 + [300_000] * 20 + [100_000] * 60
    p = sm.Protocol(warmup=0, runs=20, passes=5, remeasure=0)
    m = sm.time_interleaved({"a": clock.runner("a", durations)}, p)["a"]
    assert m.median_ms == pytest.approx(0.1)


def test_unsteady_graph_is_measured_again_and_steadiest_kept(clock):
    p = sm.Protocol(warmup=0, runs=50, passes=2, remeasure=2)
    runners = {"steady": clock.runner("steady", [100_000]), "noisy": clock.runner("noisy", [100_000, 300_000])}
    result = sm.time_interleaved(runners, p)
    assert clock.log.count("steady") == 100
    assert clock.log.count("noisy") == 300  # first round + 2 re-measures, its IQR/median stays > 0.1
    assert result["noisy"].spread > p.max_iqr and result["steady"].spread == 0


def test_p10_statistic(clock):
    durations = [100_000] * 2 + [200_000] * 8  # 20 % fast calls
    for statistic, expected in (("median", 0.2), ("p10", 0.1)):
        p = sm.Protocol(warmup=0, runs=50, passes=2, remeasure=0, statistic=statistic)
        assert sm.time_interleaved({"a": clock.runner("a", durations)}, p)["a"].median_ms == pytest.approx(expected)


def test_passes_are_interleaved_in_shuffled_order(clock):
    p = sm.Protocol(warmup=0, runs=50, passes=4, remeasure=0, seed=1)
    names = [f"g{i}" for i in range(6)]
    sm.time_interleaved({n: clock.runner(n, [1000]) for n in names}, p)
    order = [clock.log[i] for i in range(0, len(clock.log), 50)]  # one entry per (pass, graph)
    passes = [order[i * 6:(i + 1) * 6] for i in range(4)]
    assert all(sorted(x) == names for x in passes)  # every graph in every pass
    assert len({tuple(x) for x in passes}) > 1       # not the same order each pass


@pytest.mark.parametrize("kwargs, message", [
    ({"runtime": "tflite"}, "unknown runtime 'tflite'"),
    ({"threads": 0}, "threads must be an integer >= 1"),
    ({"runs": 10, "passes": 5}, ">= 100 timed calls"),
    ({"statistic": "mean"}, "statistic must be one of"),
])
def test_bad_settings(kwargs, message):
    with pytest.raises(NasError, match=message):
        MeasureConfig(**kwargs)


def test_paired_protocol_cancels_a_machine_that_changes_speed(clock):
    """Half-way through, everything runs 1.6x slower: absolute times mix the two speeds, ratios to
    the reference framing every burst do not."""
    graphs = {"a": 200_000, "b": 50_000, "c": 400_000}
    clock.slow_after = (280, 1.6)  # of 564 calls
    paired = sm.Protocol(warmup=2, runs=20, passes=6, remeasure=0, reference_runs=5)  # 120 calls
    result = sm.time_interleaved({n: clock.runner(n, [d]) for n, d in graphs.items()}, paired,
                                 reference=clock.runner("ref", [100_000]), reference_ms=0.1)
    for name, ns in graphs.items():
        assert result[name].median_ms == pytest.approx(ns / 1e6)
        assert result[name].iqr_ms == pytest.approx(0)
    assert clock.log.count("ref") == 6 * 4 * (2 + 5) and len(clock.log) == 564
    clock.log.clear()
    clock.slow_after = (200, 1.6)  # of 396 calls
    unpaired = sm.Protocol(warmup=2, runs=20, passes=6, remeasure=0)
    result = sm.time_interleaved({n: clock.runner(n, [d]) for n, d in graphs.items()}, unpaired)
    assert any(result[n].median_ms != pytest.approx(ns / 1e6) for n, ns in graphs.items())


def test_paired_protocol_frames_every_burst_with_the_reference(clock):
    p = sm.Protocol(warmup=0, runs=50, passes=2, remeasure=0, reference_runs=3)
    sm.time_interleaved({n: clock.runner(n, [1000]) for n in ("g0", "g1")}, p,
                        reference=clock.runner("ref", [500]), reference_ms=1.0)
    bursts = [name for i, name in enumerate(clock.log) if i == 0 or clock.log[i - 1] != name]
    assert bursts[:5] == ["ref", bursts[1], "ref", bursts[3], "ref"] and {bursts[1], bursts[3]} == {"g0", "g1"}
    assert clock.log.count("ref") == 2 * 3 * 3  # passes x (graphs + 1) x reference_runs (warm-up 0)


def test_paired_protocol_needs_its_reference(clock):
    p = sm.Protocol(warmup=0, runs=50, passes=2, reference_runs=3)
    with pytest.raises(ValueError, match="reference"):
        sm.time_interleaved({"a": clock.runner("a", [1000])}, p)
    reference = sm.time_reference(clock.runner("ref", [250_000]), p)
    assert reference.median_ms == pytest.approx(0.25) and reference.runs == 100


def test_busy_machine_warning(monkeypatch):
    import os

    from nas.latency.device import busy_warning

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.3, 0.3, 0.3))
    assert busy_warning(threads=1) is None
    monkeypatch.setattr(os, "getloadavg", lambda: (2.1, 1.0, 1.0))  # two other jobs on two cores
    assert "busy (1-minute load 2.1 on 2 cores)" in busy_warning(threads=1)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.0, 1.0, 1.0))  # one other job: one core is free
    assert busy_warning(threads=1) is None and busy_warning(threads=2) is not None
