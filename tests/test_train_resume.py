"""Long trainings: per-epoch progress on stderr, per-epoch state, resume after a kill, precision."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nas.errors import NasError
from nas.train import TrainConfig, evaluate, train
from nas.experiment import SupernetSection
from nas.train.cpu import LONG_TRAINING_STEPS, has_bf16, resolve_precision, resolve_scoring_precision
from nas.train.resume import STATE_FILE, load_state
from tests.conftest import ROOT
from tests.test_trainer import fast_config, tiny_model, tiny_spec, toy_splits


class Interrupt(Exception):
    pass


def stop_at(step_to_stop: int):
    def report(step, epoch, val_acc):
        if step == step_to_stop:
            raise Interrupt
        return False

    return report


def test_resume_gives_the_uninterrupted_result(tmp_path, capsys):
    splits, config = toy_splits(), fast_config(steps=40, eval_every=1.0)  # 8 steps per epoch, 5 epochs
    whole = tiny_model()
    reference = train(whole, splits, config, progress=False)

    state = tmp_path / STATE_FILE
    with pytest.raises(Interrupt):  # stops in epoch 3's evaluation, before its state is saved
        train(tiny_model(), splits, config, progress=False, report=stop_at(24), state_path=state)
    assert load_state(state).step == 16
    resumed_model = tiny_model(seed=5)  # other initial weights: all must come from the state
    resumed = train(resumed_model, splits, config, progress=True, state_path=state)
    err = capsys.readouterr().err
    assert "resuming from" in err and "at step 16/40" in err
    assert resumed.steps == reference.steps == 40
    for (key, a), b in zip(whole.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), key
    assert resumed.val_acc == reference.val_acc and resumed.train_loss == pytest.approx(reference.train_loss)
    assert [h["step"] for h in resumed.history] == [h["step"] for h in reference.history]


def test_progress_lines_without_terminal(capsys):
    train(tiny_model(), toy_splits(), fast_config(steps=16), progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2
    for fragment in ("epoch 1/2", "step 8/16", "loss ", "val_acc 0.", "img/s", "ETA "):
        assert fragment in lines[0], (fragment, lines[0])
    train(tiny_model(), toy_splits(), fast_config(steps=16), progress=False)
    assert capsys.readouterr().err == ""


def test_state_of_another_training_is_not_resumed(tmp_path, capsys):
    splits, state = toy_splits(), tmp_path / STATE_FILE
    with pytest.raises(Interrupt):
        train(tiny_model(), splits, fast_config(), progress=False, report=stop_at(16), state_path=state)
    result = train(tiny_model(), splits, fast_config(lr=0.02), progress=True, state_path=state)
    assert "another training" in capsys.readouterr().err and result.steps == 24


def test_a_state_resumes_under_other_run_only_settings(tmp_path, capsys):
    """Threads, evaluation batch, test scoring and compiling do not change what is trained."""
    splits, state = toy_splits(), tmp_path / STATE_FILE
    with pytest.raises(Interrupt):
        train(tiny_model(), splits, fast_config(), progress=False, report=stop_at(16), state_path=state)
    other = fast_config(eval_batch_size=7, threads=2, evaluate_test=True, compile="off")
    result = train(tiny_model(), splits, other, progress=True, state_path=state)
    assert "at step 8/24" in capsys.readouterr().err and result.steps == 24


def test_evaluation_batches_by_precision_and_scores_alike_at_any_batch_size():
    from nas.train.cpu import EVAL_BATCH, autocast, eval_batch_size

    assert eval_batch_size() == EVAL_BATCH["fp32"]
    with autocast("bf16"):
        assert eval_batch_size() == EVAL_BATCH["bf16"] != EVAL_BATCH["fp32"]
    splits = toy_splits()
    model = tiny_model()
    train(model, splits, fast_config(steps=2), progress=False)  # part-way: neither none nor all right
    accuracies = {evaluate(model, splits.val, batch_size) for batch_size in (None, 1, 5, 512)}
    assert len(accuracies) == 1 and 0 < accuracies.pop() < 1


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_state_is_loaded_weights_only(tmp_path):
    marker, state = tmp_path / "pwned", tmp_path / STATE_FILE
    torch.save({"format": "nas-train-state/1", "step": Payload(marker)}, state)
    with pytest.raises(NasError, match="refused"):
        train(tiny_model(), toy_splits(), fast_config(), progress=False, state_path=state)
    assert not marker.exists()


def test_precision_config():
    with pytest.raises(NasError, match="precision"):
        TrainConfig(steps=1, precision="fp16")
    assert resolve_precision("bf16", 1) == "bf16" and resolve_precision("fp32", 10**6) == "fp32"
    bf16_cpu = frozenset({"avx512_bf16"})
    assert resolve_precision("auto", LONG_TRAINING_STEPS, frozenset()) == "fp32"  # never bf16 without bf16
    assert resolve_precision("auto", LONG_TRAINING_STEPS, bf16_cpu) == "bf16"  # long trainings on a bf16 CPU
    assert resolve_precision("auto", LONG_TRAINING_STEPS - 1, bf16_cpu) == "fp32"  # short ones stay fp32
    assert has_bf16(frozenset({"amx_bf16"})) and has_bf16(frozenset({"avx512_bf16"})) and not has_bf16(frozenset())
    # scoring with a supernet: bf16 wherever the CPU has it
    assert resolve_scoring_precision("auto", bf16_cpu) == "bf16"
    assert resolve_scoring_precision("auto", frozenset()) == "fp32"
    assert resolve_scoring_precision("fp32", bf16_cpu) == "fp32"
    with pytest.raises(NasError, match="precision"):
        SupernetSection(precision="fp16").validate()


def test_bf16_training_learns_and_leaves_the_model_as_it_was():
    from nas.models import build_model

    torch.manual_seed(0)
    model = build_model(tiny_spec())
    result = train(model, toy_splits(), fast_config(precision="bf16", steps=32), progress=False)
    assert result.steps == 32 and result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not any("forward" in vars(m) for m in model.modules())  # depthwise fp32 forwards removed


# --- kill -9 of `nas train`, then the same command again -------------------------------------------


def idx_bytes(tensor: torch.Tensor) -> bytes:
    header = bytes([0, 0, 0x08, tensor.dim()]) + b"".join(d.to_bytes(4, "big") for d in tensor.shape)
    return header + tensor.to(torch.uint8).numpy().tobytes()


def write_learnable_fmnist(folder: Path, n_train: int = 400, n_test: int = 100) -> None:
    """Fashion-MNIST IDX files whose class is a bright horizontal band (learnable in a few epochs)."""
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = torch.arange(n) % 10
        images = torch.randint(0, 60, (n, 28, 28), generator=gen, dtype=torch.uint8)
        for c in range(10):
            images[labels == c, 2 * c + 4 : 2 * c + 6, :] += 180
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))


def train_command(data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "nas", "train", "mobilenetv3-small", "--width-mult", "0.25", "--data-dir",
            str(data), "--steps", "110", "--batch-size", "32", "--threads", "1", "--precision", "fp32",
            "--json", "--out", str(out)]  # 360 train images: 11 steps per epoch, 10 epochs


def run(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.slow
def test_kill_9_then_rerun_finishes_like_an_uninterrupted_run(tmp_path):
    data = tmp_path / "fmnist"
    write_learnable_fmnist(data)
    killed_out = tmp_path / "killed"
    command = train_command(data, killed_out)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=dict(os.environ))
    state = killed_out / STATE_FILE
    while not state.exists():  # wait for the first epoch's state, not for a duration
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed_out / "checkpoint.pt").exists()
    killed_at = load_state(state).step
    assert 0 < killed_at < 110 and killed_at % 11 == 0

    rerun = run(command)
    assert f"at step {killed_at}/110" in rerun.stderr
    assert [line for line in rerun.stderr.splitlines() if line.startswith("epoch 10/10")]
    whole = run(train_command(data, tmp_path / "whole"))
    resumed_summary, whole_summary = json.loads(rerun.stdout), json.loads(whole.stdout)
    assert resumed_summary["steps"] == whole_summary["steps"] == 110
    assert resumed_summary["test_acc"] == whole_summary["test_acc"]
    assert resumed_summary["val_acc"] == whole_summary["val_acc"]
    assert not state.exists()  # removed once the outputs are written
    a = torch.load(killed_out / "checkpoint.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_folded_batchnorm_evaluates_the_same_function():
    from nas.models import build_model
    from nas.train.trainer import fold_batchnorm

    splits = toy_splits()
    torch.manual_seed(0)
    for model in (build_model(tiny_spec()), tiny_model()):
        train(model, splits, fast_config(steps=16), progress=False)  # non-trivial running statistics
        model.train()
        folded = fold_batchnorm(model)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) and model.training
        model.eval()
        x = torch.randn(8, 1, 8, 8).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
        assert evaluate(model, splits.val) == evaluate(model, splits.val, fold_bn=False)
