"""Scoring candidates with a supernet: BatchNorm recalibration, the evaluator, a supernet search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from nas.errors import NasError
from nas.experiment import load_experiment
from nas.spec import ArchSpec, load_space
from nas.supernet.model import Supernet, extract
from nas.supernet.score import recalibrate_batchnorm, score_candidate
from nas.supernet.train import SupernetSettings, load_supernet, train_supernet
from nas.threads import torch_threads
from nas.train import TrainConfig, validate
from tests.conftest import assert_one_line_error, run_main
from tests.supernet_helpers import write_super_space
from tests.test_trainer import toy_splits


def test_recalibration_gives_the_plain_average_of_the_batches_statistics(tmp_path):
    space = load_space(write_super_space(tmp_path))
    splits = toy_splits()
    model = extract(Supernet(space), space.baseline).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.fill_(7.0)
    recalibrate_batchnorm(model, splits, batches=2, batch_size=32, channels_last=False)
    # the stem's BN sees the stem conv's output: its mean over the two batches, not a momentum blend with 7
    from nas.data import Augment, train_batches

    stream = train_batches(splits.train, 32, torch.Generator().manual_seed(0), Augment(enabled=False))
    with torch.no_grad():
        means = [model.stem.conv(next(stream)[0]).mean((0, 2, 3)) for _ in range(2)]
    assert torch.allclose(model.stem.bn.running_mean, (means[0] + means[1]) / 2, atol=1e-5)
    assert model.stem.bn.momentum == 0.1 and not model.training  # the mode is restored


def test_score_is_deterministic_and_the_recalibrated_slices_validation(tmp_path):
    space = load_space(write_super_space(tmp_path))
    splits = toy_splits()
    torch.manual_seed(0)
    net = Supernet(space)
    a = score_candidate(net, space.baseline, splits, bn_batches=2, batch_size=32)
    b = score_candidate(net, space.baseline, splits, bn_batches=2, batch_size=32)
    assert a == b and 0.0 <= a.accuracy <= 1.0 and a.loss > 0
    model = extract(net, space.baseline)
    recalibrate_batchnorm(model, splits, 2, 32)
    assert a == validate(model, splits.val)


@pytest.fixture
def supernet_experiment(tiny_test_experiment, tmp_path):
    """tiny_test with a tiny trained supernet of its space and search.evaluator: supernet, 3 trials."""
    from nas.data import load_data

    exp = load_experiment(tiny_test_experiment)
    d = exp.data
    splits = load_data(d.name, d.data_dir, d.val_fraction, d.seed, d.subset)
    config = TrainConfig(steps=2, batch_size=32, optimizer="adamw", threads=1, precision="fp32")
    train_supernet(exp.load_space(), splits, SupernetSettings(config), tmp_path / "sn", progress=False)
    data = yaml.safe_load(tiny_test_experiment.read_text())
    data["search"] |= {"evaluator": "supernet", "n_trials": 3}
    data["supernet"] = {"path": str(tmp_path / "sn"), "bn_batches": 2, "batch_size": 64}
    tiny_test_experiment.write_text(yaml.safe_dump(data))
    return tiny_test_experiment, splits


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["accuracy", "likelihood"])
def test_a_supernet_search_completes_with_the_supernets_scores(supernet_experiment, capsys, metric):
    path, splits = supernet_experiment
    data = yaml.safe_load(path.read_text())
    data["supernet"]["metric"] = metric
    path.write_text(yaml.safe_dump(data))
    result = run_main(capsys, "search", path, "--json", "--no-measure")
    assert result.returncode == 0, result.stderr
    exp = load_experiment(path)
    import optuna

    from nas.search.study import default_storage

    study = optuna.load_study(study_name=f"{exp.name}-random", storage=default_storage(exp.out))
    trials = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(trials) == 3
    net = load_supernet(exp.supernet.path, exp.load_space())
    for trial in trials:
        spec = ArchSpec.from_string(trial.user_attrs["spec"])
        with torch_threads(exp.proxy_config.threads):  # as the search scored it (bf16 sums depend on threads)
            want = score_candidate(net, spec, splits, bn_batches=2, batch_size=64,
                                   precision=exp.supernet_config.precision)
        assert trial.user_attrs["val_acc"] == getattr(want, metric)
        assert (trial.user_attrs["val_top1"], trial.user_attrs["val_loss"]) == (want.accuracy, want.loss)
        assert trial.user_attrs["steps"] == 0
    import pandas as pd

    rows = pd.read_csv(Path(json.loads(result.stdout)["out"]) / "trials.csv").set_index("number")
    for trial in trials:  # the top-1 accuracy is kept whichever score the reward took
        assert rows.loc[trial.number, "val_top1"] == pytest.approx(trial.user_attrs["val_top1"])


def test_a_supernet_evaluator_without_a_path_is_refused(tiny_test_experiment, capsys):
    data = yaml.safe_load(tiny_test_experiment.read_text())
    data["search"]["evaluator"] = "supernet"
    tiny_test_experiment.write_text(yaml.safe_dump(data))
    result = run_main(capsys, "search", tiny_test_experiment)
    assert_one_line_error(result, "supernet.path")


def test_a_supernet_studys_identity_names_its_supernet(tiny_test_experiment, tmp_path):
    from nas.search.study import identity

    exp = load_experiment(tiny_test_experiment)
    space = exp.load_space()
    assert "supernet" not in identity(exp, space, "random")
    one = exp.replace(search={"evaluator": "supernet"}, supernet={"path": str(tmp_path / "a")})
    other = one.replace(supernet={"path": str(tmp_path / "b")})
    assert identity(one, space, "random")["supernet"]["path"] == str(tmp_path / "a")
    assert identity(one, space, "random") != identity(other, space, "random")


def test_workers_that_would_score_in_another_precision_are_refused(tiny_test_experiment, tmp_path, monkeypatch):
    """``precision: auto`` is stored as what it resolves to where the study is made: a worker on a CPU
    that would resolve it otherwise gets one line naming both precisions, and one that sets the study's joins."""
    from nas.search.study import identity, open_study
    from nas.train import cpu

    exp = load_experiment(tiny_test_experiment).replace(search={"evaluator": "supernet"},
                                                        supernet={"path": str(tmp_path / "sn")})
    space, storage = exp.load_space(), f"sqlite:///{tmp_path / 'study.db'}"
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert identity(exp, space, "random")["supernet"]["precision"] == "bf16"
    open_study(exp, space, "random", storage, "s", 0.05)
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx512f"}))
    with pytest.raises(NasError, match="this machine scores candidates in fp32, the study in bf16"):
        open_study(exp, space, "random", storage, "s", 0.05)
    open_study(exp.replace(supernet={"path": str(tmp_path / "sn"), "precision": "bf16"}), space, "random", storage,
               "s", 0.05)


def test_a_study_scored_by_one_metric_is_not_resumed_by_the_other(tiny_test_experiment, tmp_path):
    """The metric is part of a supernet study's identity; a study recorded before ``supernet.metric``
    existed scored by accuracy and resumes with it."""
    from nas.search.study import IDENTITY_ATTR, identity, open_study

    exp = load_experiment(tiny_test_experiment).replace(search={"evaluator": "supernet"},
                                                        supernet={"path": str(tmp_path / "sn")})
    space, storage = exp.load_space(), f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(exp, space, "random", storage, "s", 0.05)
    with pytest.raises(NasError, match=r"another experiment \(different supernet\)"):
        open_study(exp.replace(supernet={"path": str(tmp_path / "sn"), "metric": "likelihood"}), space, "random",
                   storage, "s", 0.05)
    earlier = identity(exp, space, "random")
    del earlier["supernet"]["metric"]
    study.set_user_attr(IDENTITY_ATTR, earlier)
    open_study(exp, space, "random", storage, "s", 0.05)
