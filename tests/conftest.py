import contextlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

# pytest imports this file as ``conftest``; test modules import its helpers as ``tests.conftest``.
# One module under both names, so that there is one FAKE_CLOCK (below), not a copy per name.
sys.modules.setdefault("tests.conftest", sys.modules[__name__])

ROOT = Path(__file__).resolve().parents[1]

# --- in parallel (pytest-xdist, ``-n auto`` in pyproject.toml) ----------------------------------------
# Each worker is one process on one core: torch and every `nas` it starts run one thread by default, so
# that two workers on 2 cores do not oversubscribe them (a test that sets its threads still does).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: a worker per core (as the CLI counts them), at most 4 (each imports torch)."""
    from nas.cli.args import cores

    return min(cores(), 4)


def pytest_collection_modifyitems(config, items) -> None:
    """The ``slow`` tests first (in their order), so that workers start the long ones early and finish
    together rather than waiting on one long test at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def load_benchmark(name: str):
    """The module of ``benchmarks/NAME.py`` (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SPACE_FILES = sorted((ROOT / "search_spaces").glob("*.yaml"))


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m nas ARGS`` in a fresh process (as a user would)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "nas", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=full_env)


def run_main(capsys, *args: str) -> subprocess.CompletedProcess:
    """Run ``nas ARGS`` in this process (its graphs timed on the test's clock); the result reads like
    :func:`run_cli`'s."""
    from nas.cli import main

    capsys.readouterr()
    with contextlib.chdir(ROOT):  # relative paths as for run_cli
        try:
            status = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's refusals
            status = exc.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["nas", *map(str, args)], status, out, err)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Bad input: exit status 2, one line on stderr naming the problem, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(params=SPACE_FILES, ids=[p.stem for p in SPACE_FILES])
def space_file(request) -> Path:
    return request.param


@pytest.fixture
def one_thread():
    """torch on one thread for the test (the suite shares 2 cores); restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def fashion_tables(tmp_path_factory) -> Path:
    """A Fashion-MNIST folder of tables holding one of this machine (a copy of a shipped table made
    this machine's) and a shipped table of another device
    (:func:`tests.latency_helpers.another_devices_shipped_fashion_table`); a test never builds the whole
    space's table."""
    import shutil

    from tests.latency_helpers import SHIPPED_FASHION, another_devices_shipped_fashion_table, as_this_machines_table

    folder = tmp_path_factory.mktemp("tables") / "fashion_mnist"
    as_this_machines_table(SHIPPED_FASHION, folder)
    other = another_devices_shipped_fashion_table()
    shutil.copytree(other, folder / other.name)
    return folder


@pytest.fixture
def tiny_test_experiment(tmp_path, fashion_tables) -> Path:
    """experiments/tiny_test.yaml with its table folder set to :func:`fashion_tables`."""
    import yaml

    data = yaml.safe_load((ROOT / "experiments" / "tiny_test.yaml").read_text())
    data["space"] = str(ROOT / "search_spaces" / "fashion_mnist.yaml")
    data["latency"]["table"] = str(fashion_tables)
    data["out"] = str(tmp_path / "tiny_test_out")
    path = tmp_path / "tiny_test.yaml"
    path.write_text(yaml.safe_dump(data))
    return path



# --- no real timing in the fast tier ------------------------------------------------------------------

class FakeLatencyClock:
    """Stands in for the ``time`` module of :mod:`nas.latency.standalone_measure` while ``on``: the
    clock moves only when a graph "runs", by a cost that grows with the graph's size in bytes (a
    wider or deeper network costs more) with a small deterministic jitter, so that measurements are
    repeatable and cost no timing runs. Off (a ``slow`` test, or :func:`real_timing`), it is the
    real clock and graphs run for real."""

    BASE_NS = 20_000

    def __init__(self):
        import time

        self.real, self.now, self.calls, self.on = time, 0, 0, True

    def perf_counter_ns(self) -> int:
        return self.now if self.on else self.real.perf_counter_ns()

    def __getattr__(self, name):
        return getattr(self.real, name)

    def advance(self, cost_ns: int) -> None:
        self.calls += 1
        jitter = ((self.calls * 7919) % 13 - 6) / 600  # within +-1 %
        self.now += int(cost_ns * (1 + jitter))


FAKE_CLOCK = FakeLatencyClock()


@contextlib.contextmanager
def real_timing():
    """Time graphs for real inside the block (for a fixture that a ``slow`` test needs real)."""
    saved, FAKE_CLOCK.on = FAKE_CLOCK.on, False
    try:
        yield
    finally:
        FAKE_CLOCK.on = saved


def _zeros_for(session):
    import numpy as np

    shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape]
    return np.zeros(shape, dtype=np.float32)


@pytest.fixture(scope="session", autouse=True)
def fake_latency_clock_installed():
    """Installs :data:`FAKE_CLOCK` for the session: onnxruntime sessions are still made (and each
    runs once, so a graph that cannot execute still fails), but while the clock is on, durations
    come from it. Fixtures of any scope are built with it on, unless they use :func:`real_timing`."""
    import nas.latency.measure as measure
    import nas.latency.runtimes as runtimes
    import nas.latency.standalone_measure as sm

    real_session, real_ort_runner, real_torch_runner = sm.ort_session, sm.ort_runner, measure.torch_runner
    costs: dict[int, int] = {}

    def session(model, threads):
        made = real_session(model, threads)
        size = len(model) if isinstance(model, (bytes, bytearray)) else os.path.getsize(model)
        costs[id(made)] = FAKE_CLOCK.BASE_NS + size
        return made

    def ort_runner(made, seed=0):
        real = real_ort_runner(made, seed)
        ran = []

        def run():
            if not FAKE_CLOCK.on:
                return real()
            if not ran:
                made.run(None, {made.get_inputs()[0].name: _zeros_for(made)})
                ran.append(True)
            FAKE_CLOCK.advance(costs.get(id(made), FAKE_CLOCK.BASE_NS))
        return run

    def torch_runner(module, input_shape, threads, seed=0):
        real = real_torch_runner(module, input_shape, threads, seed)
        size = 4 * sum(p.numel() for p in module.parameters())

        def run():
            if not FAKE_CLOCK.on:
                return real()
            FAKE_CLOCK.advance(FAKE_CLOCK.BASE_NS + size)
        return run

    with pytest.MonkeyPatch.context() as patch:
        for module in (sm, runtimes):
            patch.setattr(module, "ort_session", session)
            patch.setattr(module, "ort_runner", ort_runner)
        patch.setattr(measure, "torch_runner", torch_runner)
        patch.setattr(sm, "time", FAKE_CLOCK)
        measure._reference_runner.cache_clear()
        yield FAKE_CLOCK
        measure._reference_runner.cache_clear()


@pytest.fixture(autouse=True)
def fake_latency_clock(request):
    """The fast tier never times a graph for real: the clock is on except in ``slow`` tests. (A
    process a test starts times for real: such tests are ``slow``.)"""
    saved = FAKE_CLOCK.on
    FAKE_CLOCK.on = request.node.get_closest_marker("slow") is None
    yield FAKE_CLOCK
    FAKE_CLOCK.on = saved
