"""The timing protocol on a fake clock: statistics, interleaving, re-measuring unsteady graphs."""

import itertools

import pytest

import nas.latency.standalone_measure as sm
from nas.errors import NasError
from nas.latency import MeasureConfig


class FakeClock:
    def __init__(self):
        self.now = 0
        self.log = []

    def perf_counter_ns(self):
        return self.now

    def runner(self, name, durations_ns):
        cycle = itertools.cycle(durations_ns)

        def run():
            self.log.append(name)
            self.now += next(cycle)
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
