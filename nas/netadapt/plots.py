"""The accuracy-latency trajectory of a NetAdapt run (PNG, matplotlib Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_trajectory(state: dict[str, Any], path: str | Path) -> Path:
    """Every proposal (grey), the chosen ones joined from the start network (blue), the target
    (dashed) and the network after the long fine-tune (star). x: predicted latency, y: val acc."""
    path = Path(path)
    rows = state.get("rows", [])
    start = state["start"]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    others = [r for r in rows if not r["chosen"]]
    if others:
        ax.scatter([r["predicted_ms"] for r in others], [r["val_acc"] for r in others], s=12, color="0.7",
                   label="proposals (short fine-tune)")
    chosen = [r for r in rows if r["chosen"]]
    xs = [start["predicted_ms"]] + [r["predicted_ms"] for r in chosen]
    ys = [start["val_acc"]] + [r["val_acc"] for r in chosen]
    ax.plot(xs, ys, "o-", color="tab:blue", markersize=4, label="chosen per iteration")
    ax.annotate("start", (xs[0], ys[0]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    final = state.get("final")
    if final:
        ax.scatter([final["predicted_ms"]], [final["val_acc"]], marker="*", s=160, color="tab:red", zorder=3,
                   label="after long fine-tune")
    ax.axvline(state["target_ms"], color="tab:green", linestyle="--", linewidth=1, label="target")
    ax.invert_xaxis()
    ax.set_xlabel("predicted latency (ms, from the lookup table)")
    ax.set_ylabel("validation accuracy")
    its, props = len(chosen), len(rows)
    ax.set_title(f"NetAdapt: {its} iteration{'s' * (its != 1)}, {props} proposal{'s' * (props != 1)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
