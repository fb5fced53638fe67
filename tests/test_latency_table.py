"""Tables on disk, the predictor, the device check (a tiny space built once with a fast protocol)."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from nas.latency import (ForeignTableError, LatencyPredictor, MeasureConfig, MissingEntryError, TableError,
                         build_table, ensure_entries, load_predictor, load_table, space_unit_keys, unit_keys)
from nas.latency.calibration import (CALIBRATION_NETWORKS, COEFFICIENTS, MIN_FIT_NETWORKS, MIN_SHARE, apply_calibration,
                                     fit_calibration)
from nas.latency.keys import UnitKey
from nas.latency.table import ENTRIES, META
from nas.spec import count_params, load_space
from nas.spec.arch import ArchSpec
from tests.latency_helpers import FAST, write_space

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    space = load_space(write_space(root))
    table = build_table(root / "table", space, config=MeasureConfig(**FAST), progress=False)
    return space, table


def copy_table(table, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(table, target)
    return target


def test_table_has_every_unit_once_with_provenance(tiny):
    space, path = tiny
    table = load_table(path)
    assert set(table.entries.index) == {k.id for k in space_unit_keys(space)}
    assert (table.entries["runs"] >= 100).all() and (table.entries["median_ms"] > 0).all()
    meta = table.meta
    assert table.space_hash == space.hash and meta["space"]["name"] == "tiny"
    device = meta["device"]
    for field in ("cpu_model", "cores", "isa_flags", "os", "python", "numpy", "torch", "runtime_version", "date"):
        assert device[field] not in (None, ""), field
    assert device["runtime"] == "onnxruntime" and device["threads"] == 1
    assert meta["protocol"]["runs"] * meta["protocol"]["passes"] >= 100
    calib = meta["calibration"]
    assert len(calib["networks"]) == CALIBRATION_NETWORKS and calib["overhead_ms"] > 0 and calib["scale"] > 0


def test_csv_round_trip_is_exact(tiny):
    _, path = tiny
    first = load_table(path).entries
    again = pd.read_csv(path / ENTRIES, keep_default_na=False).set_index("id")
    assert list(first.index) == list(again.index)
    assert (first["median_ms"] == again["median_ms"]).all()
    assert json.loads((path / META).read_text())["format"] == "nas-latency-table/1"


def test_predictor_sums_entries_then_calibrates(tiny):
    space, path = tiny
    predictor = load_predictor(path)
    spec = space.sample(7)
    table = predictor.table
    expected_sum = sum(table.median_ms(k.id) for k in unit_keys(spec))
    assert predictor.raw_sum(spec) == pytest.approx(expected_sum)
    c = table.calibration["coefficients"]
    expected = (c["units"] * expected_sum + c["params_m"] * count_params(spec) / 1e6
                + c["n_units"] * len(unit_keys(spec)))
    floor = MIN_SHARE * table.calibration["scale"] * expected_sum
    assert predictor.predict(spec) == pytest.approx(max(expected, floor))
    breakdown = predictor.unit_breakdown(spec)
    assert list(breakdown["unit"]) == [k.id for k in unit_keys(spec)]
    assert breakdown["share"].sum() == pytest.approx(1.0)
    assert LatencyPredictor(table, calibrated=False).predict(spec) == pytest.approx(expected_sum)


STEM = UnitKey("stem", size=8, in_ch=1, out=8, kernel=3, stride=1, act="relu")
BLOCK = UnitKey("block", size=8, in_ch=8, exp=24, out=8, kernel=3, stride=1, act="relu")


def _network(blocks: int, expansion: int) -> ArchSpec:
    body = " ".join([f"ir_k3_e{expansion}_c8_s1_re"] * blocks)
    return ArchSpec.from_string(f"in8x1 stem_c8_k3_s1_re {body} last_c16_re head_c0_re_d0 cls3")


def _networks(count: int, seed: int = 0):
    """``count`` networks of 1-4 blocks and their entries: a stem, then blocks of random latencies."""
    rng = np.random.default_rng(seed)
    specs = [_network(int(rng.integers(1, 5)), int(rng.choice([16, 24, 48, 96]))) for _ in range(count)]
    entries = [[(STEM, rng.uniform(0.05, 0.2))] + [(BLOCK, rng.uniform(0.05, 0.4)) for _ in spec.blocks]
               for spec in specs]
    features = np.array([[sum(ms for _, ms in e), count_params(s) / 1e6, len(e)] for s, e in zip(specs, entries)])
    return specs, entries, features


def test_calibration_recovers_one_scale_exactly():
    specs, entries, features = _networks(8)
    calib = fit_calibration(specs, entries, 0.9 * features[:, 0], overhead_ms=0.01)
    assert calib["scale"] == pytest.approx(0.9)
    assert list(calib["coefficients"]) == list(COEFFICIENTS)
    assert [calib["coefficients"][n] for n in COEFFICIENTS] == pytest.approx([0.9, 0, 0], abs=1e-9)
    assert apply_calibration(calib, specs[0], entries[0]) == pytest.approx(0.9 * features[0, 0])
    assert calib["fit_max_abs_error"] == pytest.approx(0, abs=1e-9)


def test_calibration_finds_what_weights_and_units_cost_in_a_whole_network():
    """Networks that pay 50 us per thousand weights and 20 us less per unit than their units alone:
    the fit recovers both and predicts held-out networks exactly, where one scale cannot."""
    specs, entries, features = _networks(40)
    measured = features @ np.array([1.1, 50.0, -0.02])
    calib = fit_calibration(specs[:20], entries[:20], measured[:20], overhead_ms=0.01)
    assert [calib["coefficients"][n] for n in COEFFICIENTS] == pytest.approx([1.1, 50.0, -0.02])
    fitted = np.array([apply_calibration(calib, s, e) for s, e in zip(specs[20:], entries[20:])])
    assert fitted == pytest.approx(measured[20:])
    one_scale = calib["scale"] * features[20:, 0]
    assert np.abs(one_scale / measured[20:] - 1).max() > 0.1


def test_calibration_falls_back_to_one_scale():
    specs, entries, features = _networks(MIN_FIT_NETWORKS + 5)
    few = fit_calibration(specs[:MIN_FIT_NETWORKS - 1], entries[:MIN_FIT_NETWORKS - 1],
                          features[:MIN_FIT_NETWORKS - 1] @ np.array([1.1, 50.0, -0.02]), overhead_ms=0.01)
    assert few["coefficients"] == {"units": few["scale"], "params_m": 0.0, "n_units": 0.0}
    # latency falling as the entries grow: not a usable fit
    backwards = fit_calibration(specs, entries, features @ np.array([-0.2, 50.0, 0.3]), overhead_ms=0.01)
    assert backwards["coefficients"] == {"units": backwards["scale"], "params_m": 0.0, "n_units": 0.0}
    same = [specs[0]] * MIN_FIT_NETWORKS  # one architecture: weights and unit count never vary
    flat = fit_calibration(same, [entries[0]] * MIN_FIT_NETWORKS, [1.0] * MIN_FIT_NETWORKS, overhead_ms=0.01)
    assert flat["coefficients"]["params_m"] == 0.0


def test_a_prediction_never_goes_below_its_share_of_the_scaled_sum():
    specs, entries, features = _networks(1)
    calib = {"scale": 1.0, "coefficients": {"units": 0.1, "params_m": 0.0, "n_units": -1.0}}
    assert apply_calibration(calib, specs[0], entries[0]) == pytest.approx(MIN_SHARE * features[0, 0])


def test_uncalibrated_prediction_is_the_sum():
    spec = _network(1, 24)
    assert apply_calibration(None, spec, [(STEM, 0.25), (BLOCK, 0.5)]) == pytest.approx(0.75)


def test_missing_entry_names_the_unit(tiny):
    _, path = tiny
    spec = ArchSpec.from_string("in8x1 stem_c8_k3_s1_re ir_k5_e24_c8_s2_re last_c16_re head_c0_re_d0 cls3")
    with pytest.raises(MissingEntryError, match="block:r8_i8_e24_o8_k5_s2_se0_relu_res0"):
        load_predictor(path).predict(spec)


def test_ensure_entries_adds_only_what_is_missing(tiny, tmp_path):
    _, path = tiny
    path = copy_table(path, tmp_path)
    narrow = ArchSpec.from_string("in8x1 stem_c8_k3_s1_re ir_k3_e16_c8_s2_re last_c16_re head_c0_re_d0 cls3")
    before = len(load_table(path))
    assert ensure_entries(path, [narrow], progress=False) == 1  # the e16 block; the rest is in the table
    assert ensure_entries(path, [narrow], progress=False) == 0
    table = load_table(path)
    assert len(table) == before + 1 and not table.entries.index.duplicated().any()
    load_predictor(path).predict(narrow)


def test_entries_added_later_are_scaled_by_retimed_anchors(tiny, tmp_path, monkeypatch):
    """The table was measured while the machine ran 2x slower than now (every entry doubled): the
    anchors re-timed beside the new unit show it, and the new entry is put on the table's scale."""
    from nas.latency import measure
    from nas.latency.standalone_measure import Measurement

    _, path = tiny
    path = copy_table(path, tmp_path)
    entries = pd.read_csv(path / ENTRIES, keep_default_na=False)
    entries["median_ms"] = 2.0
    entries.to_csv(path / ENTRIES, index=False)
    timed = []

    def fake_timing(runners, protocol, *reference):
        timed.append(sorted(runners))
        return {name: Measurement(median_ms=1.0, iqr_ms=0.01, runs=100) for name in runners}

    monkeypatch.setattr(measure, "time_interleaved", fake_timing)
    narrow = ArchSpec.from_string("in8x1 stem_c8_k3_s1_re ir_k3_e16_c8_s2_re last_c16_re head_c0_re_d0 cls3")
    assert ensure_entries(path, [narrow], progress=False) == 1
    anchors = [n for n in timed[0] if n.startswith("anchor:")]
    assert len(anchors) == 8 and "anchor:stem:r8_i1_o8_k3_s1_relu" in anchors  # the spec's own units first
    table = load_table(path)
    new_id = next(k.id for k in unit_keys(narrow) if "_e16_" in k.id)
    assert table.median_ms(new_id) == pytest.approx(2.0)
    assert table.meta["additions"][-1]["drift_scales"] == [2.0] and table.meta["additions"][-1]["units"] == 1


def test_another_devices_table_predicts_for_it_and_refuses_measurements_here(tiny, tmp_path):
    from nas.latency import validate_table
    from nas.latency.device import device_id

    _, path = tiny
    path = copy_table(path, tmp_path)
    meta = json.loads((path / META).read_text())
    meta["device"]["cpu_model"] = "Some ARM board"
    (path / META).write_text(json.dumps(meta))
    predictor = load_predictor(path)  # prediction for that device: no flag needed
    assert predictor.predict(_baseline()) == pytest.approx(load_predictor(tiny[1]).predict(_baseline()))
    assert predictor.device_id == device_id(meta["device"]) and predictor.device_id.startswith("some-arm-board-")
    narrow = ArchSpec.from_string("in8x1 stem_c8_k3_s1_re ir_k3_e16_c8_s2_re last_c16_re head_c0_re_d0 cls3")
    with pytest.raises(ForeignTableError, match=r"device some-arm-board-.*this machine is .*lacks 1 unit\(s\): "
                                                 r"block:r8_i8_e16.*nas lut build --spec"):
        ensure_entries(path, [narrow], progress=False, overlay=tmp_path / "overlay")
    assert not (tmp_path / "overlay").exists()
    with pytest.raises(ForeignTableError, match="validate"):
        validate_table(path, samples=3)
    with pytest.raises(ForeignTableError, match="measure networks here"):
        MeasureConfig.comparable_with(path)
    assert ensure_entries(path, [_baseline()], progress=False) == 0  # nothing missing: nothing to refuse


def test_overlay_takes_a_runs_new_units_and_leaves_the_table_alone(tiny, tmp_path):
    path = copy_table(tiny[1], tmp_path)
    before = (path / ENTRIES).read_bytes()
    narrow = ArchSpec.from_string("in8x1 stem_c8_k3_s1_re ir_k3_e16_c8_s2_re last_c16_re head_c0_re_d0 cls3")
    overlay = tmp_path / "run" / "latency_units"
    assert ensure_entries(path, [narrow], progress=False, overlay=overlay) == 1
    assert (path / ENTRIES).read_bytes() == before
    with pytest.raises(MissingEntryError):
        load_predictor(path).predict(narrow)
    assert load_predictor(path, overlay=overlay).predict(narrow) > 0
    assert ensure_entries(path, [narrow], progress=False, overlay=overlay) == 0


def _baseline():
    return ArchSpec.from_string("in8x1 stem_c8_k3_s1_re ir_k3_e24_c8_s2_re last_c16_re head_c0_re_d0 cls3")


@pytest.mark.parametrize("damage, message", [
    (lambda text: text + "block:r8,oops\n", "corrupt table CSV"),
    (lambda text: text.replace("median_ms", "median"), "the header is not"),
    (lambda text: text.replace(",100\n", ",100,extra\n", 1), "row 2 has 16 fields"),
    (lambda text: text.replace(",100\n", ",100\n", 1).replace("\n", "\n", 1).replace(
        text.splitlines()[1].split(",")[-3], "inf", 1), "not a finite"),
    (lambda text: text.replace(",100\n", ",abc\n", 1), "runs 'abc'"),
    (lambda text: text + text.splitlines()[1] + "\n", "appears twice"),
])
def test_corrupt_csv_is_one_clear_error(tiny, tmp_path, damage, message):
    path = copy_table(tiny[1], tmp_path)
    csv = path / ENTRIES
    csv.write_text(damage(csv.read_text()))
    with pytest.raises(TableError, match=message):
        load_table(path)


def test_torn_last_line_is_ignored_by_readers_and_cut_by_the_next_writer(tiny, tmp_path):
    from nas.latency.standalone_measure import Measurement
    from nas.latency.table import TableWriter

    path = copy_table(tiny[1], tmp_path)
    csv = path / ENTRIES
    n = len(load_table(path))
    torn = csv.read_text() + "block:r8_i8_e8_o8_k3_s2_se0_relu_res0,blo-TORN"  # killed mid-write
    csv.write_text(torn)
    assert len(load_table(path)) == n
    assert csv.read_text() == torn  # a reader never writes
    narrow = ArchSpec.from_string("in8x1 stem_c8_k3_s1_re ir_k3_e16_c8_s2_re last_c16_re head_c0_re_d0 cls3")
    key = next(k for k in unit_keys(narrow) if "_e16_" in k.id)
    with TableWriter(path, {}) as writer:
        assert writer.append(key, Measurement(0.01, 0.001, 100))
    assert len(load_table(path)) == n + 1 and "TORN" not in csv.read_text()


@pytest.mark.parametrize("coefficients", [{"units": -1.0, "params_m": 0.0, "n_units": 0.0}, {"no such feature": 1.0},
                                          {}, {"units": 1.0, "params_m": float("inf"), "n_units": 0.0},
                                          {"units": 1.0, "params_m": "0", "n_units": 0.0}])
def test_a_table_with_bad_calibration_coefficients_is_refused(tiny, tmp_path, coefficients):
    _, path = tiny
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    meta = json.loads((copy / META).read_text())
    meta["calibration"]["coefficients"] = coefficients
    (copy / META).write_text(json.dumps(meta).replace("Infinity", "1e999"))
    with pytest.raises(TableError, match="calibration coefficients"):
        load_table(copy)


def test_an_older_calibration_is_refitted_from_its_stored_networks(tiny, tmp_path):
    """A table calibrated by an older version loads with this version's model, fitted from the
    networks and latencies its meta.json holds; nothing is measured or written."""
    _, path = tiny
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    meta = json.loads((copy / META).read_text())
    current = dict(meta["calibration"])
    meta["calibration"] = {"model": "per-class ridge toward one scale", "class_weights": {"stem": 1.0}, "scale": 1.0,
                           **{k: current[k] for k in ("specs", "measured_ms", "overhead_ms", "networks")}}
    (copy / META).write_text(json.dumps(meta))
    before = (copy / META).read_bytes()
    table = load_table(copy)
    assert table.calibration["model"] == current["model"]
    assert table.calibration["coefficients"] == pytest.approx(current["coefficients"])
    assert (copy / META).read_bytes() == before
    meta["calibration"].pop("measured_ms")
    (copy / META).write_text(json.dumps(meta))
    with pytest.raises(TableError, match="no measured networks to refit it from"):
        load_table(copy)
    meta["calibration"].update(measured_ms=current["measured_ms"], specs=["not a spec"] * len(current["specs"]))
    (copy / META).write_text(json.dumps(meta))
    with pytest.raises(TableError, match="cannot be refitted"):
        load_table(copy)
