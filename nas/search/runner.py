"""Running a search: open (or resume) the study, loop ask -> evaluate -> tell, write the results.

The study lives in an Optuna storage (default: SQLite in the output folder). Running the same
command again resumes: finished trials are kept; a trial left RUNNING by a killed process is marked
FAIL and its params are enqueued, so the next trial re-runs it. The budget ``n_trials`` counts
finished (complete or pruned) trials of the whole study, not of one invocation.

Cache: before training, the study is searched for a finished trial with the same spec hash; its
results are copied (``cached=True``), so an architecture is never trained twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from nas.errors import NasError
from nas.experiment import Experiment
from nas.search import STRATEGIES
from nas.search.base import Proposal, Strategy, TrialRecord, finished_records
from nas.search.evaluate import Evaluation, ProxyEvaluator
from nas.search.results import best_record, hypervolume, pareto_front, plot_pareto, trials_frame
from nas.spec import ArchSpec, SearchSpace, count_madds, count_params

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
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


def make_storage(url: str):
    """An Optuna storage from a URL: any SQLAlchemy URL (``sqlite:///...``, ``postgresql://...``),
    ``journal:PATH`` for a JournalStorage file (one host, several processes, no server), or
    ``:memory:`` (nothing kept; for tests and benchmarks)."""
    if url == ":memory:":
        return optuna.storages.InMemoryStorage()
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(url[len("journal:"):]))
    return url


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
               target_ms: float) -> optuna.Study:
    """Create the study, or load it and check it belongs to this experiment."""
    cls = STRATEGIES[strategy]
    target = target_ms
    constraints = None
    if experiment.search.constraint:
        constraints = lambda t: [t.user_attrs.get("latency_ms", float("inf")) - target]  # noqa: E731
    directions = ["maximize"] if experiment.search.objectives == "reward" else ["maximize", "minimize"]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(storage=make_storage(storage), study_name=study_name, directions=directions,
                                    sampler=cls.sampler(experiment.search.seed, experiment.search.options, constraints),
                                    pruner=_pruner(experiment.proxy.pruner), load_if_exists=True)
    except (ValueError, ImportError, optuna.exceptions.StorageInternalError) as exc:
        raise NasError(f"cannot open study {study_name!r} in {storage}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # SQLAlchemy errors: bad URL, unreachable server
        raise NasError(f"cannot open storage {storage}: {str(exc).splitlines()[0][:200]}") from None
    want = json.loads(json.dumps(identity(experiment, space, strategy)))
    have = study.user_attrs.get(IDENTITY_ATTR)
    if have is None:
        study.set_user_attr(IDENTITY_ATTR, want)
    elif have != want:
        diff = sorted(k for k in want if want[k] != have.get(k))
        raise NasError(f"study {study_name!r} in {storage} was made by another experiment (different "
                       f"{', '.join(diff)}); use another out folder or --storage")
    if [d.name for d in study.directions] != [d.upper() for d in directions]:
        raise NasError(f"study {study_name!r} has directions {study.directions}, expected {directions}")
    return study


def recover_interrupted(study: optuna.Study) -> list[int]:
    """Mark trials left RUNNING (a killed process) FAIL and enqueue their params for a re-run."""
    numbers = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number})
        numbers.append(trial.number)
    return numbers


def cached_result(study: optuna.Study, spec_hash: str) -> TrialRecord | None:
    """A finished trial of the study with this spec hash (complete first, else pruned)."""
    found = [r for r in finished_records(study, states=FINISHED) if r.hash == spec_hash]
    found.sort(key=lambda r: (r.state != "COMPLETE", r.number))
    return found[0] if found else None


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

    def run(self, n_trials: int, timeout_min: float | None = None) -> None:
        from tqdm import tqdm

        deadline = None if timeout_min is None else time.monotonic() + 60 * timeout_min
        done = self.n_finished()
        bar = tqdm(total=n_trials, initial=min(done, n_trials), unit="trial", desc=f"search {self.strategy.name}",
                   disable=None if self.progress else True, dynamic_ncols=True)
        try:
            while done < n_trials and (deadline is None or time.monotonic() < deadline):
                record = self.step()
                done = self.n_finished()
                bar.update(min(done, n_trials) - bar.n)
                best = best_record(finished_records(self.study))
                if best is not None:
                    bar.set_postfix(best_reward=f"{best.reward:.4f}", last=f"{record.state.lower()}")
        finally:
            bar.close()

    def step(self) -> TrialRecord:
        """Ask, evaluate (or reuse the cache), tell the study and the strategy."""
        proposal = self.strategy.ask()
        trial, spec = proposal.trial, proposal.spec
        try:
            for key, value in spec_attrs(spec).items():
                trial.set_user_attr(key, value)
            cached = cached_result(self.study, spec.hash)
            if cached is not None:
                state = self._tell_cached(proposal, cached)
            else:
                state = self._evaluate(proposal)
        except BaseException:
            # Ctrl-C or a bug: the trial is failed and re-queued, the study stays consistent.
            self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            self.study.enqueue_trial(proposal.assignment, user_attrs={"retry_of": trial.number})
            raise
        record = self._record(trial.number)
        self.strategy.tell(proposal, record)
        return record

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
) -> SearchResult:
    """Run (or resume) the experiment's search and write its results to ``experiment.out``."""
    strategy = strategy or experiment.search.strategy
    if strategy not in STRATEGIES:
        raise NasError(f"unknown strategy {strategy!r} (choose from: {', '.join(STRATEGIES)})")
    STRATEGIES[strategy].check_options(experiment.search.options if strategy == experiment.search.strategy else {})
    options = experiment.search.options if strategy == experiment.search.strategy else {}
    n_trials = n_trials if n_trials is not None else experiment.search.n_trials
    if n_trials < 1:
        raise NasError(f"the number of trials must be >= 1, got {n_trials}")
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
    if evaluator is None:
        evaluator = ProxyEvaluator(experiment, progress=False)
    target = experiment.reward.target_ms
    if target == "baseline":
        target = baseline_latency(evaluator, space)
    study = open_study(experiment, space, strategy, storage, study_name, target)
    target = _stored_target(study, target)
    experiment = experiment.replace(reward={"target_ms": target})
    recover_interrupted(study)
    reward_fn = experiment.reward_fn()
    baseline = evaluate_baseline(study, space, evaluator, reward_fn) if experiment.search.baseline else None
    chosen = STRATEGIES[strategy](space, study, experiment.search.seed, options)
    SearchLoop(experiment, study, chosen, evaluator, progress).run(n_trials, timeout_min)
    return finish(experiment, study, out, baseline,
                  experiment.latency.measure_best if measure_best is None else measure_best, storage)


def remeasure(specs: dict[str, ArchSpec], threads: int) -> dict[str, float]:
    """End-to-end latency (onnxruntime, interleaved) of a few networks."""
    from nas.latency import MeasureConfig, measure_specs

    names = list(specs)
    measured = measure_specs([specs[n] for n in names], MeasureConfig(threads=threads))
    return {n: m.median_ms for n, m in zip(names, measured)}


def finish(experiment: Experiment, study: optuna.Study, out: Path, baseline: dict | None,
           measure_best: bool, storage: str | None = None) -> SearchResult:
    """Write trials.csv, best_spec.json, pareto.png and search.json; re-measure the best network."""
    records = finished_records(study, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    best, front = best_record(records), pareto_front(records)
    target = experiment.reward_fn().target_ms
    hv = hypervolume([(r.val_acc, r.latency_ms) for r in front], 0.0, 2 * target) if front else None
    measured: dict[str, float] = {}
    if measure_best and best is not None:
        specs = {"best": ArchSpec.from_string(best.spec)}
        if baseline is not None:
            specs["baseline"] = ArchSpec.from_string(baseline["spec"])
        measured = remeasure(specs, experiment.latency.threads)
    files = {"trials": str(out / "trials.csv"), "pareto_plot": str(out / "pareto.png"), "summary": str(out / "search.json")}
    trials_frame(records).to_csv(files["trials"], index=False)
    if best is not None:
        files["best_spec"] = str(out / "best_spec.json")
        Path(files["best_spec"]).write_text(ArchSpec.from_string(best.spec).to_json() + "\n")
    plot_pareto(records, Path(files["pareto_plot"]), target, baseline, title=f"{study.study_name}: accuracy vs latency")
    n_done = sum(r.state in ("COMPLETE", "PRUNED") for r in records)
    result = SearchResult(study, out, best, front, n_done, baseline, hv, measured, files, storage)
    Path(files["summary"]).write_text(json.dumps(result.to_json(), indent=2, default=str) + "\n")
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
