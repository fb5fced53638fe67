"""Specs: validation, JSON and string round trips, hashing, counts against the paper/torchvision."""

import json
import random
import subprocess
import sys

import pytest
from torch import nn

from nas.spec import (ArchSpec, BlockSpec, SpecError, count_madds, count_params, load_space, make_divisible,
                      mobilenetv3_large, mobilenetv3_small)
from nas.spec.named import LARGE_ROWS, SMALL_ROWS
from tests.conftest import SPACE_FILES


# --- an independent reference: torchvision's MobileNetV3 rebuilt from its published recipe --------

def _tv_divisible(v: float) -> int:
    new_v = max(8, int(v + 4) // 8 * 8)
    return new_v + 8 if new_v < 0.9 * v else new_v


def torchvision_reference_params(rows, last_channel: int, width_mult: float, num_classes: int) -> int:
    """Parameter count of torchvision's mobilenet_v3_* (built the way torchvision builds it)."""
    adjust = lambda c: _tv_divisible(c * width_mult)  # noqa: E731
    layers = []
    cin = adjust(16)
    layers += [nn.Conv2d(3, cin, 3, bias=False), nn.BatchNorm2d(cin)]
    for k, exp, out, se, _, _ in rows:
        exp, out = adjust(exp), adjust(out)
        if exp != cin:
            layers += [nn.Conv2d(cin, exp, 1, bias=False), nn.BatchNorm2d(exp)]
        layers += [nn.Conv2d(exp, exp, k, groups=exp, bias=False), nn.BatchNorm2d(exp)]
        if se:
            sq = _tv_divisible(exp // 4)
            layers += [nn.Conv2d(exp, sq, 1), nn.Conv2d(sq, exp, 1)]
        layers += [nn.Conv2d(exp, out, 1, bias=False), nn.BatchNorm2d(out)]
        cin = out
    layers += [nn.Conv2d(cin, 6 * cin, 1, bias=False), nn.BatchNorm2d(6 * cin)]
    hidden = adjust(last_channel)
    layers += [nn.Linear(6 * cin, hidden), nn.Linear(hidden, num_classes)]
    return sum(p.numel() for layer in layers for p in layer.parameters())


@pytest.mark.parametrize("width_mult", [0.5, 0.75, 1.0, 1.25])
@pytest.mark.parametrize("num_classes", [1000, 10])
def test_named_params_match_torchvision_recipe(width_mult, num_classes):
    large = mobilenetv3_large(width_mult=width_mult, num_classes=num_classes)
    small = mobilenetv3_small(width_mult=width_mult, num_classes=num_classes)
    assert count_params(large) == torchvision_reference_params(LARGE_ROWS, 1280, width_mult, num_classes)
    assert count_params(small) == torchvision_reference_params(SMALL_ROWS, 1024, width_mult, num_classes)


def test_published_totals():
    # torchvision's model metadata at 1000 classes, 224x224
    assert count_params(mobilenetv3_large()) == 5_483_032
    assert count_params(mobilenetv3_small()) == 2_542_856
    assert abs(count_madds(mobilenetv3_large()) / 216.6e6 - 1) < 0.01
    assert abs(count_madds(mobilenetv3_small()) / 56.5e6 - 1) < 0.01


def test_paper_table_rows():
    large = mobilenetv3_large()
    sizes = large.block_input_sizes()
    assert sizes == [112, 112, 56, 56, 28, 28, 28, 14, 14, 14, 14, 14, 14, 7, 7]
    assert large.final_size == 7 and large.last.out_channels == 960 and large.head.hidden == 1280
    small = mobilenetv3_small()
    assert small.block_input_sizes() == [112, 56, 28, 28, 14, 14, 14, 14, 14, 7, 7]
    assert small.last.out_channels == 576 and small.head.hidden == 1024
    assert [b.residual for b in small.blocks] == [False, False, True, False, True, True, False, True, False,
                                                  True, True]


def test_make_divisible():
    assert make_divisible(88.08) == 88
    assert make_divisible(3) == 8
    assert make_divisible(184) == 184
    assert make_divisible(20) == 24          # 16 would be 20 % below
    assert make_divisible(1280 * 0.5) == 640


def _samples(n):
    for path in SPACE_FILES:
        space = load_space(path)
        rng = random.Random(path.stem)
        for _ in range(n):
            yield space.sample(rng)


def test_json_and_string_round_trip_1000_samples():
    specs = list(_samples(340))
    assert len(specs) >= 1000
    for spec in specs:
        assert ArchSpec.from_json(spec.to_json()) == spec
        assert ArchSpec.from_string(spec.to_string()) == spec
        assert ArchSpec.from_string(spec.to_string()).hash == spec.hash


def test_hash_is_stable_across_processes():
    specs = [mobilenetv3_large(), mobilenetv3_small(width_mult=0.75, num_classes=10)]
    code = ("from nas.spec import mobilenetv3_large, mobilenetv3_small;"
            "print(mobilenetv3_large().hash, mobilenetv3_small(width_mult=0.75, num_classes=10).hash)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout.split()
    assert out == [s.hash for s in specs]
    assert specs[0].hash != specs[1].hash
    assert len({s.hash for s in _samples(50)}) == 50 * len(SPACE_FILES)


def _with_block0(**changes):
    data = mobilenetv3_small().to_dict()
    data["blocks"][0].update(changes)
    return json.dumps(data)


@pytest.mark.parametrize("changes, fragment", [
    ({"kernel": 4}, "blocks[0].kernel: 4 is not one of 3, 5, 7"),
    ({"stride": 3}, "blocks[0].stride: 3 is not one of 1, 2"),
    ({"act": "gelu"}, "blocks[0].act: 'gelu' is not one of relu, relu6, hswish"),
    ({"exp_channels": 0}, "blocks[0].exp_channels: must be >= 1"),
    ({"out_channels": -8}, "blocks[0].out_channels: must be >= 1"),
    ({"in_channels": 24}, "blocks[0].in_channels: 24 does not match"),
    ({"se": "yes"}, "blocks[0].se: expected true or false"),
    ({"colour": 1}, "unknown field 'colour'"),
])
def test_validation_names_the_field(changes, fragment):
    with pytest.raises(SpecError) as err:
        ArchSpec.from_json(_with_block0(**changes))
    assert fragment in str(err.value)


def test_malformed_inputs():
    with pytest.raises(SpecError, match="malformed JSON"):
        ArchSpec.from_json("{not json")
    with pytest.raises(SpecError, match="missing field"):
        ArchSpec.from_dict({"resolution": 224})
    with pytest.raises(SpecError, match="ir_q3"):
        ArchSpec.from_string(mobilenetv3_small().to_string().replace("ir_k3_e72", "ir_q3_e72"))
    with pytest.raises(SpecError, match="kernel: 4"):
        ArchSpec.from_string(mobilenetv3_small().to_string().replace("ir_k3_e72", "ir_k4_e72"))


def test_string_form_is_readable():
    text = mobilenetv3_small().to_string()
    assert text.startswith("in224x3 stem_c16_k3_s2_hs ir_k3_e16_c16_s2_se_re ir_k3_e72_c24_s2_re ")
    assert text.endswith("last_c576_hs head_c1024_hs_d0.2 cls1000")


def test_block_rules():
    b = BlockSpec(16, 16, 16, 3, 1, False, "relu")
    assert b.residual and not b.has_expand
    assert not BlockSpec(16, 64, 24, 3, 1, False, "relu").residual
    assert not BlockSpec(16, 64, 16, 3, 2, False, "relu").residual
    assert BlockSpec(16, 72, 24, 3, 1, True, "relu").se_channels == 24   # make_divisible(72 // 4)
    assert BlockSpec(16, 88, 24, 3, 1, True, "relu").se_channels == 24   # 22 -> 24
