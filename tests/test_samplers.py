"""nas.samplers on plain Optuna studies: Optuna's own sampler conformance suite, the plain script of
the docs (one process, two processes on one journal file or PostgreSQL), learning from pruned
trials, shared state, and bad input (a changed space, a corrupt stored state)."""

import json
import subprocess
import sys
import textwrap
import uuid

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.testing.pytest_samplers import BasicSamplerTestCase, MultiObjectiveSamplerTestCase, RelativeSamplerTestCase
from optuna.trial import TrialState

from conftest import ROOT
from nas.errors import NasError
from nas.samplers import MnasRLSampler, RegularizedEvolutionSampler
from nas.samplers.optuna_private import set_study_system_attr, study_system_attrs
from test_search_workers import needs_postgres, postgres_url

optuna.logging.set_verbosity(optuna.logging.WARNING)
SAMPLERS = [MnasRLSampler, RegularizedEvolutionSampler]


def small(cls, **kw):
    """A sampler that reaches its learning/evolving phase within a few trials."""
    extra = {"batch": 2, "epochs": 1} if cls is MnasRLSampler else {"population": 2, "sample": 2}
    return cls(**{**extra, **kw})


# -- Optuna's conformance suites --------------------------------------------------------------------
class TestRLBasic(BasicSamplerTestCase):
    @pytest.fixture
    def sampler(self):
        return lambda: small(MnasRLSampler, seed=0, warn_independent_sampling=False)


class TestEvolutionBasic(BasicSamplerTestCase):
    @pytest.fixture
    def sampler(self):
        return lambda: small(RegularizedEvolutionSampler, seed=0, warn_independent_sampling=False)


@pytest.mark.parametrize("cls", SAMPLERS)
class TestRelativeCategorical(RelativeSamplerTestCase):
    """Optuna's relative-sampling cases that apply: the samplers' relative space is categorical."""

    test_sample_relative_numerical = None  # numerical parameters go to the independent RandomSampler
    test_sample_relative_mixed = None

    @pytest.fixture
    def sampler(self, cls):
        return lambda: small(cls, seed=0, warn_independent_sampling=False)


def first_objective(trial):
    return trial.values[0] if trial.values else None


class TestRLMultiObjective(MultiObjectiveSamplerTestCase):
    @pytest.fixture
    def sampler(self):
        return lambda: MnasRLSampler(seed=0, reward=first_objective, warn_independent_sampling=False)


class TestEvolutionMultiObjective(MultiObjectiveSamplerTestCase):
    @pytest.fixture
    def sampler(self):
        return lambda: RegularizedEvolutionSampler(seed=0, reward=first_objective, warn_independent_sampling=False)


# -- the plain script ------------------------------------------------------------------------------
SCORES = {"a": {0: 0, 1: 1, 2: 2, 3: 3}, "b": {"x": 0, "y": 2, "z": 1}, "c": {1: 0, 2: 1, 4: 3, 8: 2}}


def objective(trial):
    return sum(SCORES[name][trial.suggest_categorical(name, list(SCORES[name]))] for name in SCORES)


@pytest.mark.parametrize("cls", SAMPLERS)
def test_plain_study_optimize(cls):
    study = optuna.create_study(direction="maximize", sampler=cls(seed=0))
    study.optimize(objective, n_trials=50)
    trials = study.get_trials()
    assert len(trials) == 50 and all(t.state == TrialState.COMPLETE for t in trials)
    assert study.best_value >= 7  # the optimum is 8; 50 uniform draws out of 48 points reach 7 anyway
    assert json.dumps(study_system_attrs(study)[cls.STATE_KEY])  # the state is in the study, as JSON


@pytest.mark.parametrize("cls", SAMPLERS)
def test_same_seed_same_trials(cls):
    def run(seed):
        study = optuna.create_study(direction="maximize", sampler=small(cls, seed=seed))
        study.optimize(objective, n_trials=12)
        return [t.params for t in study.trials]

    assert run(1) == run(1) and run(1) != run(2)


def test_rl_learns_the_best_point():
    study = optuna.create_study(direction="maximize", sampler=MnasRLSampler(seed=0))
    study.optimize(objective, n_trials=60)
    first, last = [t.value for t in study.trials[:10]], [t.value for t in study.trials[-10:]]
    # The policy concentrates on good points: uniform draws average 4 (of at most 8).
    assert sum(last) / 10 >= 6 and sum(last) > sum(first)


@pytest.mark.parametrize("cls", SAMPLERS)
def test_other_distributions_fall_back_to_random_with_one_warning(cls):
    def mixed(trial):
        return trial.suggest_float("x", 0, 1) + trial.suggest_int("n", 0, 3) + objective(trial)

    study = optuna.create_study(direction="maximize", sampler=cls(seed=0))
    with pytest.warns(UserWarning) as record:
        study.optimize(mixed, n_trials=6)
    ours = [w for w in record if cls.NAME in str(w.message)]
    assert len(ours) == 1 and "RandomSampler" in str(ours[0].message)
    assert all(0 <= t.params["x"] <= 1 for t in study.trials)


def test_rl_learns_from_pruned_trials_at_the_value_they_reached():
    sampler = MnasRLSampler(seed=0, batch=4, epochs=1)

    def pruned_half(trial):
        value = objective(trial)
        trial.report(value / 2, step=1)
        if trial.number % 2:
            raise optuna.TrialPruned()
        return value

    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(pruned_half, n_trials=8)
    state = study_system_attrs(study)[MnasRLSampler.STATE_KEY]
    assert state["seen"] == list(range(8)) and state["updates"] == 2  # pruned trials 1, 3, 5, 7 included
    pruned = study.trials[1]
    assert sampler.reward(study, pruned) == pruned.intermediate_values[1]


def test_rl_ppo_uses_the_log_probability_recorded_at_sampling():
    study = optuna.create_study(direction="maximize", sampler=MnasRLSampler(seed=0, batch=50))
    study.optimize(objective, n_trials=3)
    sampler = study.sampler
    space = sampler.infer_relative_search_space(study, study.trials[-1])
    for trial in study.trials[1:]:  # trial 0 came before the space was known (uniform)
        sample = trial.system_attrs["nas:mnas_rl:sample"]
        assert sample["tokens"] == sampler.tokens(trial, space)
    numbers = [p[0] for p in sampler.pending(study, space, set(), None)]
    logps = {p[0]: p[3] for p in sampler.pending(study, space, set(), None)}
    assert numbers == [0, 1, 2] and logps[0] is None and all(logps[n] < 0 for n in (1, 2))


def test_rl_a_resumed_study_continues_the_policy(tmp_path):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log")))
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize",
                                sampler=MnasRLSampler(seed=0, batch=5))
    study.optimize(objective, n_trials=10)
    before = study_system_attrs(study)[MnasRLSampler.STATE_KEY]
    again = optuna.load_study(study_name="s", storage=storage, sampler=MnasRLSampler(seed=0, batch=5))
    again.optimize(objective, n_trials=10)
    after = study_system_attrs(again)[MnasRLSampler.STATE_KEY]
    assert before["updates"] == 2 and after["updates"] == 4 and after["seen"] == list(range(20))


def test_evolution_children_are_one_mutation_from_their_parent():
    study = optuna.create_study(direction="maximize", sampler=RegularizedEvolutionSampler(seed=0, population=4,
                                                                                          sample=2))
    study.optimize(objective, n_trials=20)
    children = [t for t in study.trials if "nas:evolution:parent" in t.system_attrs]
    assert len(children) >= 15
    for child in children:
        parent = study.trials[child.system_attrs["nas:evolution:parent"]]
        assert parent.number < child.number
        assert sum(parent.params[k] != child.params[k] for k in SCORES) == 1


def test_evolution_parents_are_among_the_latest_members_and_a_long_study_reads_only_those(monkeypatch):
    study = optuna.create_study(direction="maximize", sampler=RegularizedEvolutionSampler(seed=0, population=4,
                                                                                          sample=2))
    study.optimize(objective, n_trials=200)
    for child in study.trials[4:]:  # every trial completes, so the population is the 4 trials before the child
        assert child.number - 4 <= child.system_attrs["nas:evolution:parent"] < child.number
    read = []
    tokens = RegularizedEvolutionSampler.tokens
    monkeypatch.setattr(RegularizedEvolutionSampler, "tokens", staticmethod(lambda t, space: read.append(t.number)
                                                                             or tokens(t, space)))
    study.optimize(objective, n_trials=1)
    assert sorted(read) == [196, 197, 198, 199]  # not the 200 trials: sampling costs the same at any length


# -- bad input leaves the study undamaged --------------------------------------------------------------
def snapshot(study):
    return ([(t.number, t.state, t.params, t.values) for t in study.get_trials()],
            json.dumps(study_system_attrs(study), sort_keys=True))


@pytest.mark.parametrize("cls", SAMPLERS)
def test_a_changed_space_is_a_clear_error(cls):
    space = {name: CategoricalDistribution(list(choices)) for name, choices in SCORES.items()}
    study = optuna.create_study(direction="maximize", sampler=small(cls, seed=0, search_space=space))
    study.optimize(objective, n_trials=6)
    before = snapshot(study)
    other = dict(space, b=CategoricalDistribution(["x", "y"]))
    sampler = small(cls, seed=0, search_space=other)
    with pytest.raises(NasError, match=r"search space changed .*changed: b.*nothing was changed"):
        sampler.check(study)
    study.sampler = sampler
    with pytest.raises(NasError, match="search space changed"):
        study.ask().suggest_categorical("a", [0, 1, 2, 3])
    trials, attrs = snapshot(study)
    assert trials[:-1] == before[0] and trials[-1][1] == TrialState.RUNNING and attrs == before[1]


@pytest.mark.parametrize("cls", SAMPLERS)
def test_a_space_changed_by_other_trials_is_a_clear_error(cls):
    study = optuna.create_study(direction="maximize", sampler=small(cls, seed=0))
    study.optimize(objective, n_trials=6)
    # (Optuna's storages refuse another choice list for a name; the space changes by its names.)
    study.sampler = optuna.samplers.RandomSampler(seed=0)  # trials without b and c
    study.optimize(lambda t: t.suggest_categorical("a", [0, 1, 2, 3]), n_trials=2)
    before = snapshot(study)
    study.sampler = small(cls, seed=0)
    with pytest.raises(NasError, match="search space changed"):
        study.optimize(objective, n_trials=1)
    trials, attrs = snapshot(study)
    assert trials[:-1] == before[0] and trials[-1][1] == TrialState.FAIL and attrs == before[1]


CORRUPTIONS = {
    "not a dict": "garbage",
    "other format": {"format": "nas-mnas-rl/999"},
    "bad space": lambda s: {**s, "space": [["a"]]},
    "bad weights": lambda s: {**s, "policy": {k: {"shape": [1], "data": "!!"} for k in s["policy"]}},
    "bad seen": lambda s: {**s, "seen": "all"},
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_corrupt_stored_policy_is_a_clear_error(corruption):
    study = optuna.create_study(direction="maximize", sampler=small(MnasRLSampler, seed=0))
    study.optimize(objective, n_trials=6)
    change = CORRUPTIONS[corruption]
    state = study_system_attrs(study)[MnasRLSampler.STATE_KEY]
    set_study_system_attr(study, MnasRLSampler.STATE_KEY, change(state) if callable(change) else change)
    before = snapshot(study)
    with pytest.raises(NasError, match="stored MnasRLSampler state .* is corrupt"):
        study.sampler.check(study)
    with pytest.raises(NasError, match="is corrupt"):
        study.optimize(objective, n_trials=1)
    trials, attrs = snapshot(study)
    assert trials[:-1] == before[0] and attrs == before[1]


@pytest.mark.parametrize("stored", ["garbage", {"format": "nas-evolution/1", "space": "abc"}, {"space": []}])
def test_a_corrupt_stored_population_is_a_clear_error(stored):
    study = optuna.create_study(direction="maximize", sampler=small(RegularizedEvolutionSampler, seed=0))
    study.optimize(objective, n_trials=4)
    set_study_system_attr(study, RegularizedEvolutionSampler.STATE_KEY, stored)
    before = snapshot(study)
    with pytest.raises(NasError, match="stored RegularizedEvolutionSampler state .* is corrupt"):
        study.optimize(objective, n_trials=1)
    trials, attrs = snapshot(study)
    assert trials[:-1] == before[0] and attrs == before[1]


def test_options_are_checked():
    with pytest.raises(ValueError, match="batch"):
        MnasRLSampler(batch=0)
    with pytest.raises(ValueError, match="sample <= population"):
        RegularizedEvolutionSampler(population=2, sample=3)
    with pytest.raises(ValueError, match="only categoricals"):
        MnasRLSampler(search_space={"x": optuna.distributions.FloatDistribution(0, 1)})


# -- several processes on one storage ------------------------------------------------------------------
WORKER = textwrap.dedent("""
    import sys
    import optuna
    from nas.samplers import {cls}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url, name = sys.argv[1], sys.argv[2]
    if url.startswith("journal:"):
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url[8:]))
    else:
        storage = url
    scores = {scores!r}
    def objective(trial):
        return sum(scores[n][trial.suggest_categorical(n, list(scores[n]))] for n in scores)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                sampler={cls}(seed=0))
    study.optimize(objective, n_trials=25)
""")


def two_processes(cls, url, name):
    script = WORKER.format(cls=cls.__name__, scores=SCORES)
    optuna.create_study(study_name=name, storage=storage_of(url), direction="maximize")  # no create race
    procs = [subprocess.Popen([sys.executable, "-c", script, url, name], cwd=ROOT, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stderr.read()
    return optuna.load_study(study_name=name, storage=storage_of(url))


def storage_of(url):
    if url.startswith("journal:"):
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url[8:]))
    return url


def check_shared(cls, study):
    trials = study.get_trials()
    assert len(trials) == 50 and all(t.state == TrialState.COMPLETE for t in trials)
    draws = [tuple(t.params[k] for k in SCORES) for t in trials[:8]]
    assert len(set(draws)) > 1  # the two workers did not draw the same networks
    state = study_system_attrs(study)[cls.STATE_KEY]
    if cls is MnasRLSampler:
        # Both workers' trials reached one policy, each trial once, in batches of 5. The last batch may
        # still wait: when the two workers' last trials finish together, each worker's after_trial sees
        # the other's trial still running (Optuna stores a trial's state after its after_trial).
        seen = state["seen"]
        assert seen == sorted(set(seen)) and len(seen) == 5 * state["updates"] and state["updates"] >= 9
        # the next sample on the study learns what waits: all 50 (batch 5 -> 10 updates)
        again = optuna.load_study(study_name=study.study_name, storage=study._storage, sampler=cls(seed=0))
        again.optimize(lambda t: sum(SCORES[n][t.suggest_categorical(n, list(SCORES[n]))] for n in SCORES),
                       n_trials=1)
        state = study_system_attrs(again)[cls.STATE_KEY]
        assert state["seen"] == list(range(50)) and state["updates"] == 10


@pytest.mark.slow
@pytest.mark.parametrize("cls", SAMPLERS)
def test_two_processes_on_a_journal_file(cls, tmp_path):
    check_shared(cls, two_processes(cls, f"journal:{tmp_path / 'journal.log'}", "two"))


@pytest.mark.slow
@needs_postgres
@pytest.mark.parametrize("cls", SAMPLERS)
def test_two_processes_on_postgresql(cls):
    check_shared(cls, two_processes(cls, postgres_url(), f"samplers-{uuid.uuid4().hex[:8]}"))


def test_rl_update_is_dropped_when_another_worker_updated_first():
    """The compare-and-swap: A computes an update from version 0 while B writes version 1; A must
    not overwrite B, and starts again from B's policy (nothing left to learn: B saw every trial)."""
    study = optuna.create_study(direction="maximize", sampler=MnasRLSampler(seed=0, batch=100))
    study.optimize(objective, n_trials=4)
    space = study.sampler.infer_relative_search_space(study, study.trials[-1])
    a, b = MnasRLSampler(seed=0, batch=2), MnasRLSampler(seed=1, batch=2)
    learn, writes = a._learn, []

    def learn_while_b_writes(state, space_, pending):
        if not writes:
            writes.append("b")
            b.sync(study, space_)  # the other worker wins the race
        return learn(state, space_, pending)

    a._learn = learn_while_b_writes
    a.write_state = lambda study_, state: writes.append("a")
    won = study_system_attrs(study)
    result = a.sync(study, space)
    stored = study_system_attrs(study)[MnasRLSampler.STATE_KEY]
    assert writes == ["b"] and MnasRLSampler.STATE_KEY not in won
    assert stored["version"] == 1 and stored["seen"] == [0, 1, 2, 3] and stored["updates"] == 2
    assert result == stored
