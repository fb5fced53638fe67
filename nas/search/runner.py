"""Running a search: open (or resume) the study, loop ask -> evaluate -> tell, write the results.

Every strategy is the study's Optuna sampler (``rl`` and ``evolution`` are :mod:`nas.samplers`),
so the loop is the same for all: ``study.ask``, suggest the space's decisions, evaluate, ``study.tell``;
the samplers learn from the told trials themselves.

The study lives in an Optuna storage (default: SQLite in the output folder; see
:mod:`nas.search.storage`). Running the same command again resumes: finished trials are kept. The
budget ``n_trials`` counts finished (complete or pruned) trials of the whole study, not of one
invocation or one worker.

Interrupted trials: with one process on SQLite, a trial left RUNNING by a killed process is marked
FAIL at the next start and its params are enqueued, so the next trial re-runs it. With several
workers (``--workers``, or processes on several machines sharing PostgreSQL or a journal file),
heartbeats do it instead: the trial of a killed worker is failed after the grace period and
re-queued, and a surviving worker runs it (:mod:`nas.search.workers`).

No duplicated work: after ``ask`` a worker writes the spec hash on its trial, then looks at the
study. A finished trial with the same hash is reused (``cached=True``). A RUNNING trial with the
same hash and a lower number owns the architecture: this worker waits for it and reuses its
result (if the owner dies, the wait ends with its FAIL and the claim is re-checked). Because each
worker writes its hash before it reads, of two racing workers at least the later one sees the
other, and the lowest trial number wins, so an architecture is never trained twice.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from nas.errors import NasError
from nas.io import write_text_atomic
from nas.experiment import Experiment, with_resolved_table
from nas.latency.catalog import measures_here
from nas.search import STRATEGIES
from nas.samplers.optuna_private import set_trial_user_attr_by_number
from nas.search.base import Proposal, Strategy, TrialRecord, finished_records
from nas.search.evaluate import Evaluation
from nas.search.results import best_record, hypervolume, pareto_front, plot_pareto, trials_frame
from nas.search.storage import (Heartbeat, fail_stale_trials, heartbeat_thread, heartbeats_on, kind, make_storage,
                                redact, retried_from, without_heartbeat)
from nas.spec import ArchSpec, SearchSpace, count_madds, count_params

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
CLAIMS = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # who ran a trial (user attr ``worker``)
POLL_SECONDS = 0.2  # how often a worker waiting for another worker's trial looks at the study
IDENTITY_ATTR = "nas_experiment"
BASELINE_ATTR = "baseline"


@dataclass
class SearchResult:
    study: optuna.Study
    out: Path
    best: TrialRecord | None
    pareto: list[TrialRecord]
    n_trials: int
    baseline: dict[str, Any] | None = None
    hypervolume: float | None = None
    measured: dict[str, float] = field(default_factory=dict)  # end-to-end re-measurement (ms)
    files: dict[str, str] = field(default_factory=dict)
    storage: str | None = None

    def to_json(self) -> dict[str, Any]:
        best = None
        if self.best is not None:
            best = {k: v for k, v in asdict(self.best).items() if k not in ("assignment", "attrs")}
            best["latency_remeasured_ms"] = self.measured.get("best")
        baseline = None if self.baseline is None else {**self.baseline,
                                                        "latency_remeasured_ms": self.measured.get("baseline")}
        return {"best": best, "baseline": baseline, "n_trials": self.n_trials,
                "pareto": [{"number": r.number, "val_acc": r.val_acc, "latency_ms": r.latency_ms, "reward": r.reward,
                            "hash": r.hash} for r in self.pareto],
                "hypervolume": self.hypervolume, "study": self.study.study_name, "storage": self.storage, "out": str(self.out),
                "files": self.files}


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / 'study.db').resolve()}"


def identity(experiment: Experiment, space: SearchSpace, strategy: str) -> dict[str, Any]:
    """What a study must agree on to be resumed (or joined) by this experiment."""
    return {"space_hash": space.hash, "reward": asdict(experiment.reward),
            "objectives": experiment.search.objectives, "strategy": strategy,
            "proxy": asdict(experiment.proxy), "data": asdict(experiment.data),
            "latency_source": experiment.latency.source}


def _pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def open_study(experiment: Experiment, space: SearchSpace, strategy: str, storage: str, study_name: str,
               target_ms: float, heartbeat: Heartbeat | None = None) -> optuna.Study:
    """Create the study, or load it and check it belongs to this experiment (nothing is written to
    a study of another experiment)."""
    cls = STRATEGIES[strategy]
    target = target_ms
    constraints = None
    if experiment.search.constraint:
        constraints = lambda t: [t.user_attrs.get("latency_ms", float("inf")) - target]  # noqa: E731
    directions = ["maximize"] if experiment.search.objectives == "reward" else ["maximize", "minimize"]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    backend = make_storage(storage, heartbeat)
    try:
        sampler = cls.sampler(experiment.search.seed, experiment.search.options, constraints, space)
        study = optuna.create_study(storage=backend, study_name=study_name, directions=directions, sampler=sampler,
                                    pruner=_pruner(experiment.proxy.pruner), load_if_exists=True)
    except (ValueError, ImportError, optuna.exceptions.StorageInternalError) as exc:
        raise NasError(f"cannot open study {study_name!r} in {redact(storage)}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # SQLAlchemy errors: bad URL, unreachable server
        raise NasError(f"cannot open storage {redact(storage)}: {str(exc).splitlines()[0][:200]}") from None
    want = json.loads(json.dumps(identity(experiment, space, strategy)))
    have = study.user_attrs.get(IDENTITY_ATTR)
    if have is None:
        study.set_user_attr(IDENTITY_ATTR, want)
    elif have != want:
        diff = sorted(k for k in want if want[k] != have.get(k))
        raise NasError(f"study {study_name!r} in {redact(storage)} was made by another experiment (different "
                       f"{', '.join(diff)}); use another out folder or --storage")
    if [d.name for d in study.directions] != [d.upper() for d in directions]:
        raise NasError(f"study {study_name!r} has directions {study.directions}, expected {directions}")
    if hasattr(sampler, "check"):
        sampler.check(study)  # a corrupt or foreign stored policy/population: NasError before any trial
    return study


def recover_interrupted(study: optuna.Study) -> list[int]:
    """Mark trials left RUNNING (a killed process) FAIL and enqueue their params for a re-run. With
    heartbeats only the trials that never beat (other workers' trials are alive or fail when stale)."""
    numbers = []
    running = without_heartbeat(study) if heartbeats_on(study) else study.get_trials(deepcopy=False,
                                                                                        states=(TrialState.RUNNING,))
    for trial in running:
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number})
        numbers.append(trial.number)
    return numbers


def spec_attrs(spec: ArchSpec) -> dict[str, Any]:
    return {"spec": spec.to_string(), "hash": spec.hash, "params": count_params(spec), "madds": count_madds(spec)}


def evaluation_attrs(ev: Evaluation, reward_fn) -> dict[str, Any]:
    return {"val_acc": ev.val_acc, "latency_ms": ev.latency_ms, "latency_predicted_ms": ev.latency_predicted_ms,
            "latency_measured_ms": ev.latency_measured_ms, "reward": reward_fn(ev.val_acc, ev.latency_ms),
            "seconds": ev.seconds, "steps": ev.steps}


class SearchLoop:
    """One search session over an open study (kept small so a worker process can reuse it)."""

    def __init__(self, experiment: Experiment, study: optuna.Study, strategy: Strategy, evaluator, progress=True):
        self.experiment, self.study, self.strategy, self.evaluator = experiment, study, strategy, evaluator
        self.reward_fn = experiment.reward_fn()
        self.prune = experiment.proxy.pruner != "none" and len(study.directions) == 1
        self.progress = progress

    def n_finished(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=FINISHED))

    def run(self, n_trials: int, timeout_min: float | None = None) -> int:
        """Run trials until the study has ``n_trials`` finished ones (or the timeout); returns how
        many trials this loop finished. Other workers may be running trials of the same study."""
        from tqdm import tqdm

        deadline = None if timeout_min is None else time.monotonic() + 60 * timeout_min
        ran = 0
        bar = tqdm(total=n_trials, initial=min(self.n_finished(), n_trials), unit="trial",
                   desc=f"search {self.strategy.name}", disable=None if self.progress else True, dynamic_ncols=True)
        try:
            while deadline is None or time.monotonic() < deadline:
                fail_stale_trials(self.study)  # killed workers' trials -> FAIL + re-queued
                counts = self._counts()
                if counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] >= n_trials:
                    break
                if not self._room(counts, n_trials):
                    if not heartbeats_on(self.study):
                        break  # the running trials of other processes will finish the budget
                    time.sleep(POLL_SECONDS)  # a running trial may still fail and be re-queued
                    continue
                record = self.step(n_trials)
                if record is None:
                    continue
                ran += 1
                if not bar.disable:
                    bar.update(min(self.n_finished(), n_trials) - bar.n)
                    best = best_record(finished_records(self.study))
                    if best is not None:
                        bar.set_postfix(best_reward=f"{best.reward:.4f}", last=f"{record.state.lower()}")
        finally:
            bar.close()
        return ran

    def _counts(self) -> dict[TrialState, int]:
        counts = {state: 0 for state in TrialState}
        for t in self.study.get_trials(deepcopy=False):
            counts[t.state] += 1
        return counts

    @staticmethod
    def _room(counts: dict[TrialState, int], n_trials: int) -> bool:
        """May a new trial start? Yes if a re-run waits, or finished + running trials leave room."""
        busy = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] + counts[TrialState.RUNNING]
        return counts[TrialState.WAITING] > 0 or busy < n_trials

    def step(self, n_trials: int | None = None) -> TrialRecord | None:
        """Ask, evaluate (or reuse the cache), tell the study and the strategy. With ``n_trials``, a
        trial asked when other workers already fill the budget is dropped (FAIL, ``surplus``; None)."""
        proposal = self.strategy.ask()
        trial, spec = proposal.trial, proposal.spec
        with heartbeat_thread(self.study, trial):
            try:
                trial.set_user_attr("claim", None)  # a re-run copies the killed trial's attrs
                for key, value in spec_attrs(spec).items():
                    trial.set_user_attr(key, value)
                trial.set_user_attr("worker", WORKER)
                retry_of = retried_from(trial)
                if retry_of is not None:
                    trial.set_user_attr("retry_of", retry_of)
                if n_trials is not None and self._surplus(trial.number, n_trials):
                    trial.set_user_attr("surplus", True)
                    self.study.tell(trial, state=TrialState.FAIL)
                    return None
                cached = self._claim(spec.hash, trial.number)
                if cached is not None:
                    self._tell_cached(proposal, cached)
                else:
                    self._evaluate(proposal)
            except BaseException:
                # Ctrl-C or a bug: the trial is failed and re-queued, the study stays consistent.
                self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                self.study.enqueue_trial(proposal.assignment, user_attrs={"retry_of": trial.number})
                raise
        return self._record(trial.number)

    def _surplus(self, number: int, n_trials: int) -> bool:
        """Did workers racing for the last slots ask more trials than the budget? The lowest numbers keep them."""
        before = [t for t in self.study.get_trials(deepcopy=False, states=CLAIMS) if t.number < number]
        return len(before) >= n_trials

    def _claim(self, spec_hash: str, number: int) -> TrialRecord | None:
        """Own the architecture (None: train it) or get the result of the trial that owns it.

        A finished trial with the hash is reused. A lower-numbered RUNNING trial with the hash owns
        it: wait (``claim=wait``). Otherwise wait until the higher-numbered RUNNING ones have
        decided: if one owns it (it did not see this trial), wait for it; else own it
        (``claim=own``). An owner never waits, so waits end; two owners would each have missed the
        other, which cannot happen because each writes its hash before it reads."""
        trial_attrs = None
        while True:
            same = [t for t in self.study.get_trials(deepcopy=False, states=CLAIMS)
                    if t.number != number and t.user_attrs.get("hash") == spec_hash]
            done = sorted((t for t in same if t.state != TrialState.RUNNING),
                          key=lambda t: (t.state != TrialState.COMPLETE, t.number))
            if done:
                return TrialRecord.from_frozen(done[0])
            higher = [t for t in same if t.number > number]
            owners = [t for t in higher if t.user_attrs.get("claim") == "own"]
            if any(t.number < number for t in same) or owners:
                decision = "wait"
            elif any(t.user_attrs.get("claim") not in ("own", "wait") for t in higher):
                decision = None  # a later trial is still deciding (without waiting for this one)
            else:
                self._set_claim(number, "own")
                return None
            if decision is not None and decision != trial_attrs:
                self._set_claim(number, decision)
                trial_attrs = decision
            time.sleep(POLL_SECONDS)
            fail_stale_trials(self.study)

    def _set_claim(self, number: int, value: str | None) -> None:
        set_trial_user_attr_by_number(self.study, number, "claim", value)

    def _record(self, number: int) -> TrialRecord:
        for t in self.study.get_trials(deepcopy=False):
            if t.number == number:
                return TrialRecord.from_frozen(t)
        raise RuntimeError(f"trial {number} vanished from the study")

    def _values(self, attrs: dict[str, Any]) -> list[float]:
        if len(self.study.directions) == 1:
            return [attrs["reward"]]
        return [attrs["val_acc"], attrs["latency_ms"]]

    def _tell_cached(self, proposal: Proposal, cached: TrialRecord) -> TrialState:
        trial = proposal.trial
        trial.set_user_attr("cached", True)
        trial.set_user_attr("cached_from", cached.number)
        keys = ("val_acc", "latency_ms", "latency_predicted_ms", "latency_measured_ms", "reward", "steps")
        for key in keys:
            trial.set_user_attr(key, cached.attrs.get(key))
        trial.set_user_attr("seconds", 0.0)
        if cached.state == "PRUNED":
            self.study.tell(trial, state=TrialState.PRUNED)
            return TrialState.PRUNED
        self.study.tell(trial, self._values(cached.attrs))
        return TrialState.COMPLETE

    def _evaluate(self, proposal: Proposal) -> TrialState:
        trial = proposal.trial

        def report(step: int, epoch: float, val_acc: float) -> bool:
            if not self.prune:
                return False
            trial.report(val_acc, step)
            return trial.should_prune()

        ev = self.evaluator.evaluate(proposal.spec, report)
        attrs = evaluation_attrs(ev, self.reward_fn)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if ev.pruned:
            self.study.tell(trial, state=TrialState.PRUNED)
            return TrialState.PRUNED
        self.study.tell(trial, self._values(attrs))
        return TrialState.COMPLETE


def evaluate_baseline(study: optuna.Study, space: SearchSpace, evaluator, reward_fn) -> dict[str, Any]:
    """The space's baseline network through the same proxy, stored once in the study."""
    saved = study.user_attrs.get(BASELINE_ATTR)
    if saved is not None and saved.get("hash") == space.baseline.hash:
        return saved
    spec = space.baseline
    attrs = {**spec_attrs(spec), **evaluation_attrs(evaluator.evaluate(spec), reward_fn)}
    study.set_user_attr(BASELINE_ATTR, attrs)
    return attrs


def baseline_latency(evaluator, space: SearchSpace) -> float:
    """The latency of the space's baseline (the target when ``target_ms: baseline``)."""
    if hasattr(evaluator, "latency"):
        return float(evaluator.latency(space.baseline)[0])
    return float(evaluator.evaluate(space.baseline).latency_ms)


def _stored_target(study: optuna.Study, target: float) -> float:
    """The target a study was started with (a resumed study keeps it, even if re-measured)."""
    if "target_ms" not in study.user_attrs:
        study.set_user_attr("target_ms", float(target))
    return float(study.user_attrs["target_ms"])


@dataclass
class Session:
    """A validated, opened search: what ``run_search`` and each worker process share."""

    experiment: Experiment  # target_ms resolved to the study's
    space: SearchSpace
    study: optuna.Study
    strategy: str
    options: dict
    n_trials: int
    timeout_min: float | None
    storage: str
    out: Path
    evaluator: Any
    heartbeat: Heartbeat | None

    def loop(self, progress: bool) -> "SearchLoop":
        chosen = STRATEGIES[self.strategy](self.space, self.study, self.experiment.search.seed, self.options)
        return SearchLoop(self.experiment, self.study, chosen, self.evaluator, progress)


def uses_heartbeats(storage: str, workers: int) -> bool:
    """Heartbeats whenever several processes may share the study: a server or journal storage
    (other machines or processes may join), or SQLite with ``--workers``. One process on SQLite
    recovers its interrupted trials at start instead (no grace period to wait)."""
    return kind(storage) not in ("sqlite", "memory") or (kind(storage) == "sqlite" and workers > 1)


def open_session(experiment: Experiment, *, strategy: str | None = None, n_trials: int | None = None,
                 timeout_min: float | None = None, storage: str | None = None, study_name: str | None = None,
                 evaluator=None, heartbeat: Heartbeat | None = None, workers: int = 1) -> Session:
    """Check the arguments, open (or create) the study and resolve the latency target."""
    strategy = strategy or experiment.search.strategy
    if strategy not in STRATEGIES:
        raise NasError(f"unknown strategy {strategy!r} (choose from: {', '.join(STRATEGIES)})")
    STRATEGIES[strategy].check_options(experiment.search.options if strategy == experiment.search.strategy else {})
    options = experiment.search.options if strategy == experiment.search.strategy else {}
    n_trials = n_trials if n_trials is not None else experiment.search.n_trials
    if n_trials < 1:
        raise NasError(f"the number of trials must be >= 1, got {n_trials}")
    if workers < 1:
        raise NasError(f"the number of workers must be >= 1, got {workers}")
    timeout_min = timeout_min if timeout_min is not None else experiment.search.timeout_min
    if timeout_min is not None and not timeout_min > 0:
        raise NasError(f"the timeout must be > 0 minutes, got {timeout_min}")
    space = experiment.load_space()
    out = Path(experiment.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NasError(f"cannot create output folder {out} ({exc.strerror})") from None
    storage = storage or experiment.search.storage or default_storage(out)
    study_name = study_name or experiment.search.study or f"{experiment.name}-{strategy}"
    if uses_heartbeats(storage, workers):
        heartbeat = heartbeat or Heartbeat()
    else:
        heartbeat = None
    if evaluator is None or isinstance(evaluator, str):
        from nas.search.workers import make_evaluator

        evaluator = make_evaluator(evaluator or "proxy", experiment)
    target = experiment.reward.target_ms
    if target == "baseline":
        target = baseline_latency(evaluator, space)
    study = open_study(experiment, space, strategy, storage, study_name, target, heartbeat)
    target = _stored_target(study, target)
    experiment = experiment.replace(reward={"target_ms": target})
    return Session(experiment, space, study, strategy, options, n_trials, timeout_min, storage, out, evaluator,
                   heartbeat)


def run_search(
    experiment: Experiment,
    *,
    strategy: str | None = None,
    n_trials: int | None = None,
    timeout_min: float | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    evaluator=None,
    progress: bool = True,
    measure_best: bool | None = None,
    workers: int = 1,
    heartbeat: Heartbeat | None = None,
) -> SearchResult:
    """Run (or resume, or join) the experiment's search and write its results to ``experiment.out``.

    ``evaluator``: an object with ``evaluate(spec, report)``, or a name (``proxy``, the default;
    ``synthetic[:SECONDS]``). ``workers > 1`` starts that many worker processes (the evaluator must
    then be a name) and waits for them; ``heartbeat`` sets their heartbeat interval and grace period.
    """
    if workers > 1 and evaluator is not None and not isinstance(evaluator, str):
        raise NasError("several workers need an evaluator name (proxy or synthetic[:SECONDS]), not an object")
    experiment = with_resolved_table(experiment, progress)  # the target device's table (built if it is this machine's)
    session = open_session(experiment, strategy=strategy, n_trials=n_trials, timeout_min=timeout_min,
                           storage=storage, study_name=study_name, evaluator=evaluator, heartbeat=heartbeat,
                           workers=workers)
    study = session.study
    recover_interrupted(study)
    reward_fn = session.experiment.reward_fn()
    baseline = None
    if experiment.search.baseline:
        baseline = evaluate_baseline(study, session.space, session.evaluator, reward_fn)
    if workers > 1:
        from nas.search.workers import run_workers

        run_workers(experiment, session, workers, evaluator or "proxy", progress)
    else:
        session.loop(progress).run(session.n_trials, session.timeout_min)
    return finish(session.experiment, study, session.out, baseline,
                  experiment.latency.measure_best if measure_best is None else measure_best, redact(session.storage))


def remeasure(specs: dict[str, ArchSpec], table: str | None, threads: int) -> dict[str, float]:
    """End-to-end latency (interleaved; the table's protocol when there is one) of a few networks."""
    from nas.latency import MeasureConfig, measure_specs

    names = list(specs)
    measured = measure_specs([specs[n] for n in names], MeasureConfig.comparable_with(table, threads))
    return {n: m.median_ms for n, m in zip(names, measured)}


def finish(experiment: Experiment, study: optuna.Study, out: Path, baseline: dict | None,
           measure_best: bool, storage: str | None = None) -> SearchResult:
    """Write trials.csv, best_spec.json, pareto.png and search.json; re-measure the best network."""
    records = finished_records(study, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    best, front = best_record(records), pareto_front(records)
    target = experiment.reward_fn().target_ms
    hv = hypervolume([(r.val_acc, r.latency_ms) for r in front], 0.0, 2 * target) if front else None
    measured: dict[str, float] = {}
    if measure_best and best is not None and measures_here(experiment.latency.table):
        specs = {"best": ArchSpec.from_string(best.spec)}
        if baseline is not None:
            specs["baseline"] = ArchSpec.from_string(baseline["spec"])
        measured = remeasure(specs, experiment.latency.table, experiment.latency.threads)
    files = {"trials": str(out / "trials.csv"), "pareto_plot": str(out / "pareto.png"), "summary": str(out / "search.json")}
    write_text_atomic(files["trials"], trials_frame(records).to_csv(index=False))
    if best is not None:
        files["best_spec"] = str(out / "best_spec.json")
        write_text_atomic(files["best_spec"], ArchSpec.from_string(best.spec).to_json() + "\n")
    plot_pareto(records, Path(files["pareto_plot"]), target, baseline, title=f"{study.study_name}: accuracy vs latency")
    n_done = sum(r.state in ("COMPLETE", "PRUNED") for r in records)
    result = SearchResult(study, out, best, front, n_done, baseline, hv, measured, files, storage)
    write_text_atomic(files["summary"], json.dumps(result.to_json(), indent=2, default=str) + "\n")
    return result


def summary_table(result: SearchResult):
    """Best network vs the space's baseline: accuracy, latencies, reward, size."""
    import pandas as pd

    rows = []
    if result.best is not None:
        b = result.best
        rows.append({"network": f"best (trial {b.number})", "val_acc": b.val_acc,
                     "latency_predicted_ms": b.latency_predicted_ms, "latency_measured_ms": result.measured.get("best"),
                     "reward": b.reward, "params": b.attrs.get("params"), "madds": b.attrs.get("madds")})
    if result.baseline is not None:
        a = result.baseline
        rows.append({"network": "baseline", "val_acc": a["val_acc"], "latency_predicted_ms": a["latency_predicted_ms"],
                     "latency_measured_ms": result.measured.get("baseline"), "reward": a["reward"],
                     "params": a["params"], "madds": a["madds"]})
    return pd.DataFrame(rows).set_index("network") if rows else pd.DataFrame()
