"""Results of a search: trials.csv, the best spec, the Pareto front and plot, hypervolume, and
:func:`finish`, which writes them (``trials.csv``, ``best_spec.json``, ``pareto.png``, ``search.json``).

The Pareto front is Optuna's ``Study.best_trials``, the plot Optuna's ``plot_pareto_front`` and the
hypervolume Optuna's (private in Optuna 5.0: :mod:`nas.samplers.optuna_private`), over an
in-memory study of the complete trials' (accuracy, latency)."""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import optuna
import pandas as pd

from optuna.trial import TrialState

from nas.experiment import Experiment
from nas.io import write_text_atomic
from nas.latency.catalog import measures_here
from nas.samplers.optuna_private import hypervolume_of_losses
from nas.search.base import TrialRecord, finished_records
from nas.spec import ArchSpec

COLUMNS = ["number", "state", "val_acc", "latency_ms", "latency_predicted_ms", "latency_measured_ms", "reward",
           "seconds", "cached", "val_top1", "val_loss", "hash", "spec"]


def trials_frame(records: Sequence[TrialRecord]) -> pd.DataFrame:
    """One row per trial (all states), in trial order."""
    rows = [{c: getattr(r, c) for c in COLUMNS} for r in sorted(records, key=lambda r: r.number)]
    return pd.DataFrame(rows, columns=COLUMNS)


def complete(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    return [r for r in records if r.state == "COMPLETE" and r.val_acc is not None and r.latency_ms is not None]


def best_record(records: Sequence[TrialRecord]) -> TrialRecord | None:
    """The complete trial with the highest reward (earliest on ties)."""
    done = [r for r in complete(records) if r.reward is not None]
    return max(done, key=lambda r: (r.reward, -r.number)) if done else None


def objectives_study(records: Sequence[TrialRecord]) -> tuple[optuna.Study, dict[int, TrialRecord]]:
    """An in-memory Optuna study of the complete trials' (accuracy up, latency down): what Optuna's
    Pareto front and Pareto plot read, whatever the search's own objectives (the reward, or both)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    try:
        study = optuna.create_study(directions=["maximize", "minimize"])
    finally:
        optuna.logging.set_verbosity(verbosity)
    done = sorted(complete(records), key=lambda r: r.number)
    study.add_trials([optuna.trial.create_trial(values=[r.val_acc, r.latency_ms], user_attrs={"nas_number": r.number})
                      for r in done])
    return study, {r.number: r for r in done}


def pareto_front(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """Complete trials no other trial beats on both accuracy (higher) and latency (lower), by latency;
    one trial (the earliest) per distinct (accuracy, latency) point. Optuna's ``best_trials``."""
    study, by_number = objectives_study(records)
    front: dict[tuple[float, float], TrialRecord] = {}
    for trial in sorted(study.best_trials, key=lambda t: t.user_attrs["nas_number"]):
        record = by_number[trial.user_attrs["nas_number"]]
        front.setdefault((record.val_acc, record.latency_ms), record)
    return sorted(front.values(), key=lambda r: (r.latency_ms, -r.val_acc, r.number))


def hypervolume(points: Sequence[tuple[float, float]], ref_acc: float, ref_latency: float) -> float:
    """Area dominated by (accuracy, latency) points (maximise accuracy, minimise latency) and bounded
    by the reference point (ref_acc, ref_latency); points beyond the reference count for nothing.
    Optuna's hypervolume (on losses: -accuracy, latency)."""
    inside = [(-acc, lat) for acc, lat in points if acc > ref_acc and lat < ref_latency]
    if not inside:
        return 0.0
    return hypervolume_of_losses(np.array(inside, dtype=float), np.array([-ref_acc, ref_latency], dtype=float))


ACCURACY_LABELS = {"proxy": "proxy validation accuracy", "supernet": "supernet val accuracy (shared weights)",
                   "supernet likelihood": "supernet val likelihood, exp(-loss)",
                   "synthetic": "synthetic accuracy (no training)"}


def accuracy_label(evaluator: str, supernet_metric: str = "accuracy") -> str:
    """What a search's accuracies are, by its evaluator (``synthetic:SECONDS`` is synthetic) and, for a
    supernet, the score it gives (``supernet.metric``)."""
    name = evaluator.partition(":")[0]
    return ACCURACY_LABELS[f"{name} likelihood" if name == "supernet" and supernet_metric == "likelihood" else name]


def distinct_candidates(records: Sequence[TrialRecord]) -> int:
    """How many different networks the trials evaluated (a repeated proposal is answered from the cache)."""
    return len({r.hash for r in records if r.hash is not None})


def plot_pareto(records: Sequence[TrialRecord], path: Path, target_ms: float | None = None,
                baseline: dict[str, Any] | None = None, title: str = "search",
                accuracy: str = ACCURACY_LABELS["proxy"]) -> Path:
    """Optuna's Pareto plot of every complete trial (``accuracy`` vs latency), plus the best-reward
    trial, the latency target and the baseline (scored by the same evaluator); the legend counts the
    pruned trials it leaves out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    study, _ = objectives_study(records)
    pruned = sum(r.state == "PRUNED" for r in records)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna.visualization.matplotlib.plot_pareto_front(
            study, target_names=[accuracy, "latency (ms, reward's source)"],
            targets=lambda t: (t.values[1], t.values[0]), include_dominated_trials=True)
    fig = ax.figure
    n_front = len(study.best_trials)
    for collection in ax.collections:  # Optuna's labels, with counts
        label = collection.get_label()
        if label == "Best Trial":
            collection.set_label(f"Pareto front ({n_front})")
        elif label == "Trial":
            collection.set_label(f"dominated trials ({len(study.trials) - n_front})")
    fig.set_size_inches(9, 4.5)
    fig.set_dpi(110)
    ax.set_xlabel("latency (ms, reward's source)")
    ax.set_ylabel(accuracy)
    best = best_record(records)
    if best is not None:
        ax.scatter([best.latency_ms], [best.val_acc], s=140, marker="*", color="tab:green", zorder=5,
                   label=f"best reward (trial {best.number})")
    if baseline is not None:
        ax.scatter([baseline["latency_ms"]], [baseline["val_acc"]], s=90, marker="D", color="black", zorder=5,
                   label="space baseline (same evaluator)")
    if target_ms is not None:
        ax.axvline(target_ms, color="grey", ls="--", lw=1, label=f"target T = {target_ms:.3f} ms")
    if pruned:  # a legend entry without a marker: a long title would be clipped at the figure's edge
        ax.plot([], [], " ", label=f"{pruned} pruned trials (not shown)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never hides a point
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


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
    distinct: int | None = None  # different networks among the trials

    def to_json(self) -> dict[str, Any]:
        best = None
        if self.best is not None:
            best = {k: v for k, v in asdict(self.best).items() if k not in ("assignment", "attrs")}
            best["latency_remeasured_ms"] = self.measured.get("best")
        baseline = None if self.baseline is None else {**self.baseline,
                                                        "latency_remeasured_ms": self.measured.get("baseline")}
        return {"best": best, "baseline": baseline, "n_trials": self.n_trials, "distinct": self.distinct,
                "pareto": [{"number": r.number, "val_acc": r.val_acc, "latency_ms": r.latency_ms, "reward": r.reward,
                            "hash": r.hash} for r in self.pareto],
                "hypervolume": self.hypervolume, "study": self.study.study_name, "storage": self.storage, "out": str(self.out),
                "files": self.files}


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
    plot_pareto(records, Path(files["pareto_plot"]), target, baseline, title=f"{study.study_name}: accuracy vs latency",
                accuracy=accuracy_label(experiment.search.evaluator, experiment.supernet.metric))
    done = [r for r in records if r.state in ("COMPLETE", "PRUNED")]
    result = SearchResult(study, out, best, front, len(done), baseline, hv, measured, files, storage,
                          distinct_candidates(done))
    write_text_atomic(files["summary"], json.dumps(result.to_json(), indent=2, default=str) + "\n")
    return result


def summary_table(result: SearchResult):
    """Best network vs the space's baseline: accuracy, latencies, reward, size."""
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
