"""``nas export`` from the command line: --json output and one-line errors on bad input."""

from __future__ import annotations

import json

import pytest

from nas.spec import load_space
from nas.models import build_model
from nas.train import save_checkpoint
from nas.cli import main
from tests.conftest import ROOT, run_cli

FASHION = ROOT / "search_spaces" / "fashion_mnist.yaml"


@pytest.mark.slow
def test_export_json_output(tmp_path):
    spec = load_space(FASHION).sample(1)
    (tmp_path / "spec.json").write_text(spec.to_json())
    result = run_cli("export", tmp_path / "spec.json", "--format", "onnx", "--format", "json",
                     "--out", tmp_path / "out", "--json", "--no-progress")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert {"files", "max_abs_diff", "measured_ms", "predicted_ms"} <= set(summary)
    names = sorted(p.rsplit("/", 1)[-1] for p in summary["files"])
    assert names == ["MODEL_CARD.md", "model.onnx", "model_card.json", "spec.json"]
    assert 0 <= summary["max_abs_diff"] <= 1e-4 and summary["measured_ms"] > 0 and summary["predicted_ms"] is None
    card = json.loads((tmp_path / "out" / "model_card.json").read_text())
    assert card["latency"]["measured"]["models"]["fp32"]["median_ms"] == summary["measured_ms"]


def cli(capsys, *args) -> tuple[int, str]:
    """Run ``nas ARGS`` in this process (faster than a subprocess): (exit status, stderr)."""
    try:
        status = main([str(a) for a in args])
    except SystemExit as exc:  # argparse usage errors
        status = exc.code
    return status, capsys.readouterr().err


def test_bad_inputs_give_one_line_and_status_2(tmp_path, capsys):
    spec = load_space(FASHION).sample(2)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec.to_json())
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    wrong = save_checkpoint(tmp_path / "wrong.pt", spec, build_model(load_space(FASHION).sample(5), seed=0))
    cases = [
        ([spec_file, "--format", "png", "--out", tmp_path / "o1"], "invalid choice: 'png'"),
        ([spec_file, "--format", "onnx", "--out", blocker / "out"], "is not a folder"),
        ([spec_file, "--format", "onnx-int8", "--out", tmp_path / "o2"], "needs --data"),
        ([wrong, "--format", "onnx", "--out", tmp_path / "o3"], "does not match the spec"),
        ([tmp_path / "missing.json", "--format", "onnx", "--out", tmp_path / "o4"], "missing.json"),
        ([spec_file, "--format", "onnx", "--out", tmp_path / "o5", "--table", tmp_path / "no_table"], "no_table"),
    ]
    for args, fragment in cases:
        status, err = cli(capsys, "export", *args, "--no-progress")
        assert status == 2, (args, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err and fragment in lines[0], (args, err)
    assert not (tmp_path / "o3" / "model.onnx").exists() and not (tmp_path / "o5" / "model.onnx").exists()
