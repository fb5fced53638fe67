import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, assert_one_line_error, run_cli
from nas.errors import NasError
from nas.experiment import SECTIONS, load_experiment

EXPERIMENTS = sorted((ROOT / "experiments").glob("*.yaml"))
from tests.latency_helpers import SHIPPED_FASHION as TABLE


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_shipped_experiments_load(path):
    exp = load_experiment(path)
    assert exp.space.is_file()
    assert exp.search.n_trials >= 1
    assert exp.proxy.steps or exp.proxy.epochs


def write(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load((ROOT / "experiments" / "tiny_test.yaml").read_text())
    data["space"] = str(ROOT / "search_spaces" / "fashion_mnist.yaml")
    data["latency"]["table"] = str(TABLE)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        elif value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_sections_and_resolution(tmp_path):
    exp = load_experiment(write(tmp_path, out="results", reward={"target_ms": 0.5, "preset": "hard"}))
    assert set(SECTIONS) == {"data", "proxy", "latency", "reward", "search", "train", "netadapt", "export", "report",
                             "supernet"}
    assert exp.out == tmp_path / "results"  # relative paths are relative to the experiment file
    reward = exp.reward_fn()
    assert (reward.target_ms, reward.alpha, reward.beta) == (0.5, 0.0, -1.0)
    custom = load_experiment(write(tmp_path, reward={"target_ms": 1, "preset": None, "alpha": -0.1, "beta": -0.3}))
    assert (custom.reward_fn().alpha, custom.reward_fn().beta) == (-0.1, -0.3)


BAD = [
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"proxy": {"stepz": 3}}, "proxy: unknown key 'stepz'"),
    ({"reward": {"target_ms": 0}}, "reward.target_ms: must be > 0"),
    ({"reward": {"target_ms": -2.5}}, "reward.target_ms: must be > 0"),
    ({"reward": {"preset": "medium"}}, "unknown preset 'medium'"),
    ({"search": {"strategy": "bayes"}}, "unknown strategy 'bayes'"),
    ({"search": {"n_trials": 0}}, "search.n_trials: must be >= 1"),
    ({"search": {"options": {"population": 3}}}, "unknown option 'population'"),
    ({"proxy": {"epochs": 1}}, "exactly one budget"),
    ({"latency": {"table": "/nonexistent/table"}}, "latency.table: not found"),
    ({"space": "/nonexistent/space.yaml"}, "space file not found"),
    ({"search": {"objectives": "pareto"}, "proxy": {"pruner": "median"}}, "single-objective"),
]


@pytest.mark.parametrize("changes,message", BAD, ids=[m for _, m in BAD])
def test_bad_experiments_are_refused(tmp_path, changes, message):
    with pytest.raises(NasError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_experiment(write(tmp_path, **changes))


def test_table_of_another_space_is_refused(tmp_path):
    table = tmp_path / "table"
    shutil.copytree(next((ROOT / "latency_tables" / "cifar10").iterdir()), table)  # the CIFAR-10 space's table
    with pytest.raises(NasError, match="built for another space"):
        load_experiment(write(tmp_path, latency={"table": str(table)}))


@pytest.mark.parametrize("changes,args,message", [
    ({"reward": {"target_ms": 0}}, [], "target_ms"),
    ({}, ["--strategy", "bayes"], "unknown strategy 'bayes'"),
])
def test_cli_bad_input_is_one_line(tmp_path, changes, args, message):
    assert_one_line_error(run_cli("search", write(tmp_path, **changes), *args), message)


def test_cli_missing_experiment_file():
    assert_one_line_error(run_cli("search", "no/such/experiment.yaml"), "experiment file not found")


def test_the_supernet_section_is_built_once_and_its_path_is_resolved(tmp_path):
    exp = load_experiment(write(tmp_path, search={"evaluator": "supernet"},
                                supernet={"path": "sn", "bn_batches": 4}))
    assert exp.supernet_config.path == str(tmp_path / "sn") and exp.supernet_config.bn_batches == 4
    with pytest.raises(NasError, match="supernet.path"):
        load_experiment(write(tmp_path, search={"evaluator": "supernet"}))
    with pytest.raises(NasError, match="supernet.bn_batches"):
        load_experiment(write(tmp_path, supernet={"bn_batches": 0}))
    assert load_experiment(write(tmp_path, supernet={"metric": "likelihood"})).supernet_config.metric == "likelihood"
    with pytest.raises(NasError, match="supernet.metric: unknown metric 'loss'"):
        load_experiment(write(tmp_path, supernet={"metric": "loss"}))
    with pytest.raises(NasError, match="search.evaluator"):
        load_experiment(write(tmp_path, search={"evaluator": "oracle"}))
