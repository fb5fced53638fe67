"""Export pipeline: metadata, model card, checkpoint weights, int8, torch-free ONNX, safe loading."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from nas.errors import NasError
from nas.load import load
from nas.export import TOLERANCE, export, load_torchscript, read_metadata
from nas.export.onnx import random_batch, run_onnx, session, torch_outputs
from nas.models import build_model
from nas.spec import ArchSpec, count_madds, count_params, load_space
from nas.train import save_checkpoint
from tests.conftest import ROOT
from tests.test_export_acceptance import unit_scale_logits

FASHION = ROOT / "search_spaces" / "fashion_mnist.yaml"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def spec() -> ArchSpec:
    return load_space(FASHION).sample(3)


@pytest.fixture
def checkpoint(tmp_path, spec):
    """A checkpoint of seed-7 weights with training metrics (no training needed to test export)."""
    model = build_model(spec, seed=7).eval()
    unit_scale_logits(model, spec)  # logits of size ~1, so weights from elsewhere would show
    metrics = {"data": "fashion-mnist", "test_acc": 0.875, "val_acc": 0.88,
               "splits": {"train": 54000, "val": 6000, "test": 10000},
               "normalization": {"mean": [0.25], "std": [0.5]}}
    return save_checkpoint(tmp_path / "run" / "checkpoint.pt", spec, model, metrics), model


def test_spec_export_writes_checked_files_with_metadata_and_card(tmp_path, spec):
    result = export(spec.to_string(), tmp_path / "out", ["json", "onnx", "torchscript"], measure=False,
                    progress=False)
    names = sorted(p.name for p in result.files)
    assert names == ["MODEL_CARD.md", "model.onnx", "model.torchscript.pt", "model_card.json", "spec.json"]
    assert set(result.checks) == {"onnx", "torchscript"} and result.max_abs_diff <= TOLERANCE
    assert ArchSpec.from_json((tmp_path / "out" / "spec.json").read_text()) == spec

    meta = read_metadata(tmp_path / "out" / "model.onnx")
    assert meta["spec"] == spec.to_string() and meta["spec_hash"] == spec.hash
    assert ArchSpec.from_string(meta["spec"]) == spec
    assert json.loads(meta["input_shape"]) == ["batch", 1, 28, 28] and meta["num_classes"] == "10"
    _, extra = load_torchscript(tmp_path / "out" / "model.torchscript.pt", ("spec", "spec_hash"))
    assert extra == {"spec": spec.to_string(), "spec_hash": spec.hash}

    card = json.loads((tmp_path / "out" / "model_card.json").read_text())
    assert card["network"]["params"] == count_params(spec) and card["network"]["madds"] == count_madds(spec)
    assert ArchSpec.from_dict(card["network"]["spec"]) == spec
    assert card["accuracy"] is None and card["latency"]["measured"] is None
    assert card["machine"]["cores"] >= 1 and card["machine"]["torch"] == torch.__version__
    markdown = (tmp_path / "out" / "MODEL_CARD.md").read_text()
    assert spec.to_string() in markdown and f"{count_params(spec):,}" in markdown


def test_dynamic_batch_axis(tmp_path, spec):
    export(spec.to_string(), tmp_path, ["onnx"], measure=False, progress=False)
    model = load(spec.to_string())[1]
    for batch in (1, 5):
        x = random_batch(spec, batch, seed=batch)
        out = run_onnx(session(tmp_path / "model.onnx"), x)
        assert out.shape == (batch, 10)
        np.testing.assert_allclose(out, torch_outputs(model, x), atol=TOLERANCE, rtol=0)


def test_checkpoint_export_uses_trained_weights_and_reports_accuracy(tmp_path, checkpoint, spec):
    path, model = checkpoint
    result = export(path, tmp_path / "out", ["onnx"], measure=False, progress=False)
    x = random_batch(spec, 3, seed=1)
    exported = run_onnx(session(tmp_path / "out" / "model.onnx"), x)
    assert np.abs(exported - torch_outputs(model, x)).max() <= TOLERANCE
    fresh = torch_outputs(build_model(spec, seed=0).eval(), x)
    assert np.abs(exported - fresh).max() > 0.1  # not freshly initialised weights
    card = result.card
    assert card["accuracy"]["checkpoint"]["test_acc"] == 0.875 and card["source"]["kind"] == "checkpoint"
    meta = read_metadata(tmp_path / "out" / "model.onnx")
    assert json.loads(meta["mean"]) == [0.25] and json.loads(meta["std"]) == [0.5]
    assert "87.50 %" in (tmp_path / "out" / "MODEL_CARD.md").read_text()


def test_int8_export_measures_latency_and_accuracy(tmp_path, spec):
    result = export(spec.to_string(), tmp_path, ["onnx-int8"], data="fashion-mnist", calibration_images=64,
                    eval_images=200, progress=False)
    assert [p.name for p in result.files][0] == "model.int8.onnx"
    assert not (tmp_path / "model.onnx").exists()  # the fp32 model was only a stepping stone
    int8 = result.card["int8"]
    assert int8["eval_images"] == 200 and int8["split"] == "test"
    assert int8["acc_change"] == pytest.approx(int8["int8_acc"] - int8["fp32_acc"])
    assert int8["agreement"] >= 0.8  # int8 predictions mostly agree with fp32
    assert int8["fp32_ms"] > 0 and int8["int8_ms"] > 0 and int8["speedup"] == pytest.approx(
        int8["fp32_ms"] / int8["int8_ms"])
    assert "chance level" in int8["note"]  # untrained weights: said so
    assert result.measured_ms == int8["fp32_ms"]
    meta = read_metadata(tmp_path / "model.int8.onnx")
    assert meta["spec"] == spec.to_string() and "QDQ" in meta["quantization"]
    assert len(json.loads(meta["classes"])) == 10
    card = json.loads((tmp_path / "model_card.json").read_text())
    assert set(card["latency"]["measured"]["models"]) == {"fp32", "int8"}
    assert card["latency"]["measured"]["models"]["fp32"]["runs"] >= 100


def test_onnx_runs_without_torch(tmp_path, spec):
    export(spec.to_string(), tmp_path, ["onnx"], measure=False, progress=False)
    x = random_batch(spec, 2, seed=5)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", torch_outputs(load(spec.to_string())[1], x))
    script = textwrap.dedent(f"""
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, NoTorch())
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("torch was importable")
        import numpy as np, onnxruntime as ort
        sess = ort.InferenceSession({str(tmp_path / 'model.onnx')!r}, providers=["CPUExecutionProvider"])
        out = sess.run(["logits"], {{"input": np.load({str(tmp_path / 'x.npy')!r})}})[0]
        diff = float(np.abs(out - np.load({str(tmp_path / 'expected.npy')!r})).max())
        meta = sess.get_modelmeta().custom_metadata_map
        assert "torch" not in sys.modules
        print(diff, meta["spec_hash"])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    diff, spec_hash = done.stdout.split()
    assert float(diff) <= TOLERANCE and spec_hash == spec.hash


class RunsCode:
    """A pickle payload whose loading would create a file (stands for arbitrary code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path, spec):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    state = build_model(spec, seed=0).state_dict()
    torch.save({"format": "nas-checkpoint/1", "spec_json": spec.to_json(), "state_dict": state,
                "metrics": {"note": RunsCode(marker)}}, evil)
    with pytest.raises(NasError, match="refused"):
        load(evil)
    assert not marker.exists()
    from tests.conftest import assert_one_line_error, run_cli

    result = run_cli("export", evil, "--format", "onnx", "--out", tmp_path / "out", "--no-progress")
    assert_one_line_error(result, "refused")
    assert not marker.exists() and not (tmp_path / "out" / "model.onnx").exists()
    # the payload is live: an unsafe load (never done by nas) would have run it
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_load_round_trips(tmp_path, checkpoint, spec):
    path, model = checkpoint
    loaded_spec, loaded = load(path)
    assert loaded_spec == spec and not loaded.training
    for key, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor)
    assert load(path.parent)[0] == spec  # the run folder
    (tmp_path / "spec.json").write_text(spec.to_json())
    a, b = load(tmp_path / "spec.json")[1], load(spec.to_string())[1]
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())  # seeded


def test_checkpoint_spec_mismatch_is_refused(tmp_path, spec):
    other = load_space(FASHION).sample(4)
    assert other.hash != spec.hash
    wrong = save_checkpoint(tmp_path / "wrong.pt", spec, build_model(other, seed=0))
    with pytest.raises(NasError, match="does not match the spec"):
        load(wrong)
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoint.pt", spec, build_model(spec, seed=0))
    (run / "spec.json").write_text(other.to_json())
    with pytest.raises(NasError, match="does not match"):
        load(run)


@pytest.mark.parametrize("formats, options, fragment", [
    (["onnx", "tiff"], {}, "unknown export format 'tiff'"),
    (["onnx-int8"], {}, "needs --data"),
    ([], {}, "no export format"),
    (["onnx"], {"threads": 0}, "threads must be"),
])
def test_bad_requests_raise_one_clear_error(tmp_path, spec, formats, options, fragment):
    with pytest.raises(NasError, match=fragment):
        export(spec.to_string(), tmp_path, formats, progress=False, **options)
    assert list(tmp_path.iterdir()) == []  # nothing written before the request is checked
