"""``nas run``: the whole pipeline on a tiny budget, rerun skips finished stages, resume after a failure."""

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml

from nas.experiment import experiment_from_dict
from nas.run import STAGES, run_experiment
from tests.conftest import ROOT, assert_one_line_error, run_cli

from tests.latency_helpers import SHIPPED_FASHION, as_this_machines_table

# One worker runs this module's tests (pytest-xdist group), so that its pipeline fixture runs once.
pytestmark = pytest.mark.xdist_group("test_run")


def tiny_image_folder(root: Path, train: int = 24, test: int = 4) -> Path:
    """An image folder shaped like Fashion-MNIST (10 classes of 28x28 grey images), tiny: the pipeline
    trains and tests every network on it in seconds. Each class is a noisy bright square at its own place."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for label in range(10):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 60, (28, 28))
                row, col = divmod(label, 5)
                pixels[4 + 10 * row:12 + 10 * row, 2 + 5 * col:7 + 5 * col] += 180
                Image.fromarray(pixels.astype(np.uint8), mode="L").save(folder / f"{i}.png")
    return root


def tiny_experiment(tmp_path: Path) -> dict:
    table = tmp_path / "tables"
    as_this_machines_table(SHIPPED_FASHION, table)  # a folder of tables with one of this machine
    images = tiny_image_folder(tmp_path / "images")
    return {
        "name": "tiny_run", "space": str(ROOT / "search_spaces" / "fashion_mnist.yaml"), "out": str(tmp_path / "out"),
        "data": {"name": "folder", "data_dir": str(images), "val_fraction": 0.1, "seed": 0},
        "proxy": {"steps": 2, "batch_size": 32, "eval_every": None, "threads": 1},
        "latency": {"table": str(table), "threads": 1},
        "reward": {"target_ms": "baseline", "preset": "soft"},
        "search": {"strategy": "random", "n_trials": 2, "seed": 0},
        "train": {"epochs": 0.002, "batch_size": 32, "optimizer": "adamw", "threads": 1},
        "netadapt": {"target": "0.97", "short_steps": 1, "long_epochs": 0, "delta_fraction": 0.02},
        "export": {"formats": ["json", "onnx"]},
        "report": {"width_mults": [0.5]},
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    data = tiny_experiment(tmp)
    exp = experiment_from_dict(data, "tiny_run.yaml", tmp)
    logs: list[str] = []
    result = run_experiment(exp, progress=False, log=logs.append)
    return exp, result, logs, data, tmp


@pytest.mark.slow  # the whole pipeline on real data
def test_pipeline_writes_report(finished_run):
    exp, result, logs, _, _ = finished_run
    out = Path(exp.out)
    for stage in STAGES:
        assert (out / stage / "done.json").is_file(), stage
    report = result.report.read_text()
    names = [row["network"] for row in result.rows]
    assert names == ["found (search)", "found + NetAdapt", "baseline", "baseline x0.5"]
    for name in names:
        assert f"| {name} |" in report
    assert (out / "fig_pareto.png").is_file() and "fig_pareto.png" in report
    assert (out / "export" / "model.onnx").is_file() and (out / "export" / "MODEL_CARD.md").is_file()
    for row in result.rows:
        assert row["measured_ms"] > 0 and row["predicted_ms"] > 0 and 0 <= row["test_acc"] <= 1
    netadapt = [r for r in result.rows if r["network"] == "found + NetAdapt"][0]
    found = [r for r in result.rows if r["network"] == "found (search)"][0]
    assert netadapt["predicted_ms"] < found["predicted_ms"]
    seconds = json.loads((out / "stage_seconds.json").read_text())
    assert set(STAGES) - {"report"} <= set(seconds) and all(s > 0 for s in seconds.values())
    assert "- minutes per stage (the run that finished it): search " in report
    from nas.latency import find_table, load_predictor
    from nas.latency.device import this_device

    table = find_table(exp.latency.table)
    target = load_predictor(table).predict(exp.load_space().baseline)
    assert f"reward: target {target:.3f} ms (the baseline's predicted latency)" in report
    assert f"device `{this_device()['id']}` (this machine)" in report
    assert all(row["device"] == this_device()["id"] for row in result.rows)
    before = (table / "entries.csv").read_bytes()
    assert (out / "latency_units" / "entries.csv").is_file()  # NetAdapt's widths: the run's overlay
    assert (table / "entries.csv").read_bytes() == before


@pytest.mark.slow  # the whole pipeline on real data
def test_rerun_skips_finished_stages(finished_run, monkeypatch):
    exp, first, _, _, _ = finished_run
    import nas.train

    monkeypatch.setattr(nas.train, "train_network", lambda *a, **k: pytest.fail("trained again"))
    logs: list[str] = []
    again = run_experiment(exp, progress=False, log=logs.append)
    assert all("skipped" in line for line in logs) and len(logs) == len(STAGES)
    assert again.rows == first.rows


@pytest.mark.slow  # the whole pipeline on real data
def test_failure_in_a_stage_resumes_without_redoing_earlier_ones(finished_run, tmp_path, monkeypatch):
    exp, first, _, _, _ = finished_run
    import dataclasses

    import nas.run

    out = tmp_path / "out"
    shutil.copytree(exp.out, out)  # a run that was interrupted in the export stage:
    for stage in ("export", "reference", "report"):
        (out / stage / "done.json").unlink()
    exp = dataclasses.replace(exp, out=out)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C lands in the export stage again

    monkeypatch.setattr(nas.run, "stage_export", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(exp, progress=False, log=lambda m: None)
    assert not (out / "export" / "done.json").exists()
    monkeypatch.undo()
    trained = (out / "train" / "checkpoint.pt").stat().st_mtime_ns
    logs: list[str] = []
    again = run_experiment(exp, progress=False, log=logs.append)
    assert logs == ["[search] done before, skipped", "[train] done before, skipped",
                    "[netadapt] done before, skipped", "[export] running", "[reference] running", "[report] running"]
    assert (out / "train" / "checkpoint.pt").stat().st_mtime_ns == trained
    assert (out / "report.md").is_file() and [r["network"] for r in again.rows] == [r["network"] for r in first.rows]


def test_bad_experiment_sections(tmp_path):
    base = tiny_experiment(tmp_path)
    path = tmp_path / "bad.yaml"
    for section, key, value, message in [("netadapt", "colour", 1, "netadapt: unknown key 'colour'"),
                                         ("export", "formats", ["tflite"], "export.formats: unknown format 'tflite'")]:
        data = copy.deepcopy(base)
        data[section][key] = value
        path.write_text(yaml.safe_dump(data))
        assert_one_line_error(run_cli("run", path), message)
    assert not (tmp_path / "out").exists()  # refused before any work


def test_missing_data_fails_before_the_table_is_built(tmp_path):
    data = tiny_experiment(tmp_path)
    data["data"] = {"name": "fashion-mnist", "data_dir": str(tmp_path / "no-such-dir")}
    data["latency"]["table"] = str(tmp_path / "new-tables")  # no table of this machine: it would be built
    path = tmp_path / "no_data.yaml"
    path.write_text(yaml.safe_dump(data))
    assert_one_line_error(run_cli("run", path), "Fashion-MNIST data directory")
    assert not (tmp_path / "new-tables").exists()
