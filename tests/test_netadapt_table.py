"""NetAdapt with a real (tiny) latency table: units for narrower widths are measured on demand,
the result is measured end to end, and the CLI refuses out-of-reach targets and foreign tables."""

from __future__ import annotations

import pytest
import torch

from conftest import assert_one_line_error, run_cli
from nas.models import build_model
from nas.spec import ArchSpec
from nas.train import save_checkpoint

torch.set_num_threads(1)

SPEC = ArchSpec.from_string("in16x1 stem_c16_k3_s1_hs ir_k3_e192_c64_s1_re ir_k3_e192_c64_s1_re last_c32_hs "
                            "head_c0_hs_d0.0 cls3")


def unit_cost_ms(key) -> float:
    """A deterministic stand-in for a unit's timing: a fixed cost plus one per multiply-add. Timed units
    on a shared machine change speed between measurements (one CI run priced the narrowest reachable
    network above the start); these tests check NetAdapt's use of a table, not the machine's clock."""
    out_size = -(-key.size // key.stride)
    macs = {"stem": out_size ** 2 * key.in_ch * key.out * key.kernel ** 2,
            "block": key.size ** 2 * key.in_ch * key.exp + out_size ** 2 * key.exp * (key.kernel ** 2 + key.out),
            "last": key.size ** 2 * key.in_ch * key.out,
            "head": key.in_ch * key.out if not key.hidden else key.hidden * (key.in_ch + key.out)}[key.kind]
    return 0.002 + macs * 1e-8


@pytest.fixture(scope="module", autouse=True)
def deterministic_units():
    """Units are priced by :func:`unit_cost_ms`; whole networks are still timed for real."""
    import nas.latency.measure as measure
    from nas.latency.keys import UnitKey
    from nas.latency.standalone_measure import Measurement

    real_timed = measure.timed

    def timed(runners, config):
        units = {name: r for name, r in runners.items() if isinstance(r, UnitKey)}
        others = {name: r for name, r in runners.items() if name not in units}
        results = real_timed(others, config) if others else {}
        return results | {name: Measurement(unit_cost_ms(key), 0.0, config.runs) for name, key in units.items()}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(measure, "unit_runner", lambda key, config: key)
        patch.setattr(measure, "timed", timed)
        yield


@pytest.fixture(scope="module")
def table(tmp_path_factory, deterministic_units):
    from nas.latency import MeasureConfig, build_table

    out = tmp_path_factory.mktemp("lut") / "tiny"
    return build_table(out, specs=[SPEC], config=MeasureConfig(runs=50, passes=2, warmup=3), progress=False,
                       calibrate=False)


@pytest.mark.slow
def test_netadapt_measures_missing_widths_and_the_result(table, tmp_path):
    from nas.latency import load_table
    from nas.netadapt import NetAdaptConfig, TableLatency, netadapt

    setup = {}
    exec(__import__("test_netadapt_loop").SETUP, setup)  # the toy data of the loop tests
    before = len(load_table(table))
    splits = setup["toy_splits"](size=16)
    latency = TableLatency(table, progress=False)
    config = NetAdaptConfig(target="0.9", short_steps=2, long_epochs=0, delta_fraction=0.1, batch_size=16)
    result = netadapt(SPEC, build_model(SPEC, seed=0), splits, latency, config, tmp_path / "run",
                      measure=latency.measure, progress=False, threads=1)
    assert len(load_table(table)) > before  # narrower units were measured and appended
    assert result.final_predicted_ms <= result.target_ms
    assert result.final_predicted_ms == pytest.approx(latency.predict_known(result.spec))
    assert result.final_measured_ms > 0 and result.start_measured_ms > 0
    chosen = result.history[result.history.chosen]
    assert len(chosen) == result.iterations and (chosen.measured_ms > 0).all()


@pytest.fixture
def checkpoint(tmp_path):
    return save_checkpoint(tmp_path / "tiny.pt", SPEC, build_model(SPEC, seed=0), {"data": "fashion-mnist"})


@pytest.mark.parametrize("target, fragment", [
    ("5ms", "not below the network's current predicted latency"),
    ("0.05", "smallest network NetAdapt can reach"),
])
def test_targets_out_of_reach_are_refused_before_any_work(table, checkpoint, tmp_path, target, fragment):
    from nas.errors import NasError
    from nas.netadapt import NetAdaptConfig, netadapt_checkpoint

    with pytest.raises(NasError, match=fragment):
        netadapt_checkpoint(checkpoint, table, NetAdaptConfig(target=target), tmp_path / "o", progress=False)
    # no NetAdapt work: at most the run's overlay of units measured to price the smallest network
    assert not (tmp_path / "o").exists() or [p.name for p in (tmp_path / "o").iterdir()] == ["latency_units"]


def test_a_checkpoint_trained_with_adamw_is_fine_tuned_with_adamw(table, tmp_path, monkeypatch):
    import nas.data
    import nas.netadapt.loop as loop
    from nas.netadapt import NetAdaptConfig, netadapt_checkpoint

    setup = {}
    exec(__import__("test_netadapt_loop").SETUP, setup)
    path = save_checkpoint(tmp_path / "adamw.pt", SPEC, build_model(SPEC, seed=0),
                           {"data": "toy", "config": {"optimizer": "adamw"}})
    monkeypatch.setattr(nas.data, "load_data", lambda *args: setup["toy_splits"](size=16))
    used = []
    monkeypatch.setattr(loop, "netadapt", lambda spec, model, splits, latency, config, *rest: used.append(config))
    netadapt_checkpoint(path, table, NetAdaptConfig(target="0.9"), tmp_path / "o", progress=False)
    netadapt_checkpoint(path, table, NetAdaptConfig(target="0.9", optimizer="sgd"), tmp_path / "o", progress=False)
    assert [(c.optimizer, c.lr, c.long_lr) for c in used] == [("adamw", 0.0002, 0.0004), ("sgd", 0.01, 0.02)]


def test_cli_refuses_a_table_of_another_space(table, tmp_path):
    other = SPEC.with_io(resolution=24)
    path = save_checkpoint(tmp_path / "other.pt", other, build_model(other, seed=0))
    result = run_cli("netadapt", path, "--table", table, "--target", "0.8", "--out", tmp_path / "o")
    assert_one_line_error(result, "a table of another space")
    assert not (tmp_path / "o").exists()


def test_netadapt_on_another_devices_table_names_the_missing_units_and_the_command(table, checkpoint, tmp_path):
    import json
    import shutil

    from nas.latency import unit_keys

    foreign = tmp_path / "board"
    shutil.copytree(table, foreign)
    own = {k.id for k in unit_keys(SPEC)}  # only the start network's units: its narrower widths are missing
    lines = (foreign / "entries.csv").read_text().splitlines(keepends=True)
    (foreign / "entries.csv").write_text("".join([lines[0]] + [r for r in lines[1:] if r.split(",", 1)[0] in own]))
    meta = json.loads((foreign / "meta.json").read_text())
    meta["device"]["cpu_model"] = "Some ARM board"
    (foreign / "meta.json").write_text(json.dumps(meta))
    before = (foreign / "entries.csv").read_text()
    result = run_cli("netadapt", checkpoint, "--table", foreign, "--target", "0.9", "--out", tmp_path / "o")
    assert_one_line_error(result, "device some-arm-board-", "it lacks", "nas lut build --spec", "--narrower")
    assert (foreign / "entries.csv").read_text() == before
