"""How many measured networks a table's correction needs: the curve for 5 / 10 / 20 / 50 samples.

    python benchmarks/latency_correction.py SOURCE_TABLE [--samples 5 10 20 50] [--held-out 50] [--out DIR]

SOURCE_TABLE is another device's table (what ``nas lut adapt`` starts from) or this machine's own
(the correction every build fits on its calibration networks). The networks a table of the space is
calibrated on (as many as the largest sample count) and ``--held-out`` others are measured here,
interleaved, with the default protocol paired with the space's reference network (timed here).
For each sample count the first k of the former fit

- the table calibration (:mod:`nas.latency.calibration`: summed entries, weights and unit count,
  least squares), what ``nas lut adapt --samples k`` writes, and
- the single-scale baseline (the median of measured / summed),

and both predict the held-out networks. It prints, per k, the share within ±5 % and ±10 %, the MAPE
and Spearman's ρ, and writes ``correction.csv`` to --out. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.latency import load_table  # noqa: E402
from nas.latency.build import calibration_specs, reference_spec, table_space  # noqa: E402
from nas.latency.calibration import apply_calibration, fit_calibration  # noqa: E402
from nas.latency.device import this_device, warn_if_busy  # noqa: E402
from nas.latency.measure import TABLE_PROTOCOL, MeasureConfig, measure_reference, measure_specs  # noqa: E402
from nas.latency.predict import LatencyPredictor  # noqa: E402
from nas.latency.validate import figures, held_out_specs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", metavar="SOURCE_TABLE")
    parser.add_argument("--samples", type=int, nargs="+", default=[5, 10, 20, 50])
    parser.add_argument("--held-out", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    source = load_table(args.source)
    space = table_space(source)
    pool = calibration_specs(space, max(args.samples))
    held = held_out_specs(space, args.held_out, args.seed, {s.hash for s in pool})
    config = MeasureConfig(runtime=source.runtime, threads=source.threads, seed=args.seed, **TABLE_PROTOCOL)
    config = replace(config, reference=reference_spec(space, []).to_string())
    here = this_device(config.runtime, config.threads)
    print(f"source {source.device_id} -> this machine {here['id']} ({here['cpu_model']}, {here['cores']} cores); "
          f"measuring {len(pool)} fitting + {len(held)} held-out networks of {space.name!r} ...", flush=True)
    warn_if_busy(config.threads)
    start = time.perf_counter()
    config = replace(config, reference_ms=measure_reference(config))
    measured = np.array([m.median_ms for m in measure_specs(pool + held, config.for_networks())])
    seconds = time.perf_counter() - start
    predictor = LatencyPredictor(source, calibrated=False)
    entries = [predictor.entries(s) for s in pool + held]
    raw = np.array([sum(ms for _, ms in e) for e in entries])
    fit_y, test_y, test_raw = measured[:len(pool)], measured[len(pool):], raw[len(pool):]

    rows = []
    for k in args.samples:
        calibration = fit_calibration(pool[:k], entries[:k], fit_y[:k], overhead_ms=0.0)
        fitted = np.array([apply_calibration(calibration, s, e) for s, e in zip(held, entries[len(pool):])])
        for model, predicted in (("table calibration (nas lut adapt)", fitted), ("single scale", calibration["scale"] * test_raw)):
            f = figures(predicted, test_y)
            rows.append({"samples": k, "model": model, "within_5": f.within_5, "within_10": f.within_10,
                         "mape": f.mape, "spearman": f.spearman})
    table = pd.DataFrame(rows)
    print(f"measured in {seconds:.0f} s; held-out: {len(held)} networks, {test_y.min():.3f}-{test_y.max():.3f} ms")
    print(table.to_string(index=False, formatters={"within_5": "{:.0%}".format, "within_10": "{:.0%}".format,
                                                    "mape": "{:.1%}".format, "spearman": "{:.3f}".format}))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out / "correction.csv", index=False)
        print(f"wrote {args.out / 'correction.csv'}")


if __name__ == "__main__":
    main()
