"""The search loop: ask -> evaluate (or reuse a claimed result) -> tell, the same for every strategy.

Every strategy is the study's Optuna sampler (``rl`` and ``evolution`` are :mod:`nas.samplers`),
so the loop is the same for all: ``study.ask``, suggest the space's decisions, evaluate,
``study.tell``; the samplers learn from the told trials themselves. The budget ``n_trials`` counts
finished (complete or pruned) trials of the whole study, not of one invocation or one worker.
Duplicated architectures are resolved by :mod:`nas.search.claims`. The space's baseline goes
through the same evaluator once per study (:func:`evaluate_baseline`).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Any

import optuna
from optuna.trial import TrialState

from nas.experiment import Experiment
from nas.search.base import Proposal, Strategy, TrialRecord, finished_records
from nas.search.claims import POLL_SECONDS, claim, is_surplus
from nas.search.evaluate import Evaluation
from nas.search.results import best_record
from nas.search.storage import fail_stale_trials, heartbeat_thread, heartbeats_on, retried_from
from nas.spec import ArchSpec, SearchSpace, count_madds, count_params

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # who ran a trial (user attr ``worker``)
BASELINE_ATTR = "baseline"


def spec_attrs(spec: ArchSpec) -> dict[str, Any]:
    return {"spec": spec.to_string(), "hash": spec.hash, "params": count_params(spec), "madds": count_madds(spec)}


def evaluation_attrs(ev: Evaluation, reward_fn) -> dict[str, Any]:
    return {"val_acc": ev.val_acc, "latency_ms": ev.latency_ms, "latency_predicted_ms": ev.latency_predicted_ms,
            "latency_measured_ms": ev.latency_measured_ms, "reward": reward_fn(ev.val_acc, ev.latency_ms),
            "seconds": ev.seconds, "steps": ev.steps, "val_top1": ev.val_top1, "val_loss": ev.val_loss}


def trial_line(record: TrialRecord, finished: int, n_trials: int, best: TrialRecord | None, elapsed: float) -> str:
    """One finished trial for a log: ``trial 12 pruned  val_acc 0.7123  0.842 ms  reward 0.6912  |
    13/60 finished, best reward 0.7450, 4m12s elapsed``."""
    from nas.train.trainer import format_duration

    parts = [f"trial {record.number} {record.state.lower()}{' (cached)' if record.cached else ''}"]
    if record.val_acc is not None:
        parts.append(f"val_acc {record.val_acc:.4f}")
    if record.latency_ms is not None:
        parts.append(f"{record.latency_ms:.3f} ms")
    if record.reward is not None:
        parts.append(f"reward {record.reward:.4f}")
    best_text = "none yet" if best is None or best.reward is None else f"{best.reward:.4f}"
    return (f"{'  '.join(parts)}  | {finished}/{n_trials} finished, best reward {best_text}, "
            f"{format_duration(elapsed)} elapsed")


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

        started = time.monotonic()
        deadline = None if timeout_min is None else started + 60 * timeout_min
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
                if self.progress:
                    self._report(bar, record, n_trials, started)
        finally:
            bar.close()
        return ran

    def _report(self, bar, record: TrialRecord, n_trials: int, started: float) -> None:
        """The bar on a terminal; elsewhere one line per finished trial on stderr."""
        finished = min(self.n_finished(), n_trials)
        best = best_record(finished_records(self.study))
        if bar.disable:
            print(trial_line(record, finished, n_trials, best, time.monotonic() - started), file=sys.stderr,
                  flush=True)
            return
        bar.update(finished - bar.n)
        if best is not None:
            bar.set_postfix(best_reward=f"{best.reward:.4f}", last=f"{record.state.lower()}")

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
                if n_trials is not None and is_surplus(self.study, trial.number, n_trials):
                    trial.set_user_attr("surplus", True)
                    self.study.tell(trial, state=TrialState.FAIL)
                    return None
                cached = claim(self.study, spec.hash, trial.number)
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
        keys = ("val_acc", "latency_ms", "latency_predicted_ms", "latency_measured_ms", "reward", "steps", "val_top1",
                "val_loss")
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
