"""Results of a search: trials.csv, the best spec, the Pareto front and plot, hypervolume."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

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


def pareto_front(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """Complete trials no other trial beats on both accuracy (higher) and latency (lower), by latency;
    one trial per distinct (accuracy, latency) point."""
    front: list[TrialRecord] = []
    best_acc = float("-inf")
    for r in sorted(complete(records), key=lambda r: (r.latency_ms, -r.val_acc, r.number)):
        if r.val_acc > best_acc:
            front.append(r)
            best_acc = r.val_acc
    return front


def hypervolume(points: Sequence[tuple[float, float]], ref_acc: float, ref_latency: float) -> float:
    """Area dominated by (accuracy, latency) points (maximise accuracy, minimise latency) and bounded
    by the reference point (ref_acc, ref_latency); points beyond the reference count for nothing.

    Two objectives only, so the area is a sum of rectangles along the sorted front."""
    pts = sorted((lat, acc) for acc, lat in points if acc > ref_acc and lat < ref_latency)
    area, best_acc = 0.0, ref_acc
    for i, (lat, acc) in enumerate(pts):
        if acc <= best_acc:
            continue
        # This point adds a rectangle from its latency up to the reference, above the best so far.
        area += (ref_latency - lat) * (acc - best_acc)
        best_acc = acc
    return area


def plot_pareto(records: Sequence[TrialRecord], path: Path, target_ms: float | None = None,
                baseline: dict[str, Any] | None = None, title: str = "search") -> Path:
    """Accuracy vs latency of every complete trial, the front, the target and the baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = complete(records)
    front = pareto_front(records)
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    pruned = sum(r.state == "PRUNED" for r in records)
    ax.scatter([r.latency_ms for r in done], [r.val_acc for r in done], s=18, alpha=0.5, color="tab:blue",
               label=f"complete trials ({len(done)})" + (f"; {pruned} pruned not shown" if pruned else ""))
    if front:
        ax.step([r.latency_ms for r in front], [r.val_acc for r in front], where="post", color="tab:orange",
                marker="o", ms=5, label=f"Pareto front ({len(front)})")
    best = best_record(records)
    if best is not None:
        ax.scatter([best.latency_ms], [best.val_acc], s=140, marker="*", color="tab:green", zorder=5,
                   label=f"best reward (trial {best.number})")
    if baseline is not None:
        ax.scatter([baseline["latency_ms"]], [baseline["val_acc"]], s=90, marker="D", color="tab:red", zorder=5,
                   label="space baseline (same proxy)")
    if target_ms is not None:
        ax.axvline(target_ms, color="grey", ls="--", lw=1, label=f"target T = {target_ms:.3f} ms")
    ax.set_xlabel("latency (ms, reward's source)")
    ax.set_ylabel("proxy validation accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never hides a point
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
