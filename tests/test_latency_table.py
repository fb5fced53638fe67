"""Tables on disk, the predictor, the device check (a tiny space built once with a fast protocol)."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from nas.latency import (ForeignTableError, LatencyPredictor, MeasureConfig, MissingEntryError, TableError,
                         build_table, ensure_entries, load_predictor, load_table, space_unit_keys, unit_keys)
from nas.latency.calibration import CALIBRATION_NETWORKS, apply_calibration, fit_calibration, unit_class
from nas.latency.keys import UnitKey
from nas.latency.table import ENTRIES, META
from nas.spec import load_space
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
    weights = table.calibration["class_weights"]
    scale = table.calibration["scale"]
    assert predictor.predict(spec) == pytest.approx(sum(weights.get(unit_class(k), scale) * table.median_ms(k.id)
                                                        for k in unit_keys(spec)))
    breakdown = predictor.unit_breakdown(spec)
    assert list(breakdown["unit"]) == [k.id for k in unit_keys(spec)]
    assert breakdown["share"].sum() == pytest.approx(1.0)
    assert LatencyPredictor(table, calibrated=False).predict(spec) == pytest.approx(expected_sum)


SE_BLOCK = UnitKey("block", size=8, in_ch=8, exp=24, out=8, kernel=3, stride=2, se=True, act="hswish")
PLAIN_BLOCK = UnitKey("block", size=8, in_ch=8, exp=24, out=8, kernel=3, stride=2, act="relu")
STEM = UnitKey("stem", size=8, in_ch=1, out=8, kernel=3, stride=1, act="relu")
ONE_SPEC = [ArchSpec.from_string("in8x1 stem_c8_k3_s1_re ir_k3_e24_c8_s2_re last_c16_re head_c0_re_d0 cls3")]


def _networks(stem, se, plain):
    return [[(STEM, a), (SE_BLOCK, b), (PLAIN_BLOCK, c)] for a, b, c in zip(stem, se, plain)]


def test_calibration_fit_recovers_one_scale_exactly():
    entries = _networks([0.1, 0.2, 0.1, 0.3, 0.2], [0.5, 0.3, 0.8, 0.4, 0.6], [0.2, 0.6, 0.3, 0.1, 0.4])
    measured = [0.9 * sum(ms for _, ms in e) for e in entries]
    calib = fit_calibration(ONE_SPEC * 5, entries, measured, overhead_ms=0.01)
    assert calib["scale"] == pytest.approx(0.9)
    assert all(w == pytest.approx(0.9) for w in calib["class_weights"].values())
    assert apply_calibration(calib, [(STEM, 1.0), (SE_BLOCK, 2.0)]) == pytest.approx(2.7)
    wider = UnitKey("block", size=16, in_ch=8, exp=24, out=8, kernel=3, stride=2, act="relu")
    assert unit_class(wider) not in calib["class_weights"]  # a resolution none of the networks had: the scale
    assert apply_calibration(calib, [(wider, 1.0)]) == pytest.approx(0.9)
    assert calib["fit_max_abs_error"] == pytest.approx(0, abs=1e-9)


def test_calibration_moves_a_class_that_costs_more_in_context():
    """SE blocks that cost 30 % more inside networks than alone: their weight rises above the other
    classes', and the fit predicts held-out networks better than one scale would."""
    rng = np.random.default_rng(0)
    stem, se, plain = (rng.uniform(0.1, 0.6, 40) for _ in range(3))
    entries = _networks(stem, se, plain)
    measured = stem + 1.3 * se + plain
    calib = fit_calibration(ONE_SPEC * 30, entries[:30], measured[:30], overhead_ms=0.01)
    w = calib["class_weights"]
    se, plain = unit_class(SE_BLOCK), unit_class(PLAIN_BLOCK)
    assert se == "block_se1_hswish_r8" and plain == "block_se0_relu_r8"
    assert w[se] > w[plain] + 0.1 and w[se] > w["stem"] + 0.1
    fitted = np.array([apply_calibration(calib, e) for e in entries[30:]])
    one_scale = calib["scale"] * np.array([sum(ms for _, ms in e) for e in entries[30:]])
    assert np.abs(fitted / measured[30:] - 1).mean() < 0.5 * np.abs(one_scale / measured[30:] - 1).mean()


def test_uncalibrated_prediction_is_the_sum():
    assert apply_calibration(None, [(STEM, 0.25), (SE_BLOCK, 0.5)]) == pytest.approx(0.75)


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


@pytest.mark.parametrize("weights", [{"block_se1_hswish_r8": -1.0}, {"no such class": 1.0}, {},
                                     {"stem": float("inf")}])
def test_a_table_with_bad_calibration_weights_is_refused(tiny, tmp_path, weights):
    _, path = tiny
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    meta = json.loads((copy / META).read_text())
    meta["calibration"]["class_weights"] = weights
    (copy / META).write_text(json.dumps(meta).replace("Infinity", "1e999"))
    with pytest.raises(TableError, match="calibration class weights"):
        load_table(copy)
