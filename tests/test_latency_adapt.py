"""`nas lut adapt`: this machine's table from another device's entries and a few networks measured here."""

import json

import pytest

from nas.errors import NasError
from nas.latency import MeasureConfig, build_table, load_predictor, load_table
from nas.latency.adapt import adapt_table
from nas.latency.build import calibration_specs
from nas.latency.device import TEST_CPU_MODEL, this_device
from nas.spec import load_space
from tests.conftest import assert_one_line_error, run_cli
from tests.latency_helpers import FAST, write_space


@pytest.fixture(scope="module")
def foreign_tiny(tmp_path_factory):
    """A tiny space and a table of it measured as if on another CPU."""
    root = tmp_path_factory.mktemp("adapt")
    space_path = write_space(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(TEST_CPU_MODEL, "Adapt Source CPU 5")
        source = build_table(root / "source", load_space(space_path), config=MeasureConfig(**FAST), progress=False)
    return space_path, source


def test_adapted_table_belongs_to_this_machine_and_keeps_the_source_entries(foreign_tiny, tmp_path):
    space_path, source = foreign_tiny
    src = load_table(source)
    assert src.device_id != this_device()["id"]
    out = adapt_table(source, tmp_path / "adapted", samples=3, progress=False)
    table = load_table(out)
    assert table.device_id == this_device()["id"]
    assert table.meta["adapted_from"]["device"] == src.device_id and table.meta["adapted_samples"] == 3
    assert table.meta["reference"]["ms"] > 0
    assert (table.entries["median_ms"].sort_index() == src.entries["median_ms"].sort_index()).all()
    calibration = table.calibration
    assert calibration["networks"] == [s.hash for s in calibration_specs(load_space(space_path), 3)]
    # three networks are too few for the full fit: the source's entries times one scale
    assert calibration["coefficients"] == {"units": calibration["scale"], "params_m": 0.0, "n_units": 0.0}
    predictor = load_predictor(out)
    spec = load_space(space_path).baseline
    assert predictor.predict(spec) == pytest.approx(calibration["scale"] * predictor.raw_sum(spec))
    assert predictor.device_id == this_device()["id"]


def test_adapting_refuses_bad_requests(foreign_tiny, tmp_path):
    _, source = foreign_tiny
    with pytest.raises(NasError, match="--samples"):
        adapt_table(source, tmp_path / "a", samples=1, progress=False)
    with pytest.raises(NasError, match="not the source table"):
        adapt_table(source, source, progress=False)
    done = adapt_table(source, tmp_path / "b", samples=2, progress=False)
    with pytest.raises(NasError, match="already holds a table"):
        adapt_table(source, done, samples=2, progress=False)


@pytest.mark.slow
def test_lut_adapt_cli(foreign_tiny, tmp_path):
    _, source = foreign_tiny
    result = run_cli("lut", "adapt", source, "--samples", "2", "--out", tmp_path / "c", "--json", "--no-progress")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["device"] == this_device()["id"] and summary["samples"] == 2
    assert summary["adapted_from"] == load_table(source).device_id
    assert_one_line_error(run_cli("lut", "adapt", source, "--samples", "1", "--out", tmp_path / "d"), "samples")
    assert_one_line_error(run_cli("lut", "adapt", tmp_path / "nothing", "--out", tmp_path / "e"), "nothing")


@pytest.mark.slow
def test_adapting_for_a_device_behind_a_measurement_server(foreign_tiny, tmp_path):
    from tests.test_device_server import TOKEN, Server

    _, source = foreign_tiny
    (tmp_path / "token").write_text(TOKEN + "\n")
    server = Server(tmp_path / "server.log", "--token-file", str(tmp_path / "token"))
    try:
        result = run_cli("lut", "adapt", source, "--samples", "2", "--out", tmp_path / "remote", "--json",
                         "--no-progress", "--device", server.url, "--token-file", tmp_path / "token")
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    table = load_table(tmp_path / "remote")
    assert "torch" not in table.device  # the server's fingerprint: the networks were measured there
    assert json.loads(result.stdout)["device"] == table.device_id
    assert server.log.read_text().count('"POST /measure HTTP/1.1" 200') >= 2  # the reference, the networks
