"""The NetAdapt loop: propose, inherit, fine-tune briefly, keep the best, repeat; then fine-tune long.

Every finished proposal is written to ``OUT/state.json`` (atomically, after its weights are saved),
so a killed run started again with the same arguments continues from the last finished proposal
and, with the same seed, ends with the same history as an uninterrupted run. The long fine-tune is
not part of the iterations' identity: rerun with other ``long_epochs``/``long_lr`` and only the
final fine-tune of the last accepted network is done again.

Files in ``OUT``: ``state.json`` (the run's state and history), ``history.csv`` (one row per
proposal), ``trajectory.png``, ``current_itNNN.pt`` (the network after each accepted iteration,
only the latest kept), ``proposals/`` (fine-tuned proposals of the iteration in progress), and at
the end ``checkpoint.pt`` + ``spec.json`` + ``metrics.json`` (readable by ``nas arch show``,
``nas train`` and export).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

from nas.config import NetAdaptConfig, Target  # noqa: F401  (NetAdaptConfig: re-exported)
from nas.errors import NasError
from nas.io import atomic_path, write_text_atomic
from nas.netadapt.inherit import shrink_model
from nas.netadapt.proposals import Predictor, Proposal, all_candidates, make_proposals, smallest_reachable
from nas.spec.arch import ArchSpec

STATE_FORMAT = "nas-netadapt/2"  # 2: the optimizer and the final fine-tune's settings always recorded
HISTORY_COLUMNS = ["iteration", "proposal", "kind", "old_width", "new_width", "channels_removed", "delta_ms",
                   "predicted_ms", "saving_ms", "measured_ms", "val_acc", "d_acc", "score", "chosen", "steps",
                   "seconds"]

MeasureFn = Callable[[ArchSpec], float]
FINAL_SETTINGS = ("long_epochs", "long_lr")  # change only the final fine-tune, not the iterations
OVERLAY = "latency_units"  # the run's folder of units measured for it (narrower widths), beside the table


def _iteration_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings the iterations depend on (a run's identity): all but :data:`FINAL_SETTINGS`."""
    return {k: v for k, v in config.items() if k not in FINAL_SETTINGS}


@dataclass
class NetAdaptResult:
    spec: ArchSpec
    start_ms: float
    target_ms: float
    final_predicted_ms: float
    final_measured_ms: float | None
    start_measured_ms: float | None
    start_acc: float
    final_acc: float
    final_test_acc: float | None
    iterations: int
    train_steps: int
    out: Path
    history: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)

    def summary(self) -> dict[str, Any]:
        return {"start_ms": self.start_ms, "final_predicted_ms": self.final_predicted_ms,
                "final_measured_ms": self.final_measured_ms, "start_acc": self.start_acc,
                "final_acc": self.final_acc, "iterations": self.iterations, "spec": self.spec.to_string()}


# --- latency from the tables ----------------------------------------------------------------------

class TableLatency:
    """The NetAdapt view of a latency table. Narrower widths are usually not in a space's table, so
    :meth:`prepare` measures the units of a batch of candidate specs the table lacks, and
    :meth:`predict` does the same for a single spec that still misses one. Those rows go to the run's
    ``overlay`` folder (the table itself is never written by a run), and only when the table is this
    machine's: for another device's table a missing unit is refused with the command to measure it
    there, and :attr:`on_this_device` is False (no end-to-end measurement here)."""

    def __init__(self, table: str | Path, overlay: str | Path | None = None, progress: bool = True) -> None:
        from nas.latency import MeasureConfig, load_predictor, load_table
        from nas.latency.device import is_this_device

        self.table, self.overlay, self.progress = Path(table), overlay, progress
        self._predictor = load_predictor(self.table, overlay=overlay)
        self.measure_config = MeasureConfig.for_table(load_table(self.table))  # the table's own protocol
        self.on_this_device = is_this_device(self._predictor.table.device)

    @property
    def device_id(self) -> str:
        return self._predictor.device_id

    def predict_known(self, spec: ArchSpec) -> float:
        """Prediction from the table as it is (MissingEntryError when a unit is missing)."""
        return float(self._predictor.predict(spec))

    def prepare(self, specs: list[ArchSpec]) -> None:
        """Measure, in one interleaved batch, every unit of ``specs`` the table lacks."""
        from nas.latency import ensure_entries, load_predictor

        added = ensure_entries(self.table, specs, progress=self.progress, overlay=self.overlay)
        if added:
            self._predictor = load_predictor(self.table, overlay=self.overlay)

    def predict(self, spec: ArchSpec) -> float:
        from nas.latency import MissingEntryError

        try:
            return self.predict_known(spec)
        except MissingEntryError:
            self.prepare([spec])
            return self.predict_known(spec)

    def measure(self, spec: ArchSpec) -> float:
        """End-to-end latency of the whole network with the table's runtime and threads."""
        from nas.latency import measure_spec

        return float(measure_spec(spec, self.measure_config).median_ms)


# --- small helpers ---------------------------------------------------------------------------------

def _copy_atomic(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _load_weights(path: Path) -> tuple[ArchSpec, torch.nn.Module]:
    from nas.train import load_model

    return load_model(path)


def check_target(target_ms: float, start_ms: float, smallest_ms: Callable[[], float]) -> None:
    """Refuse a target at or above the start, or below the smallest reachable network (``smallest_ms``
    is called only when the first check passes: it may have to measure that network's units)."""
    if target_ms >= start_ms:
        raise NasError(f"target {target_ms:.4g} ms is not below the network's current predicted latency "
                       f"{start_ms:.4g} ms; nothing to shrink")
    smallest_ms = smallest_ms()
    if target_ms < smallest_ms:
        raise NasError(f"target {target_ms:.4g} ms is below {smallest_ms:.4g} ms, the predicted latency of the "
                       f"smallest network NetAdapt can reach from this one")


# --- the run -----------------------------------------------------------------------------------------

class NetAdaptRun:
    """One resumable NetAdapt run in ``out``; :meth:`run` does (or finishes) everything."""

    def __init__(self, spec: ArchSpec, model: torch.nn.Module, splits: Any, predictor: Predictor,
                 config: NetAdaptConfig, out: str | Path, measure: MeasureFn | None = None,
                 progress: bool = True, threads: int | None = None) -> None:
        self.spec, self.model, self.splits = spec, model, splits
        self.predictor, self.config, self.measure = predictor, config.resolved(), measure
        self.out, self.progress, self.threads = Path(out), progress, threads
        self.state: dict[str, Any] = {}

    # -- state --
    @property
    def state_path(self) -> Path:
        return self.out / "state.json"

    def _identity(self) -> dict[str, Any]:
        return {"start_hash": self.spec.hash, "config": _iteration_settings(dataclasses.asdict(self.config))}

    def _final_settings(self) -> dict[str, Any]:
        return {k: getattr(self.config, k) for k in FINAL_SETTINGS}

    @staticmethod
    def _stored_identity(state: dict[str, Any]) -> dict[str, Any]:
        identity = state.get("identity") or {}
        return {**identity, "config": _iteration_settings(identity.get("config") or {})}

    def _reopen_final_if_changed(self) -> None:
        """A finished run asked for another long fine-tune: drop the old final, keep the iterations."""
        final = self.state.get("final")
        if final is None:
            return
        if final.get("settings") == self._final_settings():
            return
        self.state["train_steps"] -= final.get("long_steps", 0)
        self.state["final"] = None
        self.state["identity"] = self._identity()
        self._save_state()

    def _save_state(self) -> None:
        write_text_atomic(self.state_path, json.dumps(self.state, indent=1) + "\n")
        write_text_atomic(self.out / "history.csv", self.history().to_csv(index=False))

    def _load_or_start(self) -> None:
        if self.state_path.is_file():
            try:
                state = json.loads(self.state_path.read_text())
            except json.JSONDecodeError:
                raise NasError(f"{self.state_path} is corrupt; delete the folder or choose another --out") from None
            if not isinstance(state, dict):
                raise NasError(f"{self.state_path} is corrupt; delete the folder or choose another --out")
            if state.get("format") != STATE_FORMAT:
                raise NasError(f"{self.state_path} has format {str(state.get('format'))[:40]!r}, this version reads "
                               f"{STATE_FORMAT!r}; delete the folder or choose another --out")
            if self._stored_identity(state) != self._identity():
                raise NasError(f"{self.out} holds a NetAdapt run of another network or with other settings; "
                               f"choose another --out")
            self.state = state
            self._reopen_final_if_changed()
            return
        self._start()

    def _start(self) -> None:
        from nas.train import evaluate, save_checkpoint

        start_ms = float(self.predictor.predict(self.spec))
        target_ms = Target.parse(self.config.target).ms(start_ms)
        smallest = smallest_reachable(self.spec)

        def smallest_ms() -> float:  # its units are measured only when the target is below the start
            self._prepare([smallest])
            return float(self.predictor.predict(smallest))

        check_target(target_ms, start_ms, smallest_ms)
        try:
            (self.out / "proposals").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NasError(f"cannot create output folder {self.out} ({exc.strerror})") from None
        start_acc = evaluate(self.model, self.splits.val)
        start_measured = self.measure(self.spec) if self.measure else None
        name = "current_it000.pt"
        save_checkpoint(self.out / name, self.spec, self.model, {"val_acc": start_acc})
        self.state = {
            "format": STATE_FORMAT, "identity": self._identity(),
            "start": {"spec": self.spec.to_dict(), "predicted_ms": start_ms, "measured_ms": start_measured,
                      "val_acc": start_acc},
            "target_ms": target_ms, "delta0_ms": self.config.delta_fraction * start_ms,
            "iteration": 0, "train_steps": 0,
            "current": {"checkpoint": name, "predicted_ms": start_ms, "val_acc": start_acc},
            "rows": [], "final": None,
        }
        self._save_state()

    def history(self) -> pd.DataFrame:
        return pd.DataFrame(self.state.get("rows", []), columns=HISTORY_COLUMNS)

    # -- one proposal --
    def _seed(self, iteration: int, index: int) -> int:
        return self.config.seed * 1_000_003 + iteration * 1_000 + index

    def _fine_tune(self, model: torch.nn.Module, seed: int, steps: int | None = None,
                   epochs: float | None = None, lr: float | None = None, test: bool = False,
                   progress: bool = False, warmup_steps: int | None = 0):
        from nas.train import TrainConfig, train

        config = TrainConfig(steps=steps, epochs=epochs, batch_size=self.config.batch_size,
                             optimizer=self.config.optimizer, lr=lr or self.config.lr,
                             warmup_steps=warmup_steps, seed=seed, threads=self.threads,
                             eval_every=None, evaluate_test=test)
        return train(model, self.splits, config, progress=progress)

    def _evaluate_proposal(self, iteration: int, index: int, proposal: Proposal, current_spec: ArchSpec,
                           current_model: torch.nn.Module, current_acc: float, delta_ms: float) -> dict:
        from nas.train import save_checkpoint

        t0 = time.perf_counter()
        model = shrink_model(current_spec, current_model, proposal.spec)
        result = self._fine_tune(model, self._seed(iteration, index), steps=self.config.short_steps)
        save_checkpoint(self._proposal_path(iteration, index), proposal.spec, model, {"val_acc": result.val_acc})
        d_acc = result.val_acc - current_acc
        score = d_acc / abs(proposal.saving_ms) if self.config.select == "ratio" else result.val_acc
        return {"iteration": iteration, "proposal": proposal.name, "kind": proposal.group.kind,
                "old_width": proposal.old_width, "new_width": proposal.new_width,
                "channels_removed": proposal.channels_removed, "delta_ms": delta_ms,
                "predicted_ms": proposal.predicted_ms, "saving_ms": proposal.saving_ms, "measured_ms": None,
                "val_acc": result.val_acc, "d_acc": d_acc, "score": score, "chosen": False,
                "steps": result.steps, "seconds": time.perf_counter() - t0}

    def _proposal_path(self, iteration: int, index: int) -> Path:
        return self.out / "proposals" / f"it{iteration:03d}_p{index:02d}.pt"

    # -- one iteration --
    def _prepare(self, specs: list[ArchSpec]) -> None:
        prepare = getattr(self.predictor, "prepare", None)
        if prepare is not None:
            prepare(specs)

    def _proposals(self, spec: ArchSpec, iteration: int) -> tuple[list[Proposal], float]:
        self._prepare(list(all_candidates(spec)))
        delta = self.state["delta0_ms"] * self.config.delta_decay ** iteration
        for _ in range(12):  # no group saves delta any more: ask for less
            proposals = make_proposals(spec, self.predictor, delta)
            if proposals:
                return proposals, delta
            delta /= 2
        return [], delta

    def _iteration(self) -> bool:
        """Run (or finish) one iteration; False when no proposal is left."""
        from tqdm import tqdm

        k, current = self.state["iteration"], self.state["current"]
        spec, model = _load_weights(self.out / current["checkpoint"])
        proposals, delta = self._proposals(spec, k)
        if not proposals:
            return False
        done = {r["proposal"]: r for r in self.state["rows"] if r["iteration"] == k}
        bar = tqdm(proposals, desc=f"iteration {k + 1}: {current['predicted_ms']:.4g} ms -> "
                                   f"{self.state['target_ms']:.4g} ms", unit="proposal", leave=False,
                   disable=None if self.progress else True, dynamic_ncols=True)
        for j, proposal in enumerate(bar):
            if proposal.name in done:
                continue
            row = self._evaluate_proposal(k, j, proposal, spec, model, current["val_acc"], delta)
            self.state["rows"].append(row)
            self.state["train_steps"] += row["steps"]
            done[proposal.name] = row
            self._save_state()
        bar.close()
        rows = [done[p.name] for p in proposals]
        best = max(range(len(rows)), key=lambda i: (rows[i]["score"], -i))
        winner, row = proposals[best], rows[best]
        row["chosen"] = True
        row["measured_ms"] = self.measure(winner.spec) if self.measure else None
        name = f"current_it{k + 1:03d}.pt"
        _copy_atomic(self._proposal_path(k, best), self.out / name)
        old = self.out / current["checkpoint"]
        self.state["current"] = {"checkpoint": name, "predicted_ms": winner.predicted_ms, "val_acc": row["val_acc"]}
        self.state["iteration"] = k + 1
        self._save_state()
        old.unlink(missing_ok=True)
        for path in (self.out / "proposals").glob(f"it{k:03d}_*.pt"):
            path.unlink(missing_ok=True)
        if self.progress:
            tqdm.write(f"iteration {k + 1}: {winner.name} {winner.old_width}->{winner.new_width} channels, "
                       f"predicted {winner.predicted_ms:.4g} ms, val acc {row['val_acc']:.4f}", file=sys.stderr)
        return True

    # -- the end --
    def _finish(self) -> None:
        from nas.train import save_checkpoint

        current = self.state["current"]
        spec, model = _load_weights(self.out / current["checkpoint"])
        result = None
        if self.config.long_epochs > 0:
            result = self._fine_tune(model, self._seed(self.state["iteration"], 999), epochs=self.config.long_epochs,
                                     lr=self.config.long_lr, test=True, progress=self.progress,
                                     warmup_steps=None)  # the trainer's default warmup: a restart of the schedule
            val_acc, test_acc, steps = result.val_acc, result.test_acc, result.steps
        else:
            from nas.train import evaluate

            val_acc, test_acc, steps = current["val_acc"], evaluate(model, self.splits.test), 0
        measured = self.measure(spec) if self.measure else None
        final = {"spec": spec.to_dict(), "predicted_ms": current["predicted_ms"], "measured_ms": measured,
                 "val_acc": val_acc, "test_acc": test_acc, "long_steps": steps, "settings": self._final_settings()}
        self.state["train_steps"] += steps
        metrics = {"spec_hash": spec.hash, "val_acc": val_acc, "test_acc": test_acc,
                   "predicted_ms": final["predicted_ms"], "measured_ms": measured,
                   "netadapt": {"start_hash": self.spec.hash, "iterations": self.state["iteration"],
                                "target_ms": self.state["target_ms"], "train_steps": self.state["train_steps"]}}
        save_checkpoint(self.out / "checkpoint.pt", spec, model, metrics)
        write_text_atomic(self.out / "spec.json", spec.to_json() + "\n")
        write_text_atomic(self.out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        self.state["final"] = final
        self._save_state()

    def run(self) -> NetAdaptResult:
        self._load_or_start()
        while self.state["final"] is None and self.state["current"]["predicted_ms"] > self.state["target_ms"]:
            if self.state["iteration"] >= self.config.max_iterations or not self._iteration():
                print(f"netadapt: stopped above the target at {self.state['current']['predicted_ms']:.4g} ms "
                      f"(no width can shrink further, or {self.config.max_iterations} iterations)", file=sys.stderr)
                break
        if self.state["final"] is None:
            self._finish()
        from nas.netadapt.plots import plot_trajectory

        plot_trajectory(self.state, self.out / "trajectory.png")
        return self.result()

    def result(self) -> NetAdaptResult:
        s, final = self.state, self.state["final"]
        return NetAdaptResult(
            spec=ArchSpec.from_dict(final["spec"]), start_ms=s["start"]["predicted_ms"], target_ms=s["target_ms"],
            final_predicted_ms=final["predicted_ms"], final_measured_ms=final["measured_ms"],
            start_measured_ms=s["start"]["measured_ms"], start_acc=s["start"]["val_acc"],
            final_acc=final["val_acc"], final_test_acc=final["test_acc"], iterations=s["iteration"],
            train_steps=s["train_steps"], out=self.out, history=self.history())


def netadapt(spec: ArchSpec, model: torch.nn.Module, splits: Any, predictor: Predictor,
             config: NetAdaptConfig, out: str | Path, measure: MeasureFn | None = None,
             progress: bool = True, threads: int | None = None) -> NetAdaptResult:
    """Shrink ``model`` (a trained network of ``spec``) to ``config.target`` with ``predictor``.

    Resumes the run in ``out`` if there is one with the same start network and settings."""
    return NetAdaptRun(spec, model, splits, predictor, config, out, measure, progress, threads).run()


def netadapt_checkpoint(checkpoint: str | Path, table: str | Path, config: NetAdaptConfig, out: str | Path,
                        data: str | None = None, data_dir: str | Path | None = None, subset: int | None = None,
                        measure: bool = True, progress: bool = True, overlay: str | Path | None = None,
                        threads: int | None = None, val_fraction: float = 0.1,
                        data_seed: int = 0) -> NetAdaptResult:
    """The ``nas netadapt`` command as a function: checkpoint + latency table -> shrunk network."""
    from nas.data import load_data
    from nas.latency import MissingEntryError
    from nas.latency.catalog import resolve_table
    from nas.train import check_spec_matches, load_checkpoint, load_model

    target = Target.parse(config.target)
    metrics = load_checkpoint(checkpoint).metrics
    config = config.resolved_for(metrics)
    spec, model = load_model(checkpoint)
    table = resolve_table(table, progress=progress)  # a space's folder: this machine's table (built if missing)
    latency = TableLatency(table, overlay=overlay or Path(out) / OVERLAY, progress=progress)
    if measure and not latency.on_this_device and progress:
        print(f"latency table {table} is of device {latency.device_id}, not this machine: latencies are "
              f"predicted for that device; nothing is measured end to end here", flush=True)
    try:
        start_ms = latency.predict_known(spec)
    except MissingEntryError as exc:
        raise NasError(f"latency table {table} has no entry for this network's unit {exc.key.id}: "
                       f"a table of another space? (build one with nas lut build)") from None
    smallest = smallest_reachable(spec)
    check_target(target.ms(start_ms), start_ms, lambda: latency.predict(smallest))
    name = data or metrics.get("data") or "fashion-mnist"
    splits = load_data(name, data_dir, val_fraction, data_seed, subset)
    check_spec_matches(spec, splits.train, name)
    measure_fn = latency.measure if measure and latency.on_this_device else None
    return netadapt(spec, model, splits, latency, config, out, measure_fn,
                    progress, threads)
