"""Proof of a table: predicted vs measured latency on held-out networks of its space.

Networks are sampled from the table's space with the given seed, skipping the calibration
networks; all are measured end to end with the table's protocol, interleaved, and compared with the
predictor and with a MAdds-linear baseline fitted on the same calibration networks.

Drift: a virtual CPU shared with other tenants does not keep one speed (measured on this project's
machine: the same 20 networks averaged 0.86, 0.59 and 1.05 ms in three interleaved rounds about a
minute apart). A table built with the paired protocol (``reference`` in its meta.json) is measured
against its reference network, which removes most of it. What is left (and all of it for an
unpaired table) is measured by timing the calibration networks again in the same interleaved passes
as the held-out ones: ``drift`` = median(latency at calibration / latency now) puts the measurements
on the table's own time base before they are compared (figures without it are reported too,
``unadjusted_*``).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from nas.errors import NasError
from nas.io import write_text_atomic
from nas.latency.build import table_space
from nas.latency.calibration import madds_prediction
from nas.latency.device import warn_if_busy
from nas.latency.measure import MeasureConfig, measure_specs
from nas.latency.device import require_this_device
from nas.latency.predict import LatencyPredictor, load_predictor
from nas.spec.arch import ArchSpec
from nas.spec.count import count_madds


@dataclass(frozen=True)
class Figures:
    within_5: float    # share of networks with |predicted/measured - 1| <= 5 %
    within_10: float
    mape: float        # mean |predicted/measured - 1| (a fraction: 0.02 = 2 %)
    spearman: float    # rank correlation of predicted and measured


@dataclass(frozen=True)
class ValidationResult:
    table: Figures
    madds: Figures
    raw_sum: Figures   # uncalibrated sum of entries, for reference
    samples: int
    seed: int
    rows: pd.DataFrame
    drift: float = 1.0            # latency at calibration / latency now (calibration networks' median)
    unadjusted: Figures | None = None  # the table against measurements not put on its time base

    def summary(self) -> dict:
        out = {**asdict(self.table)}
        out.update({f"madds_{k}": v for k, v in asdict(self.madds).items()})
        out.update({f"raw_sum_{k}": v for k, v in asdict(self.raw_sum).items()})
        if self.unadjusted is not None:
            out.update({f"unadjusted_{k}": v for k, v in asdict(self.unadjusted).items()})
        out.update(drift=self.drift, samples=self.samples, seed=self.seed)
        return out


def figures(predicted: np.ndarray, measured: np.ndarray) -> Figures:
    err = np.abs(predicted / measured - 1)
    rho = pd.Series(predicted).corr(pd.Series(measured), method="spearman")
    return Figures(within_5=float(np.mean(err <= 0.05)), within_10=float(np.mean(err <= 0.10)),
                   mape=float(np.mean(err)), spearman=float(rho))


def held_out_specs(space, count: int, seed: int, exclude: set[str]) -> list:
    rng, specs = random.Random(seed), {}
    for _ in range(100 * count):
        if len(specs) == count:
            break
        spec = space.sample(rng)
        if spec.hash not in exclude:
            specs.setdefault(spec.hash, spec)
    if len(specs) < count:
        raise NasError(f"the space has fewer than {count} distinct networks outside the calibration set")
    return list(specs.values())


def validate_table(table_path: str | Path, samples: int = 50, seed: int = 0, out_dir: str | Path | None = None,
                   progress: bool = True) -> ValidationResult:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 3:
        raise NasError(f"--samples must be an integer >= 3, got {samples!r}")
    predictor = load_predictor(table_path)
    table = predictor.table
    require_this_device(table.device, f"latency table {table.path}", "validate it here (validation measures "
                        "networks end to end)", command=f"nas lut validate {table.path}")
    calibration = table.calibration
    if not calibration:
        raise NasError(f"{table.path} has no calibration yet; finish `nas lut build` first")
    space = table_space(table)
    specs = held_out_specs(space, samples, seed, set(calibration["networks"]))
    predicted = np.array([predictor.predict(s) for s in specs])
    raw = np.array([LatencyPredictor(table, calibrated=False).predict(s) for s in specs])
    madds = np.array([count_madds(s) for s in specs])
    madds_pred = np.array([madds_prediction(calibration, s) for s in specs])
    config = replace(MeasureConfig.for_table(table), seed=seed).for_networks()
    anchors = [ArchSpec.from_string(s) for s in calibration["specs"]]
    if progress:
        print(f"measuring {len(specs)} held-out networks end to end, interleaved with the {len(anchors)} "
              f"calibration networks ...", flush=True)
    warn_if_busy(config.threads)
    measured = measure_specs(specs + anchors, config)
    drift = float(np.median([then / now.median_ms for then, now in zip(calibration["measured_ms"],
                                                                          measured[len(specs):])]))
    measured = measured[:len(specs)]
    unadjusted_ms = np.array([m.median_ms for m in measured])
    measured_ms = unadjusted_ms * drift
    rows = pd.DataFrame({
        "hash": [s.hash for s in specs], "spec": [s.to_string() for s in specs], "madds": madds,
        "measured_ms": measured_ms, "measured_unadjusted_ms": unadjusted_ms,
        "measured_iqr_ms": [m.iqr_ms for m in measured],
        "predicted_ms": predicted, "error": predicted / measured_ms - 1,
        "raw_sum_ms": raw, "madds_predicted_ms": madds_pred, "madds_error": madds_pred / measured_ms - 1,
    })
    result = ValidationResult(table=figures(predicted, measured_ms), madds=figures(madds_pred, measured_ms),
                              raw_sum=figures(raw, measured_ms), samples=len(specs), seed=seed, rows=rows,
                              drift=drift, unadjusted=figures(predicted, unadjusted_ms))
    if out_dir is not None:
        write_outputs(result, Path(out_dir), title=f"{space.name}: {table.runtime}, {table.threads} thread(s)",
                      method=f"{config.statistic} of interleaved passes" + (", paired" if config.paired else ""))
    return result


def write_outputs(result: ValidationResult, out_dir: Path, title: str,
                  method: str = "median of interleaved passes") -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "validation.csv", result.rows.to_csv(index=False))
    write_text_atomic(out_dir / "validation.json", json.dumps(result.summary(), indent=2) + "\n")
    plot(result, out_dir / "validation.png", title, method)


def plot(result: ValidationResult, path: Path, title: str, method: str = "median of interleaved passes") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.rows
    fig, ax = plt.subplots(figsize=(6, 5.5))
    lo = min(rows.measured_ms.min(), rows.predicted_ms.min(), rows.madds_predicted_ms.min()) * 0.9
    hi = max(rows.measured_ms.max(), rows.predicted_ms.max(), rows.madds_predicted_ms.max()) * 1.1
    line = np.array([lo, hi])
    ax.plot(line, line, color="black", lw=1, label="predicted = measured")
    ax.fill_between(line, line * 0.9, line * 1.1, color="grey", alpha=0.15, label="±10 %")
    ax.fill_between(line, line * 0.95, line * 1.05, color="grey", alpha=0.25, label="±5 %")
    t, m = result.table, result.madds
    ax.scatter(rows.measured_ms, rows.madds_predicted_ms, s=14, marker="x", color="tab:orange",
               label=f"MAdds-linear: {m.within_10:.0%} in ±10 %, ρ {m.spearman:.3f}")
    ax.scatter(rows.measured_ms, rows.predicted_ms, s=16, color="tab:blue",
               label=f"lookup table: {t.within_5:.0%} in ±5 %, {t.within_10:.0%} in ±10 %, ρ {t.spearman:.3f}")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"measured latency (ms, {method}; x{result.drift:.3f} for drift)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(f"{title}\n{result.samples} held-out networks (seed {result.seed})", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
