"""How well does a measurement protocol agree with itself? The noise floor of a latency table.

    python benchmarks/latency_noise.py [--space search_spaces/fashion_mnist.yaml] [--networks 20]
        [--protocol median:4x50] [--protocol median:10x10+ref5] [--protocol p10:20x10] ...

Samples ``--networks`` networks from the space, then measures all of them end to end twice with each
protocol (``STATISTIC:PASSESxRUNS``, with ``+refN`` the paired protocol: N calls of the space's
baseline framing every burst, as tables are built; rounds of different protocols alternate, so they
see the same machine), and prints, per protocol, how far the two measurements of the same network are apart:
the share within ±5 % and ±10 %, the median and 90th percentile of |m1/m2 - 1|, the Spearman ρ of
the two rankings and the seconds spent. No predictor can agree with a measurement better than the
measurement agrees with itself, so these figures bound what ``nas lut validate`` can show.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.latency import MeasureConfig  # noqa: E402
from nas.latency.measure import measure_reference, measure_specs  # noqa: E402
from nas.latency.standalone_measure import STATISTICS  # noqa: E402
from nas.spec import load_space  # noqa: E402


def parse_protocol(text: str, base: MeasureConfig) -> MeasureConfig:
    try:
        statistic, counts = text.split(":")
        counts, _, reference = counts.lower().partition("+ref")
        passes, runs = (int(x) for x in counts.split("x"))
        reference_runs = int(reference) if reference else 0
    except ValueError:
        raise SystemExit(f"--protocol {text!r}: expected STATISTIC:PASSESxRUNS[+refN], e.g. median:4x50") from None
    if statistic not in STATISTICS:
        raise SystemExit(f"--protocol {text!r}: statistic must be one of {', '.join(STATISTICS)}")
    return replace(base, statistic=statistic, passes=passes, runs=runs, reference_runs=reference_runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="search_spaces/fashion_mnist.yaml")
    parser.add_argument("--networks", type=int, default=20)
    parser.add_argument("--protocol", action="append", default=[], metavar="STAT:PxR")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    space = load_space(args.space)
    base = MeasureConfig(threads=args.threads, reference=space.baseline.to_string())
    protocols = {text: parse_protocol(text, base) for text in (args.protocol or ["median:4x50", "median:10x10+ref5"])}
    for name, config in protocols.items():  # the paired protocol's time base, timed once as a table build does
        if config.paired:
            protocols[name] = replace(config, reference_ms=measure_reference(config))
    rng = random.Random(args.seed)
    specs = [space.baseline] + [space.sample(rng) for _ in range(args.networks - 1)]
    measured = {name: [] for name in protocols}
    seconds = {name: 0.0 for name in protocols}
    for attempt in range(2):
        for name, config in protocols.items():
            start = time.perf_counter()
            ms = measure_specs(specs, replace(config, seed=args.seed + attempt))
            seconds[name] += time.perf_counter() - start
            measured[name].append(np.array([m.median_ms for m in ms]))
            print(f"round {attempt + 1} {name}: done in {time.perf_counter() - start:.1f} s", flush=True)
    rows = []
    for name, (first, second) in measured.items():
        gap = np.abs(first / second - 1)
        rows.append({"protocol": name, "within_5": np.mean(gap <= 0.05), "within_10": np.mean(gap <= 0.10),
                     "median_gap": np.median(gap), "p90_gap": np.percentile(gap, 90),
                     "spearman": pd.Series(first).corr(pd.Series(second), method="spearman"),
                     "mean_ms": float(np.mean(first)), "seconds": seconds[name]})
    with pd.option_context("display.width", 160, "display.float_format", "{:.3f}".format):
        print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
