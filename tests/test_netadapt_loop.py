"""The NetAdapt loop on a tiny network with a fake (MAdds-proportional) latency predictor:
reaches the target, writes readable outputs, resumes after SIGKILL with the same history."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
import torch

from conftest import ROOT, assert_one_line_error, run_cli
from nas.errors import NasError
from nas.spec import ArchSpec
from nas.train import load_model

torch.set_num_threads(1)

# Shared by the in-process runs and the subprocess runs: a tiny network, learnable toy data, a fake
# latency table (1 ms per 100k multiply-adds) and a config that needs a few iterations.
SETUP = '''
import torch
from nas.data import DataSplits, ImageDataset
from nas.models import build_model
from nas.netadapt import NetAdaptConfig
from nas.spec import ArchSpec, count_madds
from nas.train import TrainConfig, train

SPEC = ArchSpec.from_string("in8x1 stem_c16_k3_s1_hs ir_k3_e48_c24_s2_se_re ir_k3_e72_c24_s1_re "
                            "ir_k3_e24_c24_s1_hs last_c32_hs head_c0_hs_d0.0 cls3")
CONFIG = NetAdaptConfig(target="0.7", short_steps=6, long_epochs=1, delta_fraction=0.05, batch_size=16, lr=0.05,
                        seed=1)


class MaddsLatency:
    def predict(self, spec):
        return count_madds(spec) / 1e5


def toy_splits(n=192, size=8, classes=3):
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % classes
    images = torch.randint(0, 60, (n, 1, size, size), generator=gen, dtype=torch.uint8)
    band = size // classes
    for c in range(classes):
        images[labels == c, :, c * band:(c + 1) * band, :] += 150
    data = ImageDataset(images, labels, [f"c{i}" for i in range(classes)], (0.3,), (0.3,))
    p = torch.arange(n)
    return DataSplits(data.select(p[:n // 2]), data.select(p[n // 2:3 * n // 4]), data.select(p[3 * n // 4:]))


def trained_start(splits):
    model = build_model(SPEC, seed=0)
    train(model, splits, TrainConfig(steps=10, batch_size=16, lr=0.05, threads=1, eval_every=None), progress=False)
    return model
'''

RUN = SETUP + '''
import os, signal, sys
from nas.netadapt import netadapt
from nas.netadapt.loop import NetAdaptRun

kill_at = int(sys.argv[2])
if kill_at:
    calls = []
    original = NetAdaptRun._fine_tune
    def dying(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == kill_at:  # killed with the proposal trained but not yet saved
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    NetAdaptRun._fine_tune = dying
splits = toy_splits()
netadapt(SPEC, trained_start(splits), splits, MaddsLatency(), CONFIG, sys.argv[1], progress=False, threads=1)
'''

setup = {}
exec(SETUP, setup)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from nas.netadapt import netadapt

    out = tmp_path_factory.mktemp("netadapt")
    splits = setup["toy_splits"]()
    model = setup["trained_start"](splits)
    result = netadapt(setup["SPEC"], model, splits, setup["MaddsLatency"](), setup["CONFIG"], out,
                      progress=False, threads=1)
    return result, splits


def comparable(history: pd.DataFrame) -> pd.DataFrame:
    return history.drop(columns=["seconds"]).reset_index(drop=True)


def test_run_reaches_the_target_with_one_winner_per_iteration(finished):
    result, _ = finished
    predict = setup["MaddsLatency"]().predict
    assert result.target_ms == pytest.approx(0.7 * result.start_ms)
    assert result.final_predicted_ms <= result.target_ms < result.start_ms
    assert result.final_predicted_ms == pytest.approx(predict(result.spec))
    history = result.history
    assert result.iterations >= 2 and sorted(history.iteration.unique()) == list(range(result.iterations))
    previous_ms = result.start_ms
    for _, rows in history.groupby("iteration"):
        assert rows.chosen.sum() == 1
        winner = rows[rows.chosen].iloc[0]
        assert winner.score == rows.score.max()  # ratio: dAcc / |dLatency|
        assert (rows.saving_ms >= rows.delta_ms - 1e-12).all()
        assert rows.predicted_ms.tolist() == pytest.approx((previous_ms - rows.saving_ms).tolist())
        previous_ms = winner.predicted_ms
    assert previous_ms == pytest.approx(result.final_predicted_ms)
    assert result.train_steps == history.steps.sum() + 6  # short fine-tunes + 1 epoch of 6 steps


def test_outputs_are_readable(finished):
    result, splits = finished
    out = result.out
    assert ArchSpec.from_json((out / "spec.json").read_text()) == result.spec
    spec, model = load_model(out / "checkpoint.pt")
    assert spec == result.spec and spec != setup["SPEC"]
    assert model(splits.val.images[:2].float()).shape == (2, 3)
    csv = pd.read_csv(out / "history.csv")
    assert list(csv.columns[:6]) == ["iteration", "proposal", "kind", "old_width", "new_width", "channels_removed"]
    assert len(csv) == len(result.history) and csv.chosen.sum() == result.iterations
    assert (out / "trajectory.png").stat().st_size > 10_000
    assert not list((out / "proposals").glob("*.pt"))  # per-iteration proposal weights are cleaned up
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["netadapt"]["iterations"] == result.iterations
    # the network as it ended is the one in the checkpoint (no more training on a finished rerun)
    from nas.netadapt import netadapt

    again = netadapt(setup["SPEC"], None, splits, setup["MaddsLatency"](), setup["CONFIG"], out, progress=False)
    assert comparable(again.history).equals(comparable(result.history)) and again.final_acc == result.final_acc


@pytest.mark.slow
def test_sigkill_then_rerun_gives_the_same_history(finished, tmp_path):
    result, _ = finished
    script = tmp_path / "run.py"
    script.write_text(RUN)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run([sys.executable, str(script), str(out), "5"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state = json.loads((out / "state.json").read_text())
    assert len(state["rows"]) == 4 and state["final"] is None  # 4 proposals finished, the 5th was in flight
    rerun = subprocess.run([sys.executable, str(script), str(out), "0"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    history = pd.DataFrame(json.loads((out / "state.json").read_text())["rows"])
    expected = comparable(result.history)
    got = comparable(history)[expected.columns]
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert ArchSpec.from_json((out / "spec.json").read_text()) == result.spec


def test_another_long_fine_tune_reuses_the_iterations(finished, tmp_path):
    import shutil

    from nas.netadapt import netadapt

    result, splits = finished
    out = tmp_path / "copy"
    shutil.copytree(result.out, out)
    longer = dataclasses.replace(setup["CONFIG"], long_epochs=2, long_lr=0.01)
    again = netadapt(setup["SPEC"], None, splits, setup["MaddsLatency"](), longer, out, progress=False, threads=1)
    assert comparable(again.history).equals(comparable(result.history))  # no proposal trained again
    assert again.spec == result.spec and again.iterations == result.iterations
    assert again.train_steps == result.train_steps + 6  # 2 epochs of 6 steps instead of 1
    state = json.loads((out / "state.json").read_text())
    assert state["final"]["settings"] == {"long_epochs": 2, "long_lr": 0.01}
    assert json.loads((out / "metrics.json").read_text())["netadapt"]["train_steps"] == again.train_steps
    # the iterations' settings still guard the folder
    other = dataclasses.replace(longer, short_steps=7)
    with pytest.raises(NasError, match="another network or with other settings"):
        netadapt(setup["SPEC"], None, splits, setup["MaddsLatency"](), other, out, progress=False)


def test_fine_tuning_follows_the_optimizer_the_network_was_trained_with():
    from nas.netadapt import NetAdaptConfig

    def settings(config):
        return config.optimizer, config.lr, config.long_lr

    assert settings(NetAdaptConfig().resolved()) == ("sgd", 0.01, 0.02)  # unknown: sgd
    assert settings(NetAdaptConfig().resolved(trained_with="adamw")) == ("adamw", 0.0002, 0.0004)
    assert settings(NetAdaptConfig(optimizer="sgd", lr=0.03).resolved(trained_with="adamw")) == ("sgd", 0.03, 0.02)
    assert settings(NetAdaptConfig().resolved(trained_with="lbfgs")) == ("sgd", 0.01, 0.02)
    with pytest.raises(NasError, match="unknown optimizer 'adam'"):
        NetAdaptConfig(optimizer="adam")
    with pytest.raises(NasError, match="lr: must be > 0"):
        NetAdaptConfig(long_lr=0)


def test_a_state_file_of_an_older_format_is_one_clear_error(finished, tmp_path):
    import shutil

    from nas.netadapt import netadapt

    result, splits = finished
    out = tmp_path / "old"
    shutil.copytree(result.out, out)
    state = json.loads((out / "state.json").read_text())
    assert state["identity"]["config"]["optimizer"] == "sgd"  # recorded, never assumed
    state["format"] = "nas-netadapt/1"
    (out / "state.json").write_text(json.dumps(state))
    with pytest.raises(NasError, match="has format 'nas-netadapt/1', this version reads 'nas-netadapt/2'; delete"):
        netadapt(setup["SPEC"], None, splits, setup["MaddsLatency"](), setup["CONFIG"], out, progress=False)


def test_targets_out_of_reach_are_refused(tmp_path, finished):
    from nas.netadapt import NetAdaptConfig, netadapt

    _, splits = finished
    spec, fake = setup["SPEC"], setup["MaddsLatency"]()
    start = fake.predict(spec)
    model = setup["build_model"](spec, seed=0)
    with pytest.raises(NasError, match="not below the network's current predicted latency"):
        netadapt(spec, model, splits, fake, NetAdaptConfig(target=f"{start * 1.5}ms"), tmp_path / "a", progress=False)
    with pytest.raises(NasError, match="smallest network NetAdapt can reach"):
        netadapt(spec, model, splits, fake, NetAdaptConfig(target="0.01"), tmp_path / "b", progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before any work
    for bad in ("1.2", "0", "-3ms", "fast"):
        with pytest.raises(NasError, match="target"):
            NetAdaptConfig(target=bad)


def test_an_output_folder_of_another_run_is_refused(finished):
    from nas.netadapt import netadapt

    result, splits = finished
    other = setup["CONFIG"].__class__(target="0.6", short_steps=6, long_epochs=1, delta_fraction=0.05, batch_size=16)
    with pytest.raises(NasError, match="another network or with other settings"):
        netadapt(setup["SPEC"], None, splits, setup["MaddsLatency"](), other, result.out, progress=False)


def test_cli_refuses_a_checkpoint_whose_spec_does_not_match_its_weights(tmp_path):
    from nas.train import save_checkpoint

    spec = setup["SPEC"]
    narrower = ArchSpec.from_string(spec.to_string().replace("stem_c16", "stem_c8"))
    path = save_checkpoint(tmp_path / "bad.pt", spec, setup["build_model"](narrower, seed=0))
    result = run_cli("netadapt", path, "--table", tmp_path / "none", "--target", "0.8", "--out", tmp_path / "o")
    assert_one_line_error(result, "does not match the spec")
