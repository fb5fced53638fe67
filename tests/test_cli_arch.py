"""``nas arch``: counts, JSON round trip through the CLI, one-line errors."""

import json

import pytest

from tests.conftest import assert_one_line_error, run_cli, run_main


def test_show_large_json():
    out = json.loads(run_cli("arch", "show", "mobilenetv3-large", "--json").stdout)
    assert out["params"] == 5_483_032
    assert abs(out["madds"] / 216.6e6 - 1) < 0.01
    assert set(out) >= {"params", "madds", "hash", "spec"}


def test_show_small_table_and_options():
    res = run_cli("arch", "show", "mobilenetv3-small", "--width-mult", "0.75", "--num-classes", "10")
    assert res.returncode == 0, res.stderr
    assert "bneck 5x5" in res.stdout and "params 892,610" in res.stdout
    out = json.loads(run_cli("arch", "show", "mobilenetv3-small", "--num-classes", "10", "--resolution", "32",
                             "--in-channels", "1", "--json").stdout)
    assert out["spec"]["num_classes"] == 10 and out["spec"]["in_channels"] == 1 and out["spec"]["resolution"] == 32


def test_sample_then_show_keeps_hash(tmp_path, space_file, capsys):
    res = run_main(capsys, "arch", "sample", space_file, "--seed", "5", "--json")
    assert res.returncode == 0, res.stderr
    path = tmp_path / "spec.json"
    path.write_text(res.stdout)
    shown = json.loads(run_main(capsys, "arch", "show", path, "--json").stdout)
    from nas.spec import ArchSpec

    assert shown["hash"] == ArchSpec.from_json(res.stdout).hash
    string = run_main(capsys, "arch", "sample", space_file, "--seed", "5").stdout.strip()
    assert json.loads(run_main(capsys, "arch", "show", string, "--json").stdout)["hash"] == shown["hash"]


def test_show_space_baseline(space_file, capsys):
    res = run_main(capsys, "arch", "show", space_file)
    assert res.returncode == 0, res.stderr
    assert "bneck" in res.stdout and "params" in res.stdout


def _bad_spec(tmp_path, **block0):
    from nas.spec import mobilenetv3_small

    data = mobilenetv3_small().to_dict()
    data["blocks"][0].update(block0)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("make_args, fragment", [
    (lambda tmp: ["arch", "show", "mobilenetv3-huge"], "unknown network 'mobilenetv3-huge'"),
    (lambda tmp: ["arch", "show", _write(tmp, "x.json", "{oops")], "malformed JSON"),
    (lambda tmp: ["arch", "show", _bad_spec(tmp, kernel=4)], "kernel: 4 is not one of 3, 5, 7"),
    (lambda tmp: ["arch", "show", _bad_spec(tmp, out_channels=0)], "out_channels: must be >= 1"),
    (lambda tmp: ["arch", "show", _bad_spec(tmp, exp_channels=-16)], "exp_channels: must be >= 1"),
    (lambda tmp: ["arch", "show", _bad_spec(tmp, act="swish")], "act: 'swish' is not one of"),
    (lambda tmp: ["arch", "show", _bad_spec(tmp, stride=3)], "stride: 3 is not one of 1, 2"),
    (lambda tmp: ["arch", "sample", _write(tmp, "s.yaml", _space_text(kernel="[]")), "--seed", "1"],
     "empty choice list"),
    (lambda tmp: ["arch", "sample", _write(tmp, "s.yaml", _space_text(extra="true")), "--seed", "1"],
     "unknown key 'extra'"),
    (lambda tmp: ["arch", "sample", "missing.yaml", "--seed", "1"], "space file not found"),
    (lambda tmp: ["arch", "show", "mobilenetv3-small", "--width-mult", "abc"], "expected a finite number"),
])
def test_bad_input_one_line_exit_2(tmp_path, make_args, fragment, capsys):
    assert_one_line_error(run_main(capsys, *make_args(tmp_path)), fragment)  # fresh processes: test_hostile_cli


def _write(tmp, name, text):
    path = tmp / name
    path.write_text(text)
    return path


def _space_text(kernel="[3]", extra=None):
    text = f"""
name: t
input: {{resolution: 16, channels: 1}}
num_classes: 3
stem: {{out_channels: 8, kernel: 3, stride: 1, act: relu}}
stages:
  - {{stride: 2, depth: [1], width: [8], kernel: {kernel}, expansion: [1, 2], se: [false], act: [relu]}}
last_stage: {{out_channels: 16}}
"""
    if extra:
        text += f"extra: {extra}\n"
    return text
