"""Results of a search: trials.csv, the best spec, the Pareto front and plot, hypervolume.

The Pareto front is Optuna's ``Study.best_trials``, the plot Optuna's ``plot_pareto_front`` and the
hypervolume Optuna's (private in Optuna 5.0: :mod:`nas.samplers.optuna_private`), over an
in-memory study of the complete trials' (accuracy, latency)."""

from __future__ import annotations

from pathlib import Path
import warnings
from typing import Any, Sequence

import numpy as np
import optuna
import pandas as pd

from nas.samplers.optuna_private import hypervolume_of_losses
from nas.search.base import TrialRecord

COLUMNS = ["number", "state", "val_acc", "latency_ms", "latency_predicted_ms", "latency_measured_ms", "reward",
           "seconds", "cached", "hash", "spec"]


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


def plot_pareto(records: Sequence[TrialRecord], path: Path, target_ms: float | None = None,
                baseline: dict[str, Any] | None = None, title: str = "search") -> Path:
    """Optuna's Pareto plot of every complete trial (accuracy vs latency), plus the best-reward
    trial, the latency target and the baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    study, _ = objectives_study(records)
    pruned = sum(r.state == "PRUNED" for r in records)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna.visualization.matplotlib.plot_pareto_front(
            study, target_names=["proxy validation accuracy", "latency (ms, reward's source)"],
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
    ax.set_ylabel("proxy validation accuracy")
    best = best_record(records)
    if best is not None:
        ax.scatter([best.latency_ms], [best.val_acc], s=140, marker="*", color="tab:green", zorder=5,
                   label=f"best reward (trial {best.number})")
    if baseline is not None:
        ax.scatter([baseline["latency_ms"]], [baseline["val_acc"]], s=90, marker="D", color="black", zorder=5,
                   label="space baseline (same proxy)")
    if target_ms is not None:
        ax.axvline(target_ms, color="grey", ls="--", lw=1, label=f"target T = {target_ms:.3f} ms")
    ax.set_title(title + (f" ({pruned} pruned trials not shown)" if pruned else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never hides a point
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
