"""``export(...)``: from a spec or checkpoint to checked files and a model card, top-down.

1. check the request (formats, int8 needs data, the output folder is writable);
2. load the network (trained weights from a checkpoint; fresh, seeded weights from a spec);
3. write each format and check it against PyTorch (ONNX: ``onnx.checker`` + onnxruntime;
   TorchScript: reloaded); int8: quantise the fp32 ONNX file, compare accuracy on the test split;
4. measure latency with the project's protocol (:mod:`nas.latency`), predict it from a table if given;
5. write ``model_card.json`` and ``MODEL_CARD.md`` beside the files.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.config import EXPORT_FORMATS
from nas.errors import NasError
from nas.io import atomic_path, check_output_dir
from nas.export.card import CARD_FORMAT, machine_info, write_card
from nas.export.onnx import OPSET, TOLERANCE, check_onnx, export_onnx
from nas.export.quantize import QuantConfig, describe, onnx_predictions, quantize_int8
from nas.export.torchscript import check_torchscript, export_torchscript

FORMATS = EXPORT_FORMATS
FILE_NAMES = {"json": "spec.json", "onnx": "model.onnx", "torchscript": "model.torchscript.pt",
              "onnx-int8": "model.int8.onnx"}
LITTLE_GAIN = 1.15  # int8 speed-ups below this are reported as "gains little"


@dataclass(frozen=True)
class ExportConfig:
    """What to export and what to report. ``data`` is needed for ``onnx-int8`` (calibration and
    accuracy); ``table`` adds a predicted latency; ``measure=False`` skips timing."""

    formats: tuple[str, ...] = ("onnx",)
    table: str | None = None
    table_overlay: str | None = None  # a run's folder of units measured for it (default: OUT/latency_units)
    data: str | None = None
    data_dir: str | None = None
    measure: bool = True
    threads: int = 1
    calibration_images: int = 300
    eval_images: int = 2000
    check_batch: int = 4
    seed: int = 0

    def validate(self) -> None:
        if not self.formats:
            raise NasError(f"no export format given (choose from: {', '.join(FORMATS)})")
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise NasError(f"unknown export format {unknown[0]!r} (choose from: {', '.join(FORMATS)})")
        if "onnx-int8" in self.formats and not self.data:
            raise NasError("--format onnx-int8 needs --data (images to calibrate on and to measure accuracy with)")
        for name in ("threads", "calibration_images", "eval_images", "check_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise NasError(f"{name.replace('_', '-')} must be an integer >= 1, got {value!r}")


@dataclass
class ExportResult:
    """What was written and the figures reported (``summary()`` is the ``--json`` object)."""

    out: Path
    files: list[Path]
    checks: dict[str, float]  # format -> max abs diff vs PyTorch
    measured_ms: float | None
    predicted_ms: float | None
    card: dict = field(default_factory=dict)

    @property
    def max_abs_diff(self) -> float | None:
        return max(self.checks.values()) if self.checks else None

    def summary(self) -> dict[str, Any]:
        return {"files": [str(f) for f in self.files], "max_abs_diff": self.max_abs_diff,
                "measured_ms": self.measured_ms, "predicted_ms": self.predicted_ms,
                "device": (self.card.get("latency", {}).get("predicted") or {}).get("device"), "checks": self.checks,
                "int8": self.card.get("int8"), "out": str(self.out)}


def export(source: str | Path, out: str | Path, formats: tuple[str, ...] | list[str] = ("onnx",), *,
           progress: bool = True, **options: Any) -> ExportResult:
    """Export ``source`` (checkpoint, run folder, spec JSON, spec string or name) into ``out``.

    ``options`` are :class:`ExportConfig` fields (table, data, data_dir, measure, threads, ...).
    """
    formats = (formats,) if isinstance(formats, str) else formats
    config = ExportConfig(formats=tuple(dict.fromkeys(formats)), **options)
    config.validate()
    out = _output_folder(out)
    from nas.load import load_source

    loaded = load_source(source, seed=config.seed)
    spec = loaded.spec
    overlay = config.table_overlay or out / "latency_units"
    predicted = _predict(config.table, spec, overlay, progress) if config.table else None  # bad table: fails first
    predicted_ms = predicted["ms"] if predicted else None
    foreign = bool(predicted) and not predicted["this_machine"]
    splits = _load_data(config, spec) if config.data else None
    normalization = _normalization(loaded.metrics, splits)
    job = _Job(loaded, config, splits, normalization, _metadata(spec, splits, normalization))
    formats = [f for f in FORMATS if f in config.formats]  # int8 after onnx, whatever the order given
    bar = _progress(len(formats) + config.measure + 1, progress)
    with tempfile.TemporaryDirectory(prefix="nas-export-") as tmp:
        job.fp32 = out / FILE_NAMES["onnx"] if "onnx" in formats else Path(tmp) / FILE_NAMES["onnx"]
        for fmt in formats:
            bar.set_description(f"export {fmt}")
            _write_format(job, fmt, out / FILE_NAMES[fmt])
            bar.update()
        measured = None
        if config.measure and not foreign:  # a time taken here is no latency of the table's device
            bar.set_description("measure latency")
            job.ensure_fp32()
            timed = {"fp32": job.fp32} | ({"int8": job.files["onnx-int8"]} if "onnx-int8" in job.files else {})
            measured = measure_onnx_files(timed, config.threads, config.table)
            bar.update()
    if job.int8 is not None:
        job.int8 |= _int8_latency(measured)
    bar.set_description("model card")
    card = _card(job, measured, predicted)
    written = [job.files[f] for f in formats] + write_card(card, out)
    bar.update()
    bar.close()
    measured_ms = measured["models"]["fp32"]["median_ms"] if measured else None
    return ExportResult(out, written, job.checks, measured_ms, predicted_ms, card)


@dataclass
class _Job:
    """State shared by the export steps of one call."""

    loaded: Any
    config: ExportConfig
    splits: Any
    normalization: dict | None
    metadata: dict[str, str]
    fp32: Path | None = None  # the fp32 ONNX file (in the output folder or a temporary one)
    files: dict[str, Path] = field(default_factory=dict)
    checks: dict[str, float] = field(default_factory=dict)
    card_files: list[dict] = field(default_factory=list)
    int8: dict | None = None
    expected: Any = None  # PyTorch's logits on the check batch, computed once

    def __post_init__(self) -> None:
        from nas.export.onnx import random_batch, torch_outputs

        x = random_batch(self.loaded.spec, self.config.check_batch, self.config.seed)
        self.expected = torch_outputs(self.loaded.model, x)

    def check_args(self) -> tuple:
        return self.loaded.model, self.loaded.spec, self.config.check_batch, self.config.seed, TOLERANCE, self.expected

    def ensure_fp32(self) -> None:
        if not self.fp32.exists():
            export_onnx(self.loaded.model, self.loaded.spec, self.fp32, self.metadata)
            check_onnx(self.fp32, *self.check_args())


def _write_format(job: _Job, fmt: str, path: Path) -> None:
    """Write one format to ``path`` and check it; records the file and its check in ``job``.

    The file is written and checked under a temporary name in the output folder, then renamed onto
    ``path`` (:func:`nas.io.atomic_path`): never half a file, never through a symlink."""
    with atomic_path(path) as tmp:
        diff = _write_checked(job, fmt, tmp)
    job.files[fmt] = path
    job.card_files.append({"file": path.name, "format": fmt, "bytes": path.stat().st_size, "max_abs_diff": diff})


def _write_checked(job: _Job, fmt: str, path: Path) -> float | None:
    spec, model, config = job.loaded.spec, job.loaded.model, job.config
    diff = None
    if fmt == "json":
        path.write_text(spec.to_json() + "\n")
    elif fmt == "onnx":
        export_onnx(model, spec, path, job.metadata)
        diff = job.checks["onnx"] = check_onnx(path, *job.check_args())
    elif fmt == "torchscript":
        export_torchscript(model, spec, path, job.metadata)
        diff = job.checks["torchscript"] = check_torchscript(path, *job.check_args())
    elif fmt == "onnx-int8":
        job.ensure_fp32()
        quant = QuantConfig(images=config.calibration_images, seed=config.seed)
        quantize_int8(job.fp32, path, _with_normalization(job.splits.train, job.normalization), quant)
        job.int8 = _int8_accuracy(job.fp32, path, job.splits, job.normalization, config, quant)
    return diff


# --- 1. the request ------------------------------------------------------------------------------

def _output_folder(out: str | Path) -> Path:
    """The output folder, checked (and created) before any work: :func:`nas.io.check_output_dir`."""
    return check_output_dir(out, create=True)


def _progress(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, file=sys.stderr, leave=False)


# --- 2. the network and its data -----------------------------------------------------------------

def _load_data(config: ExportConfig, spec: Any) -> Any:
    from nas.data import load_data
    from nas.train import check_spec_matches

    splits = load_data(config.data, config.data_dir)
    check_spec_matches(spec, splits.train, config.data)
    return splits


def _normalization(metrics: dict, splits: Any) -> dict | None:
    """The checkpoint's own normalisation if it recorded one, else the data set's, else unknown."""
    norm = metrics.get("normalization") if metrics else None
    if isinstance(norm, dict) and "mean" in norm and "std" in norm:
        return {"mean": [float(v) for v in norm["mean"]], "std": [float(v) for v in norm["std"]]}
    if splits is not None:
        return {"mean": list(splits.train.mean), "std": list(splits.train.std)}
    return None


def _with_normalization(dataset: Any, normalization: dict | None) -> Any:
    if normalization is None:
        return dataset
    return dataclasses.replace(dataset, mean=tuple(normalization["mean"]), std=tuple(normalization["std"]))


def _metadata(spec: Any, splits: Any, normalization: dict | None) -> dict[str, str]:
    """Properties stored in the ONNX and TorchScript files."""
    import nas

    meta = {"nas.version": nas.__version__, "spec": spec.to_string(), "spec_hash": spec.hash,
            "spec_json": spec.to_json(indent=None), "num_classes": str(spec.num_classes),
            "input_shape": json.dumps(["batch", spec.in_channels, spec.resolution, spec.resolution]),
            "input_layout": "float32 NCHW, normalised: (x / 255 - mean) / std"}
    if splits is not None:
        meta["classes"] = json.dumps(list(splits.train.classes))
    if normalization is not None:
        meta["mean"] = json.dumps(normalization["mean"])
        meta["std"] = json.dumps(normalization["std"])
    return meta


# --- 3. int8 -------------------------------------------------------------------------------------

def _int8_accuracy(fp32: Path, int8: Path, splits: Any, normalization: dict | None, config: ExportConfig,
                   quant: QuantConfig) -> dict:
    test = _with_normalization(splits.test, normalization)
    fp32_pred, labels = onnx_predictions(fp32, test, config.eval_images, threads=config.threads)
    int8_pred, _ = onnx_predictions(int8, test, config.eval_images, threads=config.threads)
    fp32_acc, int8_acc = float((fp32_pred == labels).mean()), float((int8_pred == labels).mean())
    return {"method": describe(quant, min(quant.images, len(splits.train))) + f" of {config.data} (training split)",
            "data": config.data, "split": "test", "eval_images": int(len(labels)),
            "fp32_acc": fp32_acc, "int8_acc": int8_acc, "acc_change": int8_acc - fp32_acc,
            "agreement": float((fp32_pred == int8_pred).mean())}


def _int8_latency(measured: dict | None) -> dict:
    result: dict[str, Any] = {"fp32_ms": None, "int8_ms": None, "speedup": None}
    if measured is not None:
        fp32_ms = measured["models"]["fp32"]["median_ms"]
        int8_ms = measured["models"]["int8"]["median_ms"]
        result = {"fp32_ms": fp32_ms, "int8_ms": int8_ms, "speedup": fp32_ms / int8_ms}
    return result | {"note": ""}  # note filled in by _int8_note once accuracy and latency are known


def _int8_note(int8: dict, machine: dict, trained: bool) -> str:
    notes = []
    speedup = int8.get("speedup")
    vnni = any("vnni" in flag for flag in machine.get("isa_flags", []))
    if speedup is None:
        notes.append("Latency not measured (--no-measure).")
    elif speedup < LITTLE_GAIN:
        verdict = "is slower than fp32" if speedup < 1 else "gains little"
        notes.append(f"int8 {verdict} here (x{speedup:.2f}), as is common for depthwise-heavy MobileNetV3-style "
                     f"networks on CPUs ({'this one has' if vnni else 'this one has no'} VNNI); prefer fp32 unless "
                     f"file size matters.")
    else:
        notes.append(f"int8 is x{speedup:.2f} faster than fp32 on this CPU ({'with' if vnni else 'without'} VNNI).")
    if not trained:
        notes.append("The weights are freshly initialised, so both accuracies are chance level; the agreement "
                     f"between fp32 and int8 predictions ({100 * int8['agreement']:.1f} %) is the meaningful figure.")
    elif int8["acc_change"] < -0.01:
        notes.append(f"int8 costs {-100 * int8['acc_change']:.2f} points of accuracy.")
    return " ".join(notes)


# --- 4. latency ----------------------------------------------------------------------------------

def measure_onnx_files(paths: dict[str, Path], threads: int = 1, table: str | None = None) -> dict:
    """Time ONNX files interleaved with each other (fairer than one after the other on a busy
    machine), with the project's protocol (:mod:`nas.latency`): batch 1, onnxruntime, ``threads``
    (with a ``table``: its threads and protocol, so that the figure sits beside its prediction)."""
    from nas.latency import MeasureConfig
    from nas.latency.measure import onnx_file_runner, timed
    from nas.latency.standalone_measure import PROTOCOL_VERSION

    config = MeasureConfig.comparable_with(table, threads)
    threads = config.threads
    results = timed({name: onnx_file_runner(p, config) for name, p in paths.items()}, config)
    return {"runtime": config.runtime, "threads": threads, "batch": 1, "protocol": PROTOCOL_VERSION,
            "settings": config.protocol.as_dict(),
            "models": {name: {"median_ms": m.median_ms, "iqr_ms": m.iqr_ms, "runs": m.runs,
                              "steady": m.spread <= config.max_iqr} for name, m in results.items()}}


def _predict(table: str, spec: Any, overlay: Path, progress: bool) -> dict:
    """The table's prediction for ``spec``, with the device it is for. Units this machine's table
    lacks (narrower widths) are measured into ``overlay``; another device's table without them
    gives no prediction (``ms`` None) and says so."""
    from nas.latency import MissingEntryError, ensure_entries, load_predictor
    from nas.latency.device import is_this_device

    predictor = load_predictor(table, overlay=overlay)
    here = is_this_device(predictor.table.device)
    if here:
        ensure_entries(table, [spec], progress=progress, overlay=overlay)
        predictor = load_predictor(table, overlay=overlay)
    try:
        ms, missing = float(predictor.predict(spec)), None
    except MissingEntryError as exc:
        ms, missing = None, exc.key.id
    return {"table": str(table), "ms": ms, "device": predictor.device_id, "this_machine": here,
            **({"missing_unit": missing} if missing else {})}


# --- 5. the card ------------------------------------------------------------------------------

def _not_measured(config: ExportConfig, predicted: dict | None) -> str | None:
    """Why the card has no measured latency (None when it has one)."""
    if not config.measure:
        return "not measured (--no-measure)"
    if predicted and not predicted["this_machine"]:
        return (f"not measured: the table is of device {predicted['device']}, not this machine; measure the "
                f"exported model on that device (`nas latency measure model.onnx` there)")
    return None


def _card(job: _Job, measured: dict | None, predicted: dict | None) -> dict:
    import numpy as np

    from nas.spec import count_madds, count_params

    loaded, config, splits, int8 = job.loaded, job.config, job.splits, job.int8
    spec = loaded.spec
    machine = machine_info(config.threads)
    metrics = loaded.metrics
    accuracy = None
    if loaded.trained and metrics.get("test_acc") is not None:
        accuracy = {"checkpoint": {key: metrics.get(key) for key in ("data", "test_acc", "val_acc", "splits")}}
    if int8 is not None:
        int8["note"] = _int8_note(int8, machine, loaded.trained)
    return {
        "format": CARD_FORMAT,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": {"path": loaded.path, "kind": loaded.kind,
                   "weights": "trained checkpoint" if loaded.trained else f"freshly initialised, seed {config.seed}"},
        "network": {"string": spec.to_string(), "hash": spec.hash, "spec": spec.to_dict(),
                    "params": count_params(spec), "madds": count_madds(spec), "num_classes": spec.num_classes,
                    "input_shape": f"{spec.resolution}x{spec.resolution}x{spec.in_channels}"},
        "classes": list(splits.train.classes) if splits is not None else None,
        "normalization": job.normalization,
        "files": job.card_files,
        "check": {"batch": config.check_batch, "seed": config.seed, "max_abs_logit": float(np.abs(job.expected).max())},
        "onnx": {"opset": OPSET, "input": "input", "output": "logits", "dynamic_axes": ["batch"]},
        "latency": {"predicted": predicted,
                    "measured": None if measured is None else measured | {"device": machine["id"]},
                    "not_measured": _not_measured(config, predicted)},
        "accuracy": accuracy,
        "int8": int8,
        "machine": machine,
    }
