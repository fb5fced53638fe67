"""How well a trained supernet ranks candidates (issue 20): N seeded networks sampled from the
experiment's space are each scored by the supernet (inherited slice + BatchNorm recalibration) and
trained on their own, with the experiment's proxy recipe and with a longer one (``--epochs`` of its
full-training recipe). Prints Kendall's tau (with a 95 % bootstrap interval over the networks: on 30
networks about +-0.25) and Spearman's rho of the supernet's val accuracy against each, and of its val
likelihood (exp(-loss), the score of ``supernet.metric: likelihood``; the same scoring pass gives both),
and of the proxy's val accuracy and likelihood (its final evaluation gives both), the cost of each path,
the seconds per candidate scored and the peak memory.

    PYTHONPATH=. python3 benchmarks/supernet_ranking.py experiments/fashion_mnist.yaml \\
        --supernet runs/supernet --supernet-minutes 60 --networks 30 --epochs 3

``--supernet DIR``: a supernet trained by ``nas supernet train`` is used as it is (its training
seconds are read from DIR/supernet.json); when DIR holds none (or an unfinished one), it is trained
(or continued) here with ``--supernet-epochs``/``--supernet-minutes`` and ``--sampling``.

Every network is scored twice, with BatchNorm recalibrated on the batches of two seeds, and the
agreement of the two is printed: how much of the supernet's order is the scoring's own noise.
``--repeat``: each longer training runs a second time with the next seed, and the agreement of the two
(Kendall tau) is printed: how well the ground truth ranks itself, and from it the tau a perfect predictor
would reach against one training and against the mean of the two seeds (:func:`nas.supernet.ranking.tau_ceiling`);
the supernet and the proxy are then also ranked against that mean. Each ground truth is also ranked by
the networks' MAdds and parameter counts: what a predictor that knows only a network's size reaches.
``--compare DIR``: a second trained supernet (other sampling, kernel or re-ordering), scored on the same
networks; its tau is printed beside the first's, with its gain over it paired over the networks
(:func:`nas.supernet.ranking.kendall_tau_gain_interval`), by accuracy and by likelihood.
``--rows FILE``: the ground truth kept across runs. Each network's stand-alone accuracies and val losses
(proxy, longer, its repeat) and their seconds are appended to this CSV as soon as they are known, under a key
of the recipes and data that made them; a rerun reads the ones of the same key back and trains only
what is missing (an interrupted run loses nothing; ``--repeat`` added later trains only the repeats; a
file written before the losses were kept gets today's header, and its proxies, 13 s each, run again
for their loss).
The supernet's scores are not kept: they take seconds, so every run scores the networks with the
supernet it is given, and one ground truth serves any number of supernets. Without ``--supernet`` only
the stand-alone trainings run (filling ``--rows``) and their agreement is printed. Each row names the CPU
that trained it; the recipe key leaves out the settings that do not change a training (threads,
evaluation batch), so rows from several machines make one ground truth.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nas.io import write_text_atomic  # noqa: E402


def sample_networks(space, n: int, seed: int) -> list:
    """``n`` distinct members (by hash), sampled uniformly with ``seed``."""
    rng, specs, seen = random.Random(seed), [], set()
    for _ in range(100 * n):
        spec = space.sample(rng)
        if spec.hash not in seen:
            seen.add(spec.hash)
            specs.append(spec)
        if len(specs) == n:
            return specs
    raise SystemExit(f"the space has fewer than {n} distinct members")


def supernet_for(args, experiment, space, splits):
    """(supernet, its training seconds, its settings): the one in --supernet, trained or continued first
    if needed; the settings (sampling, kernel, reorder) are the ones it was trained with."""
    from nas.supernet.train import settings_for, train_supernet

    out = Path(args.supernet)
    summary = out / "supernet.json"
    if not summary.exists() or args.supernet_epochs or args.supernet_minutes:
        settings = settings_for(experiment, epochs=args.supernet_epochs, minutes=args.supernet_minutes,
                                sampling=args.sampling, kernel=args.kernel, reorder=args.reorder)
        train_supernet(space, splits, settings, out, progress=True)
    net, trained = trained_supernet(out, space)
    return net, trained["seconds"], trained["settings"]


def trained_supernet(path, space):
    """(supernet, its summary: seconds, settings, ...) of a folder ``nas supernet train`` wrote."""
    from nas.supernet.train import load_supernet

    return load_supernet(path, space), json.loads((Path(path) / "supernet.json").read_text())


def train_alone(spec, splits, config):
    """A stand-alone training's final val figures (a ``nas.train.Validation``: accuracy and loss)."""
    from nas.models import build_model
    from nas.train import Validation, train

    model = build_model(spec, seed=config.seed)
    result = train(model, splits, config, progress=False)
    return Validation(float(result.val_acc), float(result.val_loss))


STANDALONE = ("proxy", "longer", "longer_again")  # the stand-alone trainings --rows keeps
# what a kept row must hold for a training not to run again: the proxy's val loss too (it ranks the proxy by
# its likelihood; 13 s each), the longer trainings' only their accuracy (their loss is kept when they run)
NEEDED = {"proxy": ("proxy", "proxy_loss"), "longer": ("longer",), "longer_again": ("longer_again",)}
# the cost line each run counts in (the second scoring only checks the scoring's noise: not a cost)
COST_OF = {"supernet": "supernet_score", "proxy": "proxy", "longer": "longer", "longer_again": "longer"}
# each row also names the CPU that trained it (accuracies and seconds differ a little between CPUs)
ROW_FIELDS = (["recipe", "hash"] + [f"{key}{suffix}" for key in STANDALONE for suffix in ("", "_s", "_loss")]
              + ["cpu"])
EARLIER_ROW_FIELDS = [f for f in ROW_FIELDS if not f.endswith("_loss")]  # files written before losses were kept


SETTINGS_SHOWN = ("sampling", "kernel", "reorder", "minutes")


def settings_text(settings: dict) -> str:
    """How a supernet was trained, for the report's first line."""
    return (f"sampling {settings['sampling']}, kernel {settings['kernel']}"
            f"{', re-ordered channels' if settings['reorder'] else ''}"
            + ("" if settings["minutes"] is None else f", {settings['minutes']:g} min"))


def recipe_key(*parts) -> str:
    """A short digest of the recipes and data that make the stand-alone figures."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_rows(path: Path | None, recipe: str) -> dict[str, dict]:
    """Stand-alone figures (by network hash) of earlier runs with this ``recipe`` in ``--rows``; the last
    row of a network wins, empty fields are figures not measured."""
    if path is None or not path.exists():
        return {}
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames not in (ROW_FIELDS, EARLIER_ROW_FIELDS):
                raise ValueError("header")
            rows = {}
            for r in reader:
                if r["recipe"] == recipe:
                    rows[r["hash"]] = {k: float(v) for k, v in r.items() if k not in ("recipe", "hash", "cpu") and v}
            return rows
    except (OSError, KeyError, TypeError, ValueError, csv.Error, UnicodeDecodeError) as exc:
        print(f"--rows {path}: not a CSV this benchmark wrote ({type(exc).__name__}); use another file", file=sys.stderr)
        raise SystemExit(2) from None


def upgrade_header(path: Path) -> None:
    """Rewrite (atomically) a file of the earlier header with today's: its rows keep their figures, and
    their losses are empty (not measured)."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != EARLIER_ROW_FIELDS:
            return
        rows = list(reader)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=ROW_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())


def append_row(path: Path | None, recipe: str, network: str, row: dict) -> None:
    if path is None:
        return
    new = not path.exists()
    if not new:
        upgrade_header(path)
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({"recipe": recipe, "hash": network} | {k: row[k] for k in ROW_FIELDS[2:] if k in row})


def main() -> int:
    from nas.config import SUPERNET_KERNELS, SUPERNET_SAMPLINGS, training_identity

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("experiment")
    p.add_argument("--supernet", metavar="DIR", help="without it: only the stand-alone trainings (the ground "
                   "truth, into --rows) and their agreement")
    p.add_argument("--supernet-epochs", type=float)
    p.add_argument("--supernet-minutes", type=float)
    p.add_argument("--sampling", choices=SUPERNET_SAMPLINGS, default="uniform")
    p.add_argument("--kernel", choices=SUPERNET_KERNELS, default="crop")
    p.add_argument("--reorder", action="store_true", help="re-order hidden channels by importance each epoch")
    p.add_argument("--compare", metavar="DIR", help="a second trained supernet (e.g. other settings), scored on the "
                   "same networks: its tau and its gain over --supernet's, paired over the networks")
    p.add_argument("--networks", type=int, default=30)
    p.add_argument("--epochs", type=float, default=3.0, help="the longer stand-alone training (default: 3)")
    p.add_argument("--bn-batches", type=int, help="default: the experiment's supernet.bn_batches")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled networks")
    p.add_argument("--repeat", action="store_true", help="train each longer recipe twice (seeds s, s+1)")
    p.add_argument("--rows", type=Path, metavar="FILE",
                   help="CSV of the stand-alone figures, kept across runs (a rerun trains only what is missing)")
    p.add_argument("--subset", type=int, help="train everything on this many images (smoke runs)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    import dataclasses

    import torch

    from nas.data import load_data
    from nas.experiment import load_experiment
    from nas.supernet.ranking import (kendall_tau, kendall_tau_gain_interval, kendall_tau_interval, spearman_rho,
                                      tau_ceiling)
    from nas.supernet.score import score_candidate
    from nas.process import peak_rss_kib
    from nas.spec.count import count_madds, count_params
    from nas.threads import torch_threads
    from nas.train.cpu import cpu_model, resolve_scoring_precision

    experiment = load_experiment(args.experiment, check_files=False)
    d = experiment.data
    # the supernet and the longer trainings use the whole training split, as the full training does;
    # the proxies the experiment's data.subset, as the search does (the val split is the same)
    splits = load_data(d.name, d.data_dir, d.val_fraction, d.seed, args.subset)
    proxy_subset = args.subset or d.subset
    proxy_splits = splits if proxy_subset == args.subset else load_data(d.name, d.data_dir, d.val_fraction, d.seed,
                                                                          proxy_subset)
    space = experiment.load_space()
    truth_only = args.supernet is None
    net, supernet_seconds, trained_with = (None, 0.0, None) if truth_only else supernet_for(args, experiment, space,
                                                                                           splits)
    specs = sample_networks(space, args.networks, args.seed)
    score = experiment.supernet_config
    bn_batches = args.bn_batches or score.bn_batches
    proxy = experiment.proxy_config
    longer = dataclasses.replace(experiment.train_config, epochs=args.epochs, evaluate_test=False, eval_every=None)
    again = dataclasses.replace(longer, seed=longer.seed + 1)

    compared = None
    if args.compare:
        if truth_only:
            p.error("--compare needs --supernet")
        compared, compared_summary = trained_supernet(args.compare, space)
        compared_with = compared_summary["settings"]

    def supernet_score(spec, seed, supernet=None):
        return score_candidate(net if supernet is None else supernet, spec, splits, bn_batches, score.batch_size, seed,
                               precision=score.precision)

    runs = {} if truth_only else {"supernet": lambda spec: supernet_score(spec, score.seed),
                                  "supernet_again": lambda spec: supernet_score(spec, score.seed + 1)}
    if compared is not None:
        runs["compared"] = lambda spec: supernet_score(spec, score.seed, compared)
    runs |= {"proxy": lambda spec: train_alone(spec, proxy_splits, proxy),
             "longer": lambda spec: train_alone(spec, splits, longer)}
    if args.repeat:
        runs["longer_again"] = lambda spec: train_alone(spec, splits, again)
    recipe = recipe_key(dataclasses.asdict(d), args.subset, proxy_subset, dataclasses.asdict(proxy),
                        training_identity(dataclasses.asdict(longer)))
    done = read_rows(args.rows, recipe)
    rows, cost = [], {"supernet_train": supernet_seconds, "supernet_score": 0.0, "proxy": 0.0, "longer": 0.0}
    with torch_threads(proxy.threads):
        for i, spec in enumerate(specs):
            row = {"hash": spec.hash} | done.get(spec.hash, {})
            missing = [key for key in runs if key not in STANDALONE or not all(f in row for f in NEEDED[key])]
            for key in missing:
                t0 = time.perf_counter()
                figure = runs[key](spec)
                row[f"{key}_s"] = time.perf_counter() - t0
                row[key], row[f"{key}_loss"] = figure.accuracy, figure.loss
            if set(missing) & set(STANDALONE):
                append_row(args.rows, recipe, spec.hash, row | {"cpu": cpu_model()})
            for key in runs.keys() & COST_OF.keys():
                cost[COST_OF[key]] += row[f"{key}_s"]
            rows.append(row)
            print(f"[{i + 1}/{len(specs)}] {spec.hash} " + " ".join(f"{key} {row[key]:.4f}" for key in runs),
                  file=sys.stderr, flush=True)

    def column(key):
        return [r[key] for r in rows]

    def likelihood(key):  # exp(-loss): the geometric mean of the probability given to the true class
        return [math.exp(-r[f"{key}_loss"]) for r in rows]

    truth = {"longer": column("longer")}
    if args.repeat:  # the mean of two seeds: a ground truth with half the variance of one training's noise
        truth["mean of both seeds"] = [(r["longer"] + r["longer_again"]) / 2 for r in rows]
    agreement = {}  # name -> (Kendall tau, its 95 % bootstrap interval over the networks, Spearman rho or None)

    def agree(name, a, b, rho=True):
        agreement[name] = (kendall_tau(a, b), kendall_tau_interval(a, b), spearman_rho(a, b) if rho else None)

    size = {"MAdds": [count_madds(spec) for spec in specs], "params": [count_params(spec) for spec in specs]}
    scorers = ([] if truth_only else ["supernet"]) + ([] if compared is None else ["compared"])
    for name, acc in truth.items():
        for scorer in scorers:
            agree(f"{scorer} vs {name}", column(scorer), acc)
            agree(f"{scorer} likelihood vs {name}", likelihood(scorer), acc)
        agree(f"proxy vs {name}", column("proxy"), acc, rho=False)
        agree(f"proxy likelihood vs {name}", likelihood("proxy"), acc, rho=False)
        for measure, values in size.items():  # predictors that know only a network's size, for scale
            agree(f"{measure} vs {name}", values, acc, rho=False)
    if not truth_only:
        agree("supernet vs proxy", column("supernet"), column("proxy"))
        agree("supernet vs its rescoring", column("supernet"), column("supernet_again"), rho=False)
        agree("supernet likelihood vs its rescoring", likelihood("supernet"), likelihood("supernet_again"), rho=False)
    # paired over the networks: likelihood over accuracy as a score, and --compare over --supernet
    contests = [("proxy likelihood over accuracy", column("proxy"), likelihood("proxy"))]
    if not truth_only:
        contests.insert(0, ("supernet likelihood over accuracy", column("supernet"), likelihood("supernet")))
    if compared is not None:
        contests += [("compared over supernet, accuracy", column("supernet"), column("compared")),
                     ("compared over supernet, likelihood", likelihood("supernet"), likelihood("compared"))]
    gains = {f"{label} vs {name}": (kendall_tau(new, acc) - kendall_tau(old, acc),
                                    kendall_tau_gain_interval(old, new, acc))
             for label, old, new in contests for name, acc in truth.items()}
    ceilings = {}  # what a perfect predictor would reach against each ground truth
    if args.repeat:
        agree("longer vs its repeat", column("longer"), column("longer_again"), rho=False)
        tau_repeat = agreement["longer vs its repeat"][0]
        if math.isfinite(tau_repeat):
            ceilings = {"longer": tau_ceiling(tau_repeat), "mean of both seeds": tau_ceiling(tau_repeat, seeds=2)}
    result = {
        "cpu": cpu_model(), "threads": torch.get_num_threads() if proxy.threads is None else proxy.threads,
        "networks": len(rows), "data": experiment.data.name, "train_images": len(splits.train),
        "proxy_train_images": len(proxy_splits.train),
        "proxy_recipe": dataclasses.asdict(proxy) | {"evaluate_test": False},
        "longer_epochs": args.epochs,
        "agreement": {name: {"kendall_tau": tau, "kendall_tau_95": list(interval), "spearman_rho": rho}
                      for name, (tau, interval, rho) in agreement.items()},
        "perfect_predictor_tau": ceilings,
        "gains": {name: {"kendall_tau": gain, "kendall_tau_95": list(interval)}
                  for name, (gain, interval) in gains.items()},
        "seconds": cost,
        "peak_memory_mib": peak_rss_kib() / 1024,
        "rows": rows,
    }
    if not truth_only:
        result |= {
            "supernet_settings": {k: trained_with[k] for k in SETTINGS_SHOWN},
            "bn_batches": bn_batches, "score_precision": resolve_scoring_precision(score.precision),
            "seconds_per_candidate_scored": cost["supernet_score"] / len(rows),
        }
    if compared is not None:
        result["compared_settings"] = {k: compared_with[k] for k in SETTINGS_SHOWN} | {"path": args.compare}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"CPU: {result['cpu']}, {result['threads']} threads; {len(rows)} networks, data {d.name} "
          f"({len(splits.train):,} training images for the supernet and the longer trainings, "
          f"{len(proxy_splits.train):,} for the proxies)" + ("" if truth_only else
          f", supernet {settings_text(trained_with)}"
          + ("" if compared is None else f"; compared: {args.compare}, {settings_text(compared_with)}")
          + f", BN recalibration on {bn_batches} batches, "
          f"scoring in {result['score_precision']}"))
    notes = {"supernet vs its rescoring": f"BatchNorm recalibrated on the batches of seeds {score.seed} and "
                                          f"{score.seed + 1}: the scoring's own agreement",
             "supernet likelihood vs longer": "the supernet's val likelihood, exp(-loss), in place of its accuracy",
             "longer vs its repeat": f"seeds {longer.seed} and {again.seed}: the ground truth's own agreement"}
    print(f"{'':<44}{'Kendall tau':>12}{'(95 % interval)':>18}{'Spearman rho':>14}")
    for name, (tau, (low, high), rho) in agreement.items():
        print(f"{name:<44}{tau:>12.3f}{f'({low:.2f}, {high:.2f})':>18}{'' if rho is None else f'{rho:.3f}':>14}"
              + (f"  ({notes[name]})" if name in notes else ""))
    for name, (gain, (low, high)) in gains.items():
        print(f"{name}: Kendall tau {gain:+.3f} (paired 95 % interval {low:+.2f} to {high:+.2f})")
    for name, tau in ceilings.items():
        print(f"a perfect predictor vs {name}: Kendall tau about {tau:.2f} (from the repeat's agreement, "
              "for normally distributed noise: the ceiling of any predictor's tau against it)")
    scoring = "" if truth_only else (
        f"supernet training {cost['supernet_train']:.1f}, supernet scoring {cost['supernet_score']:.1f} "
        f"({result['seconds_per_candidate_scored']:.2f} s per candidate), ")
    print(f"cost (s): {scoring}proxy trainings {cost['proxy']:.1f}, "
          f"{args.epochs:g}-epoch trainings {cost['longer']:.1f}" + (" (two seeds)" if args.repeat else ""))
    print(f"peak memory: {result['peak_memory_mib']:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
