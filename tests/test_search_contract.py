"""One contract for every strategy in the registry (valid specs, determinism, resume), on a tiny
space with a fast synthetic evaluator; plus the spec-hash cache and pruning."""


import optuna
import pytest
import yaml
from optuna.trial import TrialState

from nas.experiment import experiment_from_dict
from nas.reward import Reward
from nas.search import STRATEGIES
from nas.search.evaluate import SyntheticEvaluator
from nas.search.runner import open_study, run_search
from nas.spec import ArchSpec, load_space

TINY_SPACE = {
    "name": "tiny", "input": {"resolution": 8, "channels": 1}, "num_classes": 3,
    "stem": {"out_channels": 8, "kernel": 3, "stride": 1, "act": "relu"},
    "stages": [
        {"stride": 2, "depth": [1, 2], "width": [8, 16], "kernel": [3, 5], "expansion": [1, 3], "se": [False, True],
         "act": ["relu", "hswish"]},
        {"stride": 1, "depth": [1, 2], "width": [16, 24], "kernel": [3], "expansion": [3, 4], "se": [False],
         "act": ["relu"]},
    ],
    "last_stage": {"out_channels": 32, "act": "hswish", "se": False},
    "head": {"hidden": 0, "dropout": 0.0},
}
N = 10


class Counting(SyntheticEvaluator):
    """The synthetic evaluator, counting calls; raises KeyboardInterrupt at call ``interrupt_at``."""

    def __init__(self, interrupt_at=None):
        super().__init__(steps=3, madds_scale=2e4, ms_per_mmadd=0.5)
        self.calls, self.interrupt_at = [], interrupt_at

    def evaluate(self, spec, report=None):
        self.calls.append(spec.hash)
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        return super().evaluate(spec, report)


@pytest.fixture
def experiment(tmp_path):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_SPACE))
    data = {"name": "contract", "space": "tiny.yaml", "out": "out", "proxy": {"steps": 3},
            "latency": {"source": "measure"}, "reward": {"target_ms": 0.05, "preset": "soft"},
            "search": {"n_trials": N, "seed": 3, "baseline": False}}
    return experiment_from_dict(data, "contract.yaml", tmp_path)


def run(experiment, strategy, storage=":memory:", evaluator=None, **kw):
    return run_search(experiment, strategy=strategy, storage=storage, evaluator=evaluator or Counting(),
                      progress=False, measure_best=False, **kw)


def hashes(study):
    return [(t.number, t.user_attrs.get("hash"), t.state.name) for t in study.get_trials(deepcopy=False)]


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_valid_specs_and_complete_records(experiment, strategy):
    space = load_space(experiment.space)
    result = run(experiment, strategy)
    trials = result.study.get_trials(deepcopy=False)
    assert result.n_trials == N and len(trials) == N
    reward = Reward(0.05, -0.07, -0.07)
    for t in trials:
        assert t.state == TrialState.COMPLETE
        spec = ArchSpec.from_string(t.user_attrs["spec"])
        assert space.contains(spec) and spec.hash == t.user_attrs["hash"]
        assert space.decode(t.params) == spec  # the study's params are the assignment
        assert t.user_attrs["reward"] == pytest.approx(reward(t.user_attrs["val_acc"], t.user_attrs["latency_ms"]))
        assert t.values == [t.user_attrs["reward"]]
    assert result.best.reward == max(t.user_attrs["reward"] for t in trials)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_deterministic_under_a_seed(experiment, strategy):
    first, second = run(experiment, strategy), run(experiment, strategy)
    assert hashes(first.study) == hashes(second.study)
    other = run(experiment.replace(search={"seed": 4}), strategy)
    assert hashes(other.study) != hashes(first.study)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_resume_after_interruption(experiment, strategy, tmp_path):
    storage = f"journal:{tmp_path / 'journal.log'}"
    experiment = experiment.replace(search={"n_trials": 5})  # a journal file writes slowly: few trials
    with pytest.raises(KeyboardInterrupt):
        run(experiment, strategy, storage, Counting(interrupt_at=3))
    study = optuna.load_study(study_name=f"contract-{strategy}",
                              storage=optuna.storages.JournalStorage(
                                  optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal.log"))))
    before = {t.number: t.user_attrs["hash"] for t in study.get_trials(states=(TrialState.COMPLETE,))}
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 1 and len(before) >= 1
    result = run(experiment, strategy, storage)
    trials = result.study.get_trials(deepcopy=False)
    assert result.n_trials == 5
    assert {t.number: t.user_attrs["hash"] for t in trials if t.number in before} == before  # nothing lost
    retry = [t for t in trials if t.user_attrs.get("retry_of") == failed[0].number]
    assert len(retry) == 1 and retry[0].params == failed[0].params and retry[0].state == TrialState.COMPLETE


def test_a_trial_left_running_by_a_killed_process_is_rerun(experiment, tmp_path):
    storage = f"journal:{tmp_path / 'journal.log'}"
    run(experiment.replace(search={"n_trials": 3}), "random", storage)
    space = load_space(experiment.space)
    study = open_study(experiment, space, "random", storage, "contract-random", 0.05)
    orphan = STRATEGIES["random"](space, study, 3).ask()  # asked, never told: what SIGKILL leaves
    result = run(experiment.replace(search={"n_trials": 5}), "random", storage)
    states = {t.number: t.state for t in result.study.get_trials(deepcopy=False)}
    assert states[orphan.number] == TrialState.FAIL
    rerun = [t for t in result.study.get_trials(deepcopy=False) if t.user_attrs.get("retry_of") == orphan.number]
    assert rerun and rerun[0].params == orphan.assignment and rerun[0].state == TrialState.COMPLETE
    assert result.n_trials == 5


def test_an_architecture_is_never_trained_twice(experiment):
    # 40 trials of evolution on a space this small sample many architectures more than once.
    evaluator = Counting()
    result = run(experiment.replace(search={"n_trials": 40}), "evolution", evaluator=evaluator)
    trials = result.study.get_trials(deepcopy=False)
    cached = [t for t in trials if t.user_attrs.get("cached")]
    assert cached, "the test needs repeated architectures"
    assert len(evaluator.calls) == len(set(evaluator.calls)) == len({t.user_attrs["hash"] for t in trials})
    for t in cached:
        source = trials[t.user_attrs["cached_from"]]
        assert t.user_attrs["hash"] == source.user_attrs["hash"] and t.values == source.values


def test_median_pruner_stops_hopeless_candidates(experiment):
    exp = experiment.replace(proxy={"pruner": "median"}, search={"n_trials": 20})
    result = run(exp, "random")
    trials = result.study.get_trials(deepcopy=False)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned and all(len(t.intermediate_values) < 3 for t in pruned)
    assert all(len(t.intermediate_values) == 3 for t in trials if t.state == TrialState.COMPLETE)


def test_pareto_mode_records_two_objectives(experiment):
    result = run(experiment.replace(search={"objectives": "pareto"}), "nsga2")
    trials = result.study.get_trials(deepcopy=False)
    assert all(t.values == [t.user_attrs["val_acc"], t.user_attrs["latency_ms"]] for t in trials)
    front = {r.number for r in result.pareto}
    optuna_front = {t.number for t in result.study.best_trials}
    # Optuna's front keeps every copy of a point; ours one per point.
    assert front <= optuna_front
    assert {(t.values[0], t.values[1]) for t in result.study.best_trials} == \
        {(r.val_acc, r.latency_ms) for r in result.pareto}


def test_rl_policy_state_is_saved_with_the_study(experiment):
    import torch

    from nas.samplers.optuna_private import study_system_attrs
    from nas.search.rl import RLStrategy

    space = load_space(experiment.space)
    result = run(experiment, "rl")  # 10 trials, batch 5: two PPO updates
    state = study_system_attrs(result.study)["nas:mnas_rl"]
    assert state["updates"] == 2 and state["seen"] == list(range(N)) and state["version"] == 2
    sampler = RLStrategy.sampler(3, {}, space=space)
    trained, _ = sampler._restore(sampler.load(result.study, sampler._space), sampler._space)
    untrained, _ = sampler._restore(None, sampler._space)
    moved = [not torch.equal(a, b) for a, b in zip(trained.parameters(), untrained.parameters())]
    assert any(moved)  # the policy learned and is restored from the study, not re-initialised
    for t in result.study.get_trials(deepcopy=False):  # each trial keeps what PPO needs from its sampling
        sample = t.system_attrs["nas:mnas_rl:sample"]
        assert sample["tokens"] == sampler.tokens(t, sampler._space) and sample["logp"] < 0


@pytest.mark.parametrize("strategy", ["rl", "evolution"])
def test_a_corrupt_stored_sampler_state_stops_the_search_before_any_trial(experiment, tmp_path, strategy):
    from nas.errors import NasError
    from nas.samplers.optuna_private import set_study_system_attr, study_system_attrs

    storage = f"journal:{tmp_path / 'journal.log'}"
    study = run(experiment.replace(search={"n_trials": 5}), strategy, storage).study
    key = {"rl": "nas:mnas_rl", "evolution": "nas:evolution"}[strategy]
    set_study_system_attr(study, key, {"format": "something else"})
    before = [(t.number, t.state, t.params) for t in study.get_trials()]
    with pytest.raises(NasError, match="is corrupt"):
        run(experiment, strategy, storage)
    after = optuna.load_study(study_name=study.study_name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal.log"))))
    assert [(t.number, t.state, t.params) for t in after.get_trials()] == before
    assert study_system_attrs(after)[key] == {"format": "something else"}


def test_every_strategy_has_its_options_in_the_settings():
    from nas.config import STRATEGY_OPTIONS

    assert {name: cls.OPTIONS for name, cls in STRATEGIES.items()} == STRATEGY_OPTIONS


def test_without_a_terminal_each_finished_trial_is_one_line_on_stderr(experiment, capsys):
    run_search(experiment, strategy="random", storage=":memory:", evaluator=Counting(), progress=True,
               measure_best=False)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("trial ")]
    assert len(lines) == N
    assert lines[0].startswith("trial 0 complete  val_acc ") and f"| 1/{N} finished, best reward " in lines[0]
    assert f"| {N}/{N} finished" in lines[-1] and "none yet" not in lines[-1]
