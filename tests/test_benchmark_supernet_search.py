"""The supernet-search benchmark end to end on tiny budgets: both arms of a seed at equal time, the
final trainings, one interleaved measurement, a rerun that trains nothing again, a foreign state refused."""

import csv
import math

import pytest
import yaml

from tests.conftest import load_benchmark
from tests.test_run import tiny_experiment


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("supernet_search")


ARGS = ["--seeds", "0", "--supernet-minutes", "0.02", "--metric", "likelihood", "--candidates", "3", "--epochs", "0.3",
        "--target", "0.9", "--strategy", "random", "--book-minutes", "0.05"]


@pytest.fixture
def experiment(tmp_path):
    """test_run's tiny experiment (an image folder of 240 training images, a table of this machine),
    its supernet scoring candidates on 2 batches."""
    data = tiny_experiment(tmp_path) | {"supernet": {"bn_batches": 2, "batch_size": 32}}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_both_arms_at_equal_time_then_a_rerun_trains_nothing(bench, experiment, tmp_path, capsys):
    out = tmp_path / "bench"
    assert bench.main([str(experiment), "--out", str(out), *ARGS]) == 0
    first = capsys.readouterr().out
    with (out / "results.csv").open() as f:
        rows = {r["arm"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"supernet", "proxy", "baseline"}
    assert int(rows["supernet"]["candidates"]) >= 3 and rows["supernet"]["seed"] == "0"
    assert 1 <= int(rows["supernet"]["distinct"]) <= int(rows["supernet"]["candidates"])
    # the proxy search ran at least as long as the supernet's training and search together
    assert float(rows["proxy"]["minutes"]) >= float(rows["supernet"]["minutes"]) > 0
    for arm in ("supernet", "proxy", "baseline"):
        assert 0 <= float(rows[arm]["test_acc"]) <= 1 and float(rows[arm]["measured_ms"]) > 0
    assert (out / "s0" / "supernet_search" / "pareto.png").is_file()
    with (out / "s0" / "supernet_search" / "trials.csv").open() as f:  # --metric likelihood: scored by exp(-loss)
        scored = [r for r in csv.DictReader(f) if r["state"] == "COMPLETE"]
    assert scored and all(float(r["val_acc"]) == pytest.approx(math.exp(-float(r["val_loss"]))) for r in scored)
    assert "supernet search vs proxy search" in first and "supernet search vs baseline" in first
    checkpoint = out / "s0" / "supernet" / "supernet.pt"
    stamp = checkpoint.stat().st_mtime_ns
    assert bench.main([str(experiment), "--out", str(out), *ARGS]) == 0
    assert checkpoint.stat().st_mtime_ns == stamp  # nothing trained again
    with (out / "results.csv").open() as f:
        again = {r["arm"]: r for r in csv.DictReader(f)}
    assert {a: again[a]["test_acc"] for a in again} == {a: rows[a]["test_acc"] for a in rows}
    capsys.readouterr()
    assert bench.main([str(experiment), "--out", str(out), *ARGS, "--candidates", "4"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_a_state_file_it_did_not_write_is_one_line_and_exit_status_2(bench, experiment, tmp_path, capsys):
    out = tmp_path / "bench"
    out.mkdir()
    (out / "state.json").write_text("[1, 2]")
    assert bench.main([str(experiment), "--out", str(out), *ARGS]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "state.json" in err


@pytest.mark.parametrize("options", ["[50, 10]", '{"population": 5, "sample": 9}', '{"population": NaN}'])
def test_strategy_options_it_cannot_use_are_one_line_and_exit_status_2(bench, experiment, tmp_path, capsys, options):
    out = tmp_path / "bench"
    args = [str(experiment), "--out", str(out), "--seeds", "0", "--strategy", "evolution", "--options", options]
    assert bench.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("options" in err or "evolution" in err)
    assert not out.exists()  # refused before anything is written
