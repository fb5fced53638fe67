"""``nas run``: one experiment file from search to a report.

Stages, each writing into its own folder under the experiment's output folder and marking itself
done with ``<stage>/done.json``; a rerun skips finished stages, and the stages that resume by
themselves (search, NetAdapt) continue where they stopped:

1. ``search``    the platform-aware search (the study lives in ``OUT/study.db``, shared with ``nas search``)
2. ``train``     the best network trained fully (``train`` section)
3. ``netadapt``  shrunk to the latency target (``netadapt`` section), with its long fine-tune
4. ``export``    ONNX / JSON / ... with a model card (``export`` section)
5. ``reference`` the space's baseline and its uniform width variants trained with the same recipe
6. ``report``    ``report.md``: the figures and one table of every network, latencies measured
                 end to end side by side in one interleaved run
"""

from __future__ import annotations

import json
import time
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from nas.errors import NasError
from nas.experiment import Experiment
from nas.io import write_text_atomic
from nas.spec import ArchSpec, count_madds, count_params
from nas.spec.transform import scale_widths

if TYPE_CHECKING:
    from nas.data import DataSplits

STAGES = ("search", "train", "netadapt", "export", "reference", "report")


@dataclass
class RunResult:
    out: Path
    report: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    stages: dict[str, dict] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"out": str(self.out), "report": str(self.report), "networks": self.rows,
                "stages": {k: v for k, v in self.stages.items() if k != "report"}}


# --- stage bookkeeping -------------------------------------------------------------------------------

def _done_file(out: Path, stage: str) -> Path:
    return out / stage / "done.json"


def run_stage(out: Path, stage: str, work: Callable[[Path], dict], log: Callable[[str], None]) -> dict:
    """Run ``work(stage_dir)`` unless the stage finished before; record its result atomically."""
    done = _done_file(out, stage)
    if done.is_file():
        log(f"[{stage}] done before, skipped")
        return json.loads(done.read_text())
    log(f"[{stage}] running")
    folder = out / stage
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = work(folder)
    record_stage_seconds(out, stage, time.perf_counter() - start)
    write_text_atomic(done, json.dumps(result, indent=2, default=str) + "\n")
    return result


STAGE_SECONDS = "stage_seconds.json"


def record_stage_seconds(out: Path, stage: str, seconds: float) -> None:
    """Wall time of each stage's last (finishing) run, for the report."""
    times = read_stage_seconds(out)
    times[stage] = round(seconds, 1)
    write_text_atomic(out / STAGE_SECONDS, json.dumps(times, indent=2) + "\n")


def read_stage_seconds(out: Path) -> dict[str, float]:
    path = out / STAGE_SECONDS
    return json.loads(path.read_text()) if path.is_file() else {}


# --- the stages ------------------------------------------------------------------------------------

def _data_kwargs(exp: Experiment) -> dict:
    d = exp.data
    return {"data": d.name, "data_dir": d.data_dir, "val_fraction": d.val_fraction, "data_seed": d.seed}


def stage_search(exp: Experiment, progress: bool) -> Callable[[Path], dict]:
    def work(folder: Path) -> dict:
        from nas.search import run_search

        result = run_search(exp, progress=progress)
        if result.best is None:
            raise NasError("the search finished no trial: nothing to train (raise search.n_trials or timeout_min)")
        write_text_atomic(folder / "best_spec.json", ArchSpec.from_string(result.best.spec).to_json() + "\n")
        return {"best_spec": result.best.spec, "search": result.to_json()}
    return work


def train_spec(exp: Experiment, spec: ArchSpec, folder: Path, progress: bool,
               splits: DataSplits | None = None) -> dict:
    """Full training with the experiment's recipe (on ``splits`` when given, else the experiment's data);
    writes checkpoint, spec and metrics to ``folder``."""
    from nas.train import train_network

    data = _data_kwargs(exp) if splits is None else {"data": splits, "data_name": exp.data.name}
    report = train_network(spec, config=exp.train_config, out=folder, progress=progress, **data)
    return {"spec": spec.to_string(), "checkpoint": str(folder / "checkpoint.pt"),
            "val_acc": report.result.val_acc, "test_acc": report.result.test_acc,
            "seconds": report.result.seconds}


def stage_train(exp: Experiment, best: ArchSpec, progress: bool) -> Callable[[Path], dict]:
    return lambda folder: train_spec(exp, best, folder, progress)


def stage_netadapt(exp: Experiment, checkpoint: str, progress: bool) -> Callable[[Path], dict]:
    def work(folder: Path) -> dict:
        from nas.netadapt import netadapt_checkpoint
        from nas.netadapt.loop import OVERLAY
        from nas.train import evaluate, load_model

        n = exp.netadapt
        result = netadapt_checkpoint(checkpoint, exp.latency.table, exp.netadapt_config, folder, data=exp.data.name,
                                     data_dir=exp.data.data_dir, subset=n.subset, progress=progress,
                                     overlay=folder.parent / OVERLAY,
                                     threads=exp.train.threads, val_fraction=exp.data.val_fraction,
                                     data_seed=exp.data.seed)
        summary = result.summary()
        summary["checkpoint"] = str(folder / "checkpoint.pt")
        summary["test_acc"] = result.final_test_acc
        if summary["test_acc"] is None:
            from nas.data import load_data

            splits = load_data(exp.data.name, exp.data.data_dir, exp.data.val_fraction, exp.data.seed)
            summary["test_acc"] = evaluate(load_model(summary["checkpoint"])[1], splits.test)
        return summary
    return work


def stage_export(exp: Experiment, checkpoint: str, progress: bool) -> Callable[[Path], dict]:
    def work(folder: Path) -> dict:
        from nas.export import export
        from nas.netadapt.loop import OVERLAY

        data = exp.data.name if "onnx-int8" in exp.export.formats else None
        result = export(checkpoint, folder, exp.export.formats, progress=progress, table=exp.latency.table,
                        table_overlay=str(folder.parent / OVERLAY),
                        data=data, data_dir=exp.data.data_dir, threads=exp.latency.threads)
        return result.summary()
    return work


def reference_specs(exp: Experiment) -> dict[str, ArchSpec]:
    """The space's baseline and its uniform width variants."""
    baseline = exp.load_space().baseline
    specs = {"baseline": baseline}
    for mult in exp.report.width_mults:
        specs[f"baseline x{mult:g}"] = scale_widths(baseline, mult)
    return specs


def stage_reference(exp: Experiment, progress: bool) -> Callable[[Path], dict]:
    def work(folder: Path) -> dict:
        results = {}
        for i, (name, spec) in enumerate(reference_specs(exp).items()):
            sub = folder / f"net{i}"
            done = sub / "metrics.json"
            if done.is_file():  # each network is its own resumable unit
                metrics = json.loads(done.read_text())
                results[name] = {"spec": spec.to_string(), "checkpoint": str(sub / "checkpoint.pt"),
                                 "val_acc": metrics.get("val_acc"), "test_acc": metrics.get("test_acc")}
                continue
            results[name] = train_spec(exp, spec, sub, progress)
        return results
    return work


# --- the report --------------------------------------------------------------------------------------

def network_rows(exp: Experiment, stages: dict[str, dict], out: Path, progress: bool) -> list[dict[str, Any]]:
    """One row per network: test accuracy, size, predicted latency and latency measured end to end
    (all networks timed interleaved in one run, the table's protocol). Units the table lacks (the
    width variants' widths) are measured into the run's overlay; for another device's table nothing is
    measured here, and a row whose units that table lacks has no prediction."""
    from nas.latency import MeasureConfig, ensure_entries, load_predictor, load_table, measure_specs
    from nas.latency.catalog import measures_here
    from nas.netadapt.loop import OVERLAY

    nets: dict[str, tuple[ArchSpec, float | None]] = {
        "found (search)": (ArchSpec.from_string(stages["train"]["spec"]), stages["train"]["test_acc"]),
        "found + NetAdapt": (ArchSpec.from_string(stages["netadapt"]["spec"]), stages["netadapt"]["test_acc"]),
    }
    for name, ref in stages["reference"].items():
        nets[name] = (ArchSpec.from_string(ref["spec"]), ref["test_acc"])
    specs = [spec for spec, _ in nets.values()]
    table, overlay = exp.latency.table, out / OVERLAY
    here = measures_here(table)
    if here:
        ensure_entries(table, specs, progress=progress, overlay=overlay)  # width variants may use new widths
        measured = measure_specs(specs, MeasureConfig.for_table(load_table(table)))
    predictor = load_predictor(table, overlay=overlay)
    rows = []
    for i, (name, (spec, acc)) in enumerate(nets.items()):
        rows.append({"network": name, "test_acc": acc, "params": count_params(spec), "madds": count_madds(spec),
                     "predicted_ms": _predicted_or_none(predictor, spec),
                     "measured_ms": measured[i].median_ms if here else None,
                     "iqr_ms": measured[i].iqr_ms if here else None, "spec": spec.to_string(),
                     "device": predictor.device_id})
    return rows


def _predicted_or_none(predictor, spec: ArchSpec) -> float | None:
    from nas.latency import MissingEntryError

    try:
        return float(predictor.predict(spec))
    except MissingEntryError:  # another device's table without this network's widths
        return None


def markdown_table(rows: list[dict[str, Any]], columns: dict[str, Callable[[Any], str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row) for fmt in columns.values()) + " |")
    return "\n".join(lines)


REPORT_COLUMNS: dict[str, Callable[[dict], str]] = {
    "network": lambda r: r["network"],
    "test acc": lambda r: "-" if r["test_acc"] is None else f"{100 * r['test_acc']:.2f} %",
    "params": lambda r: f"{r['params']:,}",
    "MAdds": lambda r: f"{r['madds'] / 1e6:.2f} M",
    "predicted ms": lambda r: "-" if r["predicted_ms"] is None else f"{r['predicted_ms']:.3f}",
    "measured ms": lambda r: "-" if r["measured_ms"] is None else f"{r['measured_ms']:.3f}",
}


def _copy_figure(src: Path, out: Path, name: str) -> str | None:
    if not src.is_file():
        return None
    shutil.copyfile(src, out / name)
    return name


def target_ms(exp: Experiment, search: dict) -> float:
    """The latency target T the search used (``baseline``: the baseline's predicted latency)."""
    if not isinstance(exp.reward.target_ms, str):
        return float(exp.reward.target_ms)
    if search.get("baseline"):
        return float(search["baseline"]["latency_ms"])
    from nas.latency import load_predictor

    return load_predictor(exp.latency.table).predict(exp.load_space().baseline)


def write_report(exp: Experiment, out: Path, stages: dict[str, dict], rows: list[dict[str, Any]]) -> Path:
    figures = {
        "Search: accuracy vs latency (all trials, Pareto front, baseline)":
            _copy_figure(out / "pareto.png", out, "fig_pareto.png"),
        "Latency table: predicted vs measured on held-out networks":
            _copy_figure(Path(exp.latency.table) / "validation" / "validation.png", out, "fig_lut_validation.png"),
        "NetAdapt: accuracy-latency trajectory":
            _copy_figure(out / "netadapt" / "trajectory.png", out, "fig_netadapt.png"),
    }
    search = stages["search"]["search"]
    na = stages["netadapt"]
    target = target_ms(exp, search)
    named_target = f" (the {exp.reward.target_ms}'s predicted latency)" if isinstance(exp.reward.target_ms, str) else ""
    timed = [f"{name} {s / 60:.1f}" for name, s in read_stage_seconds(out).items()]
    device = rows[0]["device"] if rows else "?"
    here = all(r["measured_ms"] is not None for r in rows)
    where = " (this machine)" if here else " (another device: latencies predicted for it, nothing measured here)"
    lines = [
        f"# Report: {exp.name}", "",
        f"- experiment: `{exp.source}`; space: `{exp.space}`; data: {exp.data.name}",
        f"- latency table: `{exp.latency.table}`, device `{device}`{where}; reward: target {target:.3f} ms{named_target}, "
        f"preset {exp.reward.preset}",
        f"- search: {search['n_trials']} trials, strategy {exp.search.strategy}; study `{search.get('study')}`",
        f"- NetAdapt: start {na['start_ms']:.3f} ms (predicted) -> {na['final_predicted_ms']:.3f} ms predicted, "
        f"{na['final_measured_ms'] or float('nan'):.3f} ms measured, {na['iterations']} "
        f"iteration{'s' * (na['iterations'] != 1)}",
        f"- full training: {exp.train.epochs:g} epochs, {exp.train.optimizer}, batch {exp.train.batch_size} "
        f"(the same recipe for every network below)",
        *([f"- minutes per stage (the run that finished it): {', '.join(timed)}"] if timed else []), "",
        "## Networks", "",
        "Test accuracy on the test split; latency predicted from the table and measured end to end "
        "(onnxruntime, the table's threads, batch 1, all networks interleaved in one run)."
        + ("" if here else f" Measured: skipped, the table is of device `{device}`, not this machine; measure the "
                           f"exported model there (`nas latency measure model.onnx`)."), "",
        markdown_table(rows, REPORT_COLUMNS), "",
    ]
    for title, name in figures.items():
        if name:
            lines += [f"## {title}", "", f"![{title}]({name})", ""]
    lines += ["## Specs", ""] + [f"- {r['network']}: `{r['spec']}`" for r in rows] + [""]
    exported = stages.get("export", {}).get("files", [])
    if exported:
        lines += ["## Exported files", ""] + [f"- `{f}`" for f in exported] + [""]
    path = out / "report.md"
    write_text_atomic(path, "\n".join(lines))
    return path


# --- the whole pipeline ---------------------------------------------------------------------------

def resolve_table_stage(exp: Experiment, out: Path, progress: bool) -> Experiment:
    """``exp`` with the target device's table; when this machine's is built now (first use on this
    CPU), its minutes go into ``stage_seconds.json`` as the ``table`` stage."""
    from nas.experiment import with_resolved_table
    from nas.latency.catalog import find_table
    from nas.latency.table import read_meta

    lat = exp.latency
    found = find_table(lat.table, lat.device, threads=lat.threads)
    building = found is None or read_meta(found).get("calibration") is None  # built now, or its build resumed
    start = time.perf_counter()
    exp = with_resolved_table(exp, progress)
    if building:
        record_stage_seconds(out, "table", time.perf_counter() - start)
    return exp


def run_experiment(exp: Experiment, progress: bool = True, log: Callable[[str], None] = print) -> RunResult:
    """Run (or resume) every stage of ``exp`` and write ``report.md`` in its output folder."""
    if exp.latency.table is None:
        raise NasError("nas run needs latency.table in the experiment (NetAdapt and the report use it)")
    from nas.data import check_data
    from nas.search.runner import check_strategy

    check_strategy(exp)  # the strategy's own option rules, before the table is built
    check_data(exp.data.name, exp.data.data_dir)  # and the data: a missing dataset fails in a second
    out = Path(exp.out)
    out.mkdir(parents=True, exist_ok=True)
    exp = resolve_table_stage(exp, out, progress)
    stages: dict[str, dict] = {}
    stages["search"] = run_stage(out, "search", stage_search(exp, progress), log)
    best = ArchSpec.from_string(stages["search"]["best_spec"])
    stages["train"] = run_stage(out, "train", stage_train(exp, best, progress), log)
    stages["netadapt"] = run_stage(out, "netadapt", stage_netadapt(exp, stages["train"]["checkpoint"], progress), log)
    stages["export"] = run_stage(out, "export", stage_export(exp, stages["netadapt"]["checkpoint"], progress), log)
    stages["reference"] = run_stage(out, "reference", stage_reference(exp, progress), log)

    def report(folder: Path) -> dict:
        rows = network_rows(exp, stages, out, progress)
        write_text_atomic(folder / "networks.json", json.dumps(rows, indent=2) + "\n")
        import pandas as pd

        write_text_atomic(out / "networks.csv", pd.DataFrame(rows).to_csv(index=False))
        return {"rows": rows, "report": str(write_report(exp, out, stages, rows))}

    stages["report"] = run_stage(out, "report", report, log)
    return RunResult(out, Path(stages["report"]["report"]), stages["report"]["rows"], stages)
