"""Tables per device: ids, picking the target's table from a space's folder, building this machine's
on first use, prediction for any device, measurement only on its own, two writers at once."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nas.errors import NasError
from nas.latency import load_table, space_unit_keys
from nas.latency.catalog import NoTableError, device_tables, find_table, resolve_table
from nas.latency.device import TEST_CPU_MODEL, device_id, is_this_device, this_device
from nas.latency.table import ENTRIES, META
from nas.spec import load_space
from tests.conftest import ROOT, assert_one_line_error, run_cli
from tests.latency_helpers import SHIPPED_FASHION_AMD, another_devices_shipped_fashion_table, write_space

UNSEEN_CPU = {TEST_CPU_MODEL: "Never Seen CPU 7"}  # a CPU no shipped table was measured on
BASELINE = ROOT / "search_spaces" / "fashion_mnist.yaml"


def test_device_id_is_a_readable_slug_and_a_hash_of_the_identity():
    device = json.loads((SHIPPED_FASHION_AMD / META).read_text())["device"]
    assert device_id(device) == SHIPPED_FASHION_AMD.name == "amd-epyc-2c-ort1.32.0-t1-5726d391"
    assert device_id(device | {"date": "another day", "os": "another kernel"}) == device_id(device)
    for change in ({"threads": 2}, {"cpu_model": "AMD EPYC 9R14"}, {"isa_flags": ["avx2"]}, {"runtime_version": "1.33"}):
        assert device_id(device | change) != device_id(device), change
    assert device_id(device | {"isa_flags": list(reversed(device["isa_flags"]))}) == device_id(device)


def test_the_cpu_override_is_honoured_under_test_only(monkeypatch):
    monkeypatch.setenv(TEST_CPU_MODEL, "Never Seen CPU 7")
    assert this_device()["cpu_model"] == "Never Seen CPU 7"
    assert this_device()["id"].startswith("never-seen-7-")
    outside = subprocess.run([sys.executable, "-c", "from nas.latency.device import this_device; "
                              "print(this_device()['cpu_model'])"], capture_output=True, text=True, cwd=ROOT,
                             env={k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"})
    assert outside.returncode == 0 and "Never Seen" not in outside.stdout


def test_shipped_tables_live_in_device_folders_named_by_their_id():
    for space_folder in (ROOT / "latency_tables").iterdir():
        tables = device_tables(space_folder)
        assert tables, space_folder
        for ident, path in tables.items():
            assert path.name == ident


def test_the_target_devices_table_is_picked_from_a_spaces_folder(fashion_tables, monkeypatch):
    other = another_devices_shipped_fashion_table().name
    assert find_table(fashion_tables, device=other) == fashion_tables / other
    assert find_table(fashion_tables) == fashion_tables / this_device()["id"]
    assert find_table(fashion_tables / other) == fashion_tables / other  # a table folder is itself
    monkeypatch.setenv(TEST_CPU_MODEL, "Never Seen CPU 7")
    assert find_table(fashion_tables) is None
    with pytest.raises(NoTableError, match=rf"no latency table of device never-seen-7-.*tables there: .*{other}"):
        resolve_table(fashion_tables, build=False)
    with pytest.raises(NoTableError, match="no latency table of device amd-epyc-99c"):
        resolve_table(fashion_tables, device="amd-epyc-99c-ort1.32.0-t1-00000000")
    with pytest.raises(NasError, match="not a device id"):
        resolve_table(fashion_tables, device="../../etc")


def test_prediction_with_another_devices_table_names_that_device():
    result = run_cli("latency", "predict", SHIPPED_FASHION_AMD, BASELINE, "--json", env=UNSEEN_CPU)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["device"] == SHIPPED_FASHION_AMD.name and 0 < out["predicted_ms"] < 10
    by_id = run_cli("latency", "predict", SHIPPED_FASHION_AMD.parent, BASELINE, "--json", "--device",
                    SHIPPED_FASHION_AMD.name, env=UNSEEN_CPU)
    assert json.loads(by_id.stdout)["predicted_ms"] == out["predicted_ms"]


def test_measuring_into_another_devices_table_is_one_line():
    result = run_cli("lut", "validate", SHIPPED_FASHION_AMD, "--samples", "3", env=UNSEEN_CPU)
    assert_one_line_error(result, "cannot validate it here", SHIPPED_FASHION_AMD.name, "this machine is never-seen")


@pytest.mark.parametrize("make, message", [
    (lambda folder: folder.parent / "missing-folder" / "x", "no latency table"),
    (lambda folder: folder, "no latency table of device never-seen"),
])
def test_bad_table_locations_are_one_line(fashion_tables, make, message):
    result = run_cli("latency", "predict", make(fashion_tables), BASELINE, env=UNSEEN_CPU)
    assert_one_line_error(result, message)


def test_a_corrupt_meta_json_is_one_line(tmp_path):
    table = tmp_path / "table"
    table.mkdir()
    (table / ENTRIES).write_text((SHIPPED_FASHION_AMD / ENTRIES).read_text())
    for text in ("{not json", '{"format": "nas-latency-table/1", "device": {"threads": "many"}}', "[1, 2]",
                 '{"format": "nas-latency-table/1", "device": {}, "reference": {"spec": "x", "ms": NaN}}'):
        (table / META).write_text(text)
        assert_one_line_error(run_cli("latency", "predict", table, BASELINE, env=UNSEEN_CPU), "meta")


@pytest.fixture
def tiny_space(tmp_path) -> Path:
    return write_space(tmp_path)


def kill_once_rows_are_written(child: subprocess.Popen, entries: Path, rows: int = 3) -> None:
    """SIGKILL ``child`` as soon as ``entries`` holds more than ``rows`` lines (a state, not a delay)."""
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            if entries.is_file() and len(entries.read_text().splitlines()) > rows:
                child.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        child.kill()
        child.wait()


def _build_cmd(space: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "nas", "lut", "build", "--space", str(space), "--out", str(out), "--runs", "25",
            "--passes", "4", "--reference-runs", "2", "--group", "4", "--no-progress"]


@pytest.mark.slow
def test_kill_during_a_build_then_rerun_completes_without_duplicates(tiny_space, tmp_path):
    out = tmp_path / "tables" / "tiny" / "dev"
    child = subprocess.Popen(_build_cmd(tiny_space, out), cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    kill_once_rows_are_written(child, out / ENTRIES)
    written = len((out / ENTRIES).read_text().splitlines()) - 1
    assert 0 < written < len(space_unit_keys(load_space(tiny_space))), "killed too late to test a resume"
    result = subprocess.run(_build_cmd(tiny_space, out), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    table = load_table(out)
    assert set(table.entries.index) == {k.id for k in space_unit_keys(load_space(tiny_space))}
    assert table.calibration is not None


WRITER = """
import sys
from nas.latency.keys import space_unit_keys
from nas.latency.standalone_measure import Measurement
from nas.latency.table import TableWriter
from nas.spec import load_space
keys = space_unit_keys(load_space(sys.argv[1]))
order = keys if sys.argv[3] == "forward" else list(reversed(keys))
with TableWriter(sys.argv[2], {"device": {}}) as writer:
    for key in order:
        writer.append(key, Measurement(0.01, 0.001, 100))
"""


@pytest.mark.slow
def test_two_writers_at_once_lose_and_duplicate_no_row(tiny_space, tmp_path):
    out = tmp_path / "table"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tiny_space), str(out), order], cwd=ROOT)
             for order in ("forward", "backward", "forward")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    ids = [line.split(",", 1)[0] for line in (out / ENTRIES).read_text().splitlines()[1:]]
    assert sorted(ids) == sorted(k.id for k in space_unit_keys(load_space(tiny_space)))


@pytest.mark.slow
def test_this_machines_table_is_built_on_first_use_and_reused(tiny_space, tmp_path, monkeypatch):
    monkeypatch.setenv(TEST_CPU_MODEL, "Never Seen CPU 7")
    import nas.latency.build as build

    monkeypatch.setattr(build, "TABLE_PROTOCOL", {"passes": 4, "runs": 25, "reference_runs": 2, "warmup": 1})
    folder = tmp_path / "tables" / "tiny"
    space = load_space(tiny_space)
    path = resolve_table(folder, space, progress=False)
    assert path == folder / this_device()["id"] and is_this_device(load_table(path).device)
    assert len(load_table(path)) == len(space_unit_keys(space))
    monkeypatch.setattr(build, "build_table", lambda *a, **k: pytest.fail("built again"))
    assert resolve_table(folder, space, progress=False) == path
    assert resolve_table(folder, progress=False) == path  # the space is read from the folder's tables


@pytest.mark.slow
def test_lut_build_without_out_prints_this_machines_table(tiny_space, tmp_path):
    tables = tmp_path / "latency_tables"
    tables.mkdir()
    spaces = tmp_path / "search_spaces"
    spaces.mkdir()
    space = spaces / "tiny.yaml"
    space.write_text(tiny_space.read_text())
    args = ["lut", "build", "--space", space, "--runs", "25", "--passes", "4", "--reference-runs", "2", "--json"]
    first = run_cli(*args, env=UNSEEN_CPU)
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["device"].startswith("never-seen-7-") and out["entries"] == len(space_unit_keys(load_space(space)))
    assert Path(out["table"]) == tables / "tiny" / out["device"] and out["seconds"] >= 0
    again = json.loads(run_cli(*args, env=UNSEEN_CPU).stdout)
    assert again["table"] == out["table"] and again["entries"] == out["entries"]


def test_the_reference_network_is_the_baseline_cut_to_its_first_blocks():
    from nas.latency.build import reference_spec
    from nas.spec import count_madds

    space = load_space(BASELINE)
    reference = reference_spec(space, [])
    assert reference.blocks == space.baseline.blocks[:2] and reference.stem == space.baseline.stem
    assert reference.last == space.baseline.last and count_madds(reference) < count_madds(space.baseline) / 2


def test_a_table_claiming_another_spaces_hash_is_refused(tmp_path):
    table = tmp_path / "table"
    table.mkdir()
    (table / ENTRIES).write_text((SHIPPED_FASHION_AMD / ENTRIES).read_text())
    meta = json.loads((SHIPPED_FASHION_AMD / META).read_text())
    meta["space"]["hash"] = "0123456789abcdef"
    (table / META).write_text(json.dumps(meta))
    assert_one_line_error(run_cli("latency", "predict", table, BASELINE, env=UNSEEN_CPU), "space definition has hash")


@pytest.mark.slow
def test_a_build_killed_on_first_use_is_resumed_by_the_next_run(tiny_space, tmp_path, monkeypatch):
    """kill -9 during the automatic build (here: a build stopped after its first rows, before the
    calibration), then the next run: the build is resumed to a complete table, not used half-made."""
    monkeypatch.setenv(TEST_CPU_MODEL, "Never Seen CPU 7")
    import nas.latency.build as build

    monkeypatch.setattr(build, "TABLE_PROTOCOL", {"passes": 4, "runs": 25, "reference_runs": 2, "warmup": 1})
    folder = tmp_path / "tables" / "tiny"
    space = load_space(tiny_space)
    out = folder / this_device()["id"]
    child = subprocess.Popen([sys.executable, "-c", f"""
import nas.latency.build as build
build.TABLE_PROTOCOL = {{"passes": 4, "runs": 25, "reference_runs": 2, "warmup": 1}}
from nas.latency.catalog import resolve_table
from nas.spec import load_space
resolve_table({str(folder)!r}, load_space({str(tiny_space)!r}), progress=False)
"""], cwd=ROOT, env={**os.environ, TEST_CPU_MODEL: "Never Seen CPU 7"})
    kill_once_rows_are_written(child, out / ENTRIES)
    assert load_table(out).calibration is None, "killed too late to test a resume"
    assert resolve_table(folder, space, progress=False) == out
    table = load_table(out)
    assert set(table.entries.index) == {k.id for k in space_unit_keys(space)} and table.calibration is not None
