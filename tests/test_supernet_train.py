"""Supernet training: sampling, in-place distillation, the checkpoint, resuming, refusals."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from nas.errors import NasError
from nas.spec import load_space
from nas.supernet import train as supernet_train
from nas.supernet.model import largest_spec, smallest_spec
from nas.supernet.score import score_candidate
from nas.supernet.train import (SupernetSettings, _SupernetLoop, load_supernet, members_for_step, read_supernet,
                                train_supernet)
from nas.train import TrainConfig
from tests.conftest import ROOT, assert_one_line_error, run_main
from tests.latency_helpers import TINY_SPACE, write_space
from tests.supernet_helpers import write_super_space
from tests.test_trainer import toy_splits


@pytest.fixture
def space(tmp_path):
    return load_space(write_super_space(tmp_path))


def settings(epochs: float = 2, sampling: str = "uniform", kernel: str = "crop", reorder: bool = False
             ) -> SupernetSettings:
    return SupernetSettings(TrainConfig(epochs=epochs, batch_size=32, optimizer="adamw", threads=1, seed=3,
                                        precision="fp32"), sampling=sampling, kernel=kernel, reorder=reorder)


def without_activations(spec):
    return [(b.in_channels, b.exp_channels, b.out_channels, b.kernel, b.se) for b in spec.blocks]


def test_sandwich_trains_largest_smallest_and_two_samples(space):
    ends = (largest_spec(space), smallest_spec(space))
    rng = random.Random(0)
    steps = [members_for_step(space, "sandwich", rng) for _ in range(20)]
    assert all(len(members) == 4 for members in steps)
    for i, end in enumerate(ends):  # the ends' sizes every step, each block's activation drawn
        assert all(without_activations(members[i]) == without_activations(end) for members in steps)
        drawn = {b.act for members in steps for b in members[i].blocks}
        assert drawn == {act for stage in space.stages for act in stage.act}  # relu, relu6, hswish
    assert len(members_for_step(space, "uniform", random.Random(0))) == 1


def test_a_sandwich_checkpoint_of_the_earlier_rule_is_not_continued(space, tmp_path):
    splits = toy_splits()
    train_supernet(space, splits, settings(1, "sandwich"), tmp_path / "sn", progress=False)
    score = score_candidate(load_supernet(tmp_path / "sn", space), largest_spec(space), splits, batch_size=32)
    payload = read_supernet(tmp_path / "sn", space)
    earlier = json.loads(payload["settings_json"])
    del earlier["sandwich_ends"]  # as a checkpoint from before the ends drew their activations
    torch.save({**payload, "settings_json": json.dumps(earlier)}, tmp_path / "sn" / "supernet.pt")
    with pytest.raises(NasError, match="other settings"):
        train_supernet(space, toy_splits(), settings(2, "sandwich"), tmp_path / "sn", progress=False)
    # still scores candidates, as before
    assert score_candidate(load_supernet(tmp_path / "sn", space), largest_spec(space), splits, batch_size=32) == score


@pytest.mark.parametrize("sampling", ["uniform", "sandwich"])
def test_training_learns_and_saves_a_loadable_supernet(space, tmp_path, sampling):
    splits = toy_splits()
    result = train_supernet(space, splits, settings(3, sampling), tmp_path / "sn", progress=False)
    assert result.steps == 3 * 4 and len(result.history) == 3
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    net = load_supernet(tmp_path / "sn", space)
    before = torch.nn.utils.parameters_to_vector(net.parameters())
    assert torch.isfinite(before).all()
    payload = read_supernet(tmp_path / "sn" / "supernet.pt", space)
    assert payload["step"] == result.steps and payload["largest_spec_json"] == largest_spec(space).to_json()
    # each epoch's figure is the largest member scored as a candidate, not with the mixed running statistics
    config = settings().train
    assert result.val_acc_largest == score_candidate(net, largest_spec(space), splits, seed=config.seed,
                                                     channels_last=config.channels_last).accuracy


@pytest.mark.parametrize("kernel, reorder", [("crop", False), ("transform", True)])
def test_an_interrupted_training_resumes_to_the_same_weights(space, tmp_path, monkeypatch, kernel, reorder):
    splits = toy_splits()
    whole = train_supernet(space, splits, settings(kernel=kernel, reorder=reorder), tmp_path / "whole", progress=False)
    real_epoch_end = _SupernetLoop.epoch_end

    def stop_after_first_epoch(self, *args):
        real_epoch_end(self, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(_SupernetLoop, "epoch_end", stop_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_supernet(space, splits, settings(kernel=kernel, reorder=reorder), tmp_path / "cut", progress=False)
    monkeypatch.undo()
    resumed = train_supernet(space, splits, settings(kernel=kernel, reorder=reorder), tmp_path / "cut",
                             progress=False)
    assert resumed.resumed_from == 4 and resumed.steps == whole.steps
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]
    a, b = load_supernet(tmp_path / "whole", space), load_supernet(tmp_path / "cut", space)
    assert (a.stages[0][0].kernel_maps is not None) == (kernel == "transform")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_a_training_cut_mid_epoch_resumes_to_what_an_uninterrupted_one_trains(space, tmp_path, monkeypatch):
    sandwich = settings(sampling="sandwich")  # four members a step: their draws must continue too, not only the data's
    splits = toy_splits()  # 4 steps per epoch
    whole = train_supernet(space, splits, sandwich, tmp_path / "whole", progress=False)
    monkeypatch.setattr(supernet_train, "CHECKPOINT_SECONDS", 0.0)  # a checkpoint after every step
    real_save = _SupernetLoop.save

    def stop_after_step_6(self, optimizer):
        real_save(self, optimizer)
        if self.step == 6:
            raise KeyboardInterrupt

    monkeypatch.setattr(_SupernetLoop, "save", stop_after_step_6)
    with pytest.raises(KeyboardInterrupt):
        train_supernet(space, splits, sandwich, tmp_path / "cut", progress=False)
    monkeypatch.undo()
    assert read_supernet(tmp_path / "cut", space)["step"] == 6  # half-way through the second epoch
    resumed = train_supernet(space, splits, sandwich, tmp_path / "cut", progress=False)
    assert resumed.resumed_from == 6 and resumed.steps == whole.steps == 8
    # the same batches, members and losses: the second epoch's mean loss and val accuracy too
    assert [(h["train_loss"], h["val_acc_largest"]) for h in resumed.history] == \
        [(h["train_loss"], h["val_acc_largest"]) for h in whole.history]
    a, b = load_supernet(tmp_path / "whole", space), load_supernet(tmp_path / "cut", space)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_a_finished_supernet_is_not_retrained_under_other_run_only_settings(space, tmp_path):
    splits = toy_splits()
    first = train_supernet(space, splits, settings(1), tmp_path / "sn", progress=False)
    payload = read_supernet(tmp_path / "sn", space)
    saved = json.loads(payload["settings_json"])
    saved["train"]["eval_batch_size"] = 512  # as folders written when evaluation batches were 512
    torch.save({**payload, "settings_json": json.dumps(saved)}, tmp_path / "sn" / "supernet.pt")
    other = dataclasses.replace(settings(1), train=dataclasses.replace(settings(1).train, threads=2,
                                                                        eval_batch_size=64, compile="off"))
    again = train_supernet(space, splits, other, tmp_path / "sn", progress=False)
    assert again.steps == first.steps and again.history == first.history


def test_other_settings_or_data_on_the_same_folder_are_refused(space, tmp_path):
    train_supernet(space, toy_splits(), settings(1), tmp_path / "sn", progress=False)
    with pytest.raises(NasError, match="other settings"):
        train_supernet(space, toy_splits(), settings(1, "sandwich"), tmp_path / "sn", progress=False)
    with pytest.raises(NasError, match="other data"):
        train_supernet(space, toy_splits(n=320), settings(1), tmp_path / "sn", progress=False)


def test_a_supernet_of_another_space_or_a_corrupt_one_is_one_line(space, tmp_path, capsys):
    train_supernet(space, toy_splits(), settings(1), tmp_path / "sn", progress=False)
    other = load_space(write_space(tmp_path, TINY_SPACE))
    with pytest.raises(NasError, match="another space"):
        read_supernet(tmp_path / "sn", other)
    experiment = ROOT / "experiments" / "tiny_test.yaml"
    result = run_main(capsys, "supernet", "train", experiment, "--epochs", "1", "--out", tmp_path / "sn")
    assert_one_line_error(result, "another space")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "supernet.pt").write_bytes(b"PK\x03\x04 not a torch file")
    result = run_main(capsys, "supernet", "train", experiment, "--epochs", "1", "--out", corrupt)
    assert_one_line_error(result, "supernet checkpoint")


@pytest.mark.slow
def test_kill_minus_9_then_rerun_continues_from_the_last_checkpoint(tmp_path):
    out = tmp_path / "sn"
    cmd = [sys.executable, "-m", "nas", "supernet", "train", str(ROOT / "experiments" / "tiny_test.yaml"),
           "--epochs", "3", "--subset", "256", "--out", str(out), "--no-progress", "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not (out / "supernet.pt").exists() and proc.poll() is None:  # wait for the first epoch's state
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert (out / "supernet.pt").exists()
    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["resumed_from"] > 0 and summary["epochs"] == 3


def test_a_time_budget_stops_once_it_is_spent(space, tmp_path):
    config = TrainConfig(steps=10_000, batch_size=32, optimizer="adamw", threads=1, seed=3, precision="fp32")
    result = train_supernet(space, toy_splits(), SupernetSettings(config, minutes=1e-4), tmp_path / "sn",
                            progress=False)
    assert result.steps >= 1 and result.seconds >= 6e-3
    assert read_supernet(tmp_path / "sn", space)["step"] == result.steps
    again = train_supernet(space, toy_splits(), SupernetSettings(config, minutes=1e-4), tmp_path / "sn",
                           progress=False)
    assert again.steps == result.steps  # a finished budget is not trained again


def test_a_checkpoint_whose_settings_are_not_an_object_is_one_line(space, tmp_path):
    train_supernet(space, toy_splits(), settings(1), tmp_path / "sn", progress=False)
    path = tmp_path / "sn" / "supernet.pt"
    for text, message in (("[1]", "not a JSON object"), ('{"kernel": NaN}', "settings")):
        payload = torch.load(path, weights_only=True)
        payload["settings_json"] = text
        torch.save(payload, path)
        with pytest.raises(NasError, match=message) as info:
            load_supernet(tmp_path / "sn", space)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("epoch_loss", ["[1.0, -1]", "[NaN, 1]", "[1.0, 4]", '{"a": 1}', "not json"])
def test_a_checkpoint_with_an_impossible_epoch_loss_is_one_line(space, tmp_path, epoch_loss):
    train_supernet(space, toy_splits(), settings(1), tmp_path / "sn", progress=False)  # 4 steps per epoch
    path = tmp_path / "sn" / "supernet.pt"
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "epoch_loss_json": epoch_loss}, path)
    with pytest.raises(NasError, match="cannot be resumed") as info:
        train_supernet(space, toy_splits(), settings(1), tmp_path / "sn", progress=False)
    assert "\n" not in str(info.value)
