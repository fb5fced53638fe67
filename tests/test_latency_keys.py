"""Unit keys come from specs: stable ids, the residual flag, complete space enumeration (torch-free)."""

import subprocess
import sys

import pytest

from nas.latency.keys import (UnitKey, key_from_row, narrower_specs, residual_groups, space_unit_keys, unit_id,
                              unit_keys)
from nas.spec import load_space
from nas.spec.arch import ArchSpec
from tests.conftest import ROOT

BASELINE = ("in28x1 stem_c16_k3_s1_hs ir_k3_e16_c16_s2_se_re ir_k3_e72_c24_s2_re ir_k3_e88_c24_s1_re "
            "ir_k5_e96_c40_s1_se_hs last_c576_hs head_c1024_hs_d0.2 cls10")


def test_keys_of_a_spec_are_stable_and_ordered():
    spec = ArchSpec.from_string(BASELINE)
    ids = [k.id for k in unit_keys(spec)]
    assert ids == [
        "stem:r28_i1_o16_k3_s1_hswish",
        "block:r28_i16_e16_o16_k3_s2_se1_relu_res0",
        "block:r14_i16_e72_o24_k3_s2_se0_relu_res0",
        "block:r7_i24_e88_o24_k3_s1_se0_relu_res1",   # stride 1, in == out: residual
        "block:r7_i24_e96_o40_k5_s1_se1_hswish_res0",  # stride 1 but in != out: not residual
        "last:r7_i40_o576_se0_hswish",
        "head:i576_h1024_hswish_o10",
    ]
    assert unit_keys(ArchSpec.from_json(spec.to_json())) == unit_keys(spec)


def test_head_without_hidden_layer_has_no_activation_in_its_key():
    spec = ArchSpec.from_string(BASELINE.replace("head_c1024_hs_d0.2", "head_c0_re_d0"))
    assert unit_keys(spec)[-1].id == "head:i576_h0_none_o10"


def test_row_round_trip_and_id_check():
    for key in unit_keys(ArchSpec.from_string(BASELINE)):
        row = {k: str(v) for k, v in key.as_row().items()}  # as read back from CSV text
        assert key_from_row(row) == key
    row = unit_keys(ArchSpec.from_string(BASELINE))[1].as_row()
    row["exp"] = 17
    with pytest.raises(ValueError, match="does not match"):
        key_from_row(row)
    assert unit_id(UnitKey("stem", size=8, in_ch=1, out=8, kernel=3, stride=1, act="relu")) == "stem:r8_i1_o8_k3_s1_relu"


def test_space_enumeration_covers_every_sampled_member(space_file):
    space = load_space(space_file)
    keys = space_unit_keys(space)
    ids = {k.id for k in keys}
    assert len(ids) == len(keys)  # deduplicated
    for seed in range(200):
        for key in unit_keys(space.sample(seed)):
            assert key.id in ids, (seed, key.id)
    for key in unit_keys(space.baseline):
        assert key.id in ids


def test_fashion_mnist_entry_count():
    """Counted by hand from the YAML: stage 0: 2 positions x 2 widths x 24 = 96; stage 1: 6 x 72 + 3 x 72;
    stage 2: 9 x 54 + 3 x 54 (size 7); stage 3 repeats some of stage 2's 7x7 keys; ... -> 3227."""
    space = load_space(ROOT / "search_spaces" / "fashion_mnist.yaml")
    kinds = [k.kind for k in space_unit_keys(space)]
    assert kinds.count("stem") == 1 and kinds.count("head") == 1 and kinds.count("last") == 3
    assert len(kinds) == 3227


def test_narrower_specs_cut_one_thing_in_steps_of_8():
    spec = ArchSpec.from_string(BASELINE)
    others = narrower_specs(spec)
    assert residual_groups(spec) == [(0, 0), (1, 2), (3, 3)]
    assert all(o != spec for o in others) and len({o.hash for o in others}) == len(others)
    for other in others:
        diffs = [(a, b) for a, b in zip(spec.blocks, other.blocks) if a != b]
        assert diffs
        for before, after in diffs:
            for field in ("in_channels", "exp_channels", "out_channels"):
                cut = getattr(before, field) - getattr(after, field)
                assert cut >= 0 and cut % 8 == 0
    # the residual group (blocks 1-2, width 24) shrinks together: 16 and 8
    group_cuts = {o.blocks[1].out_channels for o in others if o.blocks[2].in_channels != 24}
    assert group_cuts == {16, 8}
    assert all(o.blocks[2].residual for o in others if o.blocks[1].out_channels != 24)


def test_keys_and_predictor_import_no_torch():
    """Keys and the standalone protocol never need torch; predicting from a table does not either."""
    code = ("import sys, nas.latency.keys, nas.latency.standalone_measure\n"
            "from nas.latency import load_predictor, MeasureConfig\n"
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_one_onnx_export_call_site_in_the_package():
    """Tables price the graph that ships: units and exported models use one exporter."""
    calls = [p for p in (ROOT / "nas").rglob("*.py") if "torch.onnx.export(" in p.read_text()]
    assert [p.relative_to(ROOT).as_posix() for p in calls] == ["nas/models/onnx.py"]
