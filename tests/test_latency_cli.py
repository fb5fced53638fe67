"""`nas lut` / `nas latency` end to end: kill -9 and resume, the torch-free device round trip, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from nas.latency import MeasureConfig, build_table, load_predictor, load_table, space_unit_keys
from nas.latency.table import ENTRIES, META
from nas.spec import load_space
from tests.conftest import ROOT, assert_one_line_error, run_cli, run_main
from tests.latency_helpers import FAST, OTHER_SPACE, write_space

FAST_ARGS = ["--no-progress"]
ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The tiny space's table (built in-process with a fast paired protocol; the CLI build is tested below)."""
    root = tmp_path_factory.mktemp("cli")
    space_path = write_space(root)
    out = build_table(root / "table", load_space(space_path), config=MeasureConfig(**FAST, reference_runs=3),
                      progress=False)
    return root, space_path, out


def test_paired_table_keeps_its_reference_and_time_base(built):
    _, space_path, table_path = built
    table = load_table(table_path)
    reference = table.meta["reference"]
    assert reference["spec"] == load_space(space_path).baseline.to_string() and 0 < reference["ms"] < 5
    assert table.meta["protocol"]["reference_runs"] == 3
    config = MeasureConfig.for_table(table)  # what validation, search and NetAdapt measure with
    assert (config.reference, config.reference_ms, config.reference_runs) == (reference["spec"], reference["ms"], 3)


@pytest.mark.slow
def test_kill_minus_9_then_rerun_gives_a_complete_table(tmp_path):
    space_path = write_space(tmp_path)
    out = tmp_path / "table"
    cmd = [sys.executable, "-m", "nas", "lut", "build", "--space", str(space_path), "--out", str(out),
           "--group", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **ENV}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    csv = out / ENTRIES
    deadline = time.time() + 120
    while time.time() < deadline:
        if csv.exists() and len(csv.read_text().splitlines()) >= 5:  # header + a few rows
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = pd.read_csv(csv)
    expected = {k.id for k in space_unit_keys(load_space(space_path))}
    assert 4 <= len(partial) < len(expected), "the kill should land mid-build"
    result = run_cli("lut", "build", "--space", space_path, "--out", out, "--group", "2", "--json", *FAST_ARGS,
                     env=ENV)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["entries"] == len(expected)
    table = load_table(out)
    assert set(table.entries.index) == expected
    assert len(pd.read_csv(csv)) == len(expected)  # no duplicated row
    kept = table.entries.loc[partial["id"], "median_ms"].to_numpy()
    assert (kept == partial["median_ms"].to_numpy()).all()  # finished work was not redone
    assert table.calibration is not None


BLOCK_TORCH = """
import runpy, sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch.") or name == "nas" or name.startswith("nas."):
            raise ImportError(f"{name} is not installed on this device")
sys.meta_path.insert(0, NoTorch())
sys.argv = ["standalone_measure.py", sys.argv[1]]
sys.path = [p for p in sys.path if p not in ("", ".")]
try:
    runpy.run_path(sys.argv[1] + "/standalone_measure.py", run_name="__main__")
finally:
    assert not any(m == "torch" or m.startswith(("torch.", "nas")) for m in sys.modules), "torch was imported"
"""


@pytest.mark.slow  # the device process times every unit for real
def test_export_measure_without_torch_then_import(built, tmp_path):
    root, space_path, _ = built
    kernels = tmp_path / "kernels"
    result = run_cli("lut", "export-kernels", "--space", space_path, "--out", kernels, *FAST_ARGS)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((kernels / "manifest.json").read_text())
    assert len(manifest["units"]) == len(space_unit_keys(load_space(space_path)))
    assert (kernels / "standalone_measure.py").exists()
    # "the device": a Python where torch (and nas) cannot be imported, run from another folder
    device = subprocess.run([sys.executable, "-c", BLOCK_TORCH, str(kernels)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert device.returncode == 0, device.stderr
    assert (kernels / "device.json").exists()
    results = pd.read_csv(kernels / "results.csv")
    assert len(results) == len(manifest["units"]) + len(manifest["networks"]) + 1  # + the reference network
    assert manifest["protocol"]["reference_runs"] == 5 and "reference" in set(results["id"])
    result = run_cli("lut", "import", kernels, "--out", tmp_path / "imported", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"table": str(tmp_path / "imported"), "entries": len(manifest["units"]),
                                         "calibrated": True}
    predictor = load_predictor(tmp_path / "imported")
    assert predictor.table.meta["reference"]["spec"] == load_space(space_path).baseline.to_string()
    assert predictor.table.space_hash == load_space(space_path).hash
    assert predictor.predict(load_space(space_path).baseline) > 0


def test_predict_and_measure_json(built, capsys):
    root, space_path, table = built
    spec = load_space(space_path).baseline
    result = run_cli("latency", "predict", table, spec.to_string(), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["predicted_ms"] == pytest.approx(load_predictor(table).predict(spec))
    result = run_main(capsys, "latency", "measure", spec.to_string(), "--json")  # on the fake clock
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["runs"] >= 100 and 0 < out["iqr_ms"] and 0 < out["median_ms"] < 10


@pytest.mark.slow
def test_measure_times_for_real_in_a_fresh_process(built):
    spec = load_space(built[1]).baseline
    result = run_cli("latency", "measure", spec.to_string(), "--json", env=ENV)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["runs"] >= 100 and 0 < out["iqr_ms"] and 0 < out["median_ms"] < 10


def test_validate_writes_csv_png_and_json(built, tmp_path, capsys):
    _, _, table = built
    result = run_main(capsys, "lut", "validate", table, "--samples", "6", "--seed", "3", "--out", tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    for key in ("within_5", "within_10", "mape", "spearman", "madds_within_10", "madds_spearman"):
        assert key in figures
    rows = pd.read_csv(tmp_path / "validation.csv")
    assert len(rows) == 6
    calibration = set(load_table(table).calibration["networks"])
    assert not calibration & set(rows["hash"])  # never the calibration networks
    within_10 = ((rows.predicted_ms / rows.measured_ms - 1).abs() <= 0.10).mean()
    assert figures["within_10"] == pytest.approx(within_10)
    # measurements are put on the table's time base by the calibration networks timed beside them
    assert 0.2 < figures["drift"] < 5
    assert (rows.measured_ms / rows.measured_unadjusted_ms).to_numpy() == pytest.approx(figures["drift"])
    assert (tmp_path / "validation.png").stat().st_size > 10_000


@pytest.mark.slow
def test_bad_inputs_are_one_line(built, tmp_path):
    root, space_path, table = built
    spec = load_space(space_path).baseline.to_string()
    assert_one_line_error(run_cli("lut", "build", "--space", space_path, "--runtime", "tflite", "--out", tmp_path / "x"),
                          "unknown runtime 'tflite'")
    assert_one_line_error(run_cli("lut", "build", "--space", space_path, "--threads", "0", "--out", tmp_path / "x"),
                          "--threads: must be between 1")
    assert_one_line_error(run_cli("latency", "measure", spec, "--threads", "0"), "threads")
    assert_one_line_error(run_cli("lut", "build", "--space", tmp_path / "nope.yaml", "--out", tmp_path / "x"),
                          "nope.yaml")
    other = write_space(tmp_path, OTHER_SPACE, "other.yaml")
    assert_one_line_error(run_cli("lut", "build", "--space", other, "--out", table), "not of 'other'")
    assert_one_line_error(run_cli("lut", "build", "--space", space_path, "--statistic", "p10", "--out", table),
                          "statistic 'median'")
    assert_one_line_error(run_cli("lut", "build", "--space", space_path, "--reference-runs", "0", "--out", table),
                          "with a reference network")
    missing = spec.replace("ir_k3_e24_c8_s2_re", "ir_k5_e24_c8_s2_re")
    assert_one_line_error(run_cli("latency", "predict", table, missing), "block:r8_i8_e24_o8_k5_s2_se0_relu_res0")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / META).write_text((table / META).read_text())
    (broken / ENTRIES).write_text((table / ENTRIES).read_text().replace(",False,", ",maybe,", 1) + "x,y\n")
    assert_one_line_error(run_cli("latency", "predict", broken, spec), "corrupt table CSV")
    assert_one_line_error(run_cli("latency", "predict", tmp_path / "none", spec), "no latency table")
    assert_one_line_error(run_cli("latency", "measure", tmp_path / "model.onnx"), "file not found")
    assert_one_line_error(run_cli("lut", "import", tmp_path, "--out", tmp_path / "t"), "not found")
