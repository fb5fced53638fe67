"""``nas lut build | export-kernels | import | validate``: latency lookup tables."""

from __future__ import annotations

import argparse
import time

from nas.cli import args as A
from nas.cli.device import on_device, remote_options


def _protocol_options(p: argparse.ArgumentParser) -> None:
    from nas.latency.measure import TABLE_PROTOCOL as d

    p.add_argument("--threads", type=A.threads, default=1, help="intra-op threads (default 1)")
    p.add_argument("--statistic", default="median",
                   help="per-pass statistic: median (default), p10 or min (robust on a machine shared with other jobs)")
    p.add_argument("--passes", type=A.integer(1, 10**4), default=d["passes"],
                   help=f"interleaved passes over each group (default {d['passes']})")
    p.add_argument("--runs", type=A.integer(1, 10**6), default=d["runs"], help=f"timed calls per graph and pass (default {d['runs']})")
    p.add_argument("--reference-runs", type=A.integer(0, 10**6), default=d["reference_runs"],
                   help="calls of the reference network (the space's baseline) framing every burst; latencies are "
                        "ratios to it on one time base, robust to the machine changing speed "
                        f"(default {d['reference_runs']}; 0: absolute times, unpaired)")


def _protocol_config(args: argparse.Namespace, **extra):
    from nas.latency import MeasureConfig

    return MeasureConfig(threads=args.threads, statistic=args.statistic, passes=args.passes, runs=args.runs,
                         reference_runs=args.reference_runs, **extra)


def _measure_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtime", default="onnxruntime", help="onnxruntime (default) or torch")
    p.add_argument("--group", type=A.integer(1, 10**4), default=16,
                   help="units timed interleaved together and written together (default 16)")
    _protocol_options(p)


def _what_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--space", metavar="SPACE.yaml", help="every unit this search space can produce")
    p.add_argument("--spec", action="append", default=[], metavar="SPEC",
                   help="also the units of this network (repeatable; JSON file, spec string, checkpoint)")
    p.add_argument("--narrower", action="store_true",
                   help="also the narrower widths (steps of 8) NetAdapt can try on each --spec")


def register(sub: argparse._SubParsersAction) -> None:
    lut = sub.add_parser("lut", help="build, import and validate latency lookup tables")
    lut_sub = lut.add_subparsers(dest="lut_command", required=True, metavar="ACTION")

    build = lut_sub.add_parser("build", help="measure every unit of a space on this machine (resumable)")
    _what_options(build)
    _measure_options(build)
    build.add_argument("--out", type=A.output_dir, metavar="DIR",
                       help="table folder (rerun to resume); default with --space: this machine's table in the "
                            "space's folder, latency_tables/SPACE/DEVICE-ID (found complete: nothing is measured)")
    build.add_argument("--no-progress", action="store_true")
    build.add_argument("--json", action="store_true")
    remote_options(build, "measure")
    build.set_defaults(func=cmd_build)

    export = lut_sub.add_parser("export-kernels", help="write the units as ONNX graphs to measure on another device")
    _what_options(export)
    _protocol_options(export)
    export.add_argument("--out", required=True, type=A.output_dir, metavar="DIR")
    export.add_argument("--no-progress", action="store_true")
    export.set_defaults(func=cmd_export)

    imp = lut_sub.add_parser("import", help="turn a kernels folder measured on a device into a table")
    imp.add_argument("kernels", metavar="KERNELS_DIR")
    imp.add_argument("--out", required=True, type=A.output_dir, metavar="DIR")
    imp.add_argument("--json", action="store_true")
    imp.set_defaults(func=cmd_import)

    adapt = lut_sub.add_parser("adapt", help="a table of this machine (or of --device URL) from another "
                               "device's table and a few networks measured on it")
    adapt.add_argument("source", metavar="SOURCE_TABLE", help="a table of another device (same space)")
    adapt.add_argument("--samples", type=A.integer(2, 500), default=10,
                       help="whole networks measured here to fit the source's entries (default 10)")
    adapt.add_argument("--out", required=True, type=A.output_dir, metavar="DIR")
    adapt.add_argument("--json", action="store_true")
    adapt.add_argument("--no-progress", action="store_true")
    remote_options(adapt, "measure the networks")
    adapt.set_defaults(func=cmd_adapt)

    val = lut_sub.add_parser("validate", help="predicted vs measured latency on held-out sampled networks")
    val.add_argument("table", metavar="TABLE")
    val.add_argument("--samples", type=A.integer(1, 10**5), default=50)
    val.add_argument("--seed", type=A.seed, default=0)
    val.add_argument("--out", type=A.output_dir, metavar="DIR", help="write validation.csv/.json/.png here")
    val.add_argument("--json", action="store_true")
    val.add_argument("--no-progress", action="store_true")
    remote_options(val, "measure the networks")
    val.set_defaults(func=cmd_validate)


def _inputs(args: argparse.Namespace):
    from nas.load import load_spec_arg
    from nas.spec import load_space

    space = load_space(args.space) if args.space else None
    specs = [load_spec_arg(s) for s in args.spec]
    return space, specs


@on_device
def cmd_build(args: argparse.Namespace) -> int:
    from nas.cli import print_json
    from nas.errors import NasError
    from nas.latency import build_table, load_table

    from nas.latency.catalog import default_table_folder
    from nas.latency.device import this_device

    config = _protocol_config(args, runtime=args.runtime, group=args.group)
    space, specs = _inputs(args)
    if space is None and not specs:
        raise NasError("give --space SPACE.yaml and/or --spec SPEC")
    if args.out is None and space is None:
        raise NasError("give --out DIR (the table folder) when building from --spec alone")
    device = this_device(config.runtime, config.threads)["id"]
    out = args.out or default_table_folder(space) / device
    start = time.perf_counter()
    directory = build_table(out, space, specs, config, narrower=args.narrower,
                            progress=not args.no_progress)
    table = load_table(directory)
    summary = {"table": str(directory), "device": table.device_id, "entries": len(table),
               "seconds": round(time.perf_counter() - start, 1),
               "build_seconds_total": table.meta.get("build_seconds"),
               "calibration_fit_max_abs_error": (table.calibration or {}).get("fit_max_abs_error")}
    if args.json:
        print_json(summary)
    else:
        print(f"table {directory} (device {summary['device']}): {summary['entries']} entries, {summary['seconds']} s this run "
              f"({summary['build_seconds_total']} s measuring in total)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from nas.latency.transfer import export_for_device

    space, specs = _inputs(args)
    manifest = export_for_device(args.out, space, specs, narrower=args.narrower, config=_protocol_config(args),
                                 progress=not args.no_progress)
    print(f"wrote {manifest}; copy {manifest.parent} to the device and run: "
          f"python standalone_measure.py {manifest.parent.name} (or serve measurements to `--device URL` commands: "
          f"python device_server.py)")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from nas.cli import print_json
    from nas.latency import load_table
    from nas.latency.transfer import import_results

    directory = import_results(args.kernels, args.out)
    table = load_table(directory)
    if args.json:
        print_json({"table": str(directory), "entries": len(table), "calibrated": table.calibration is not None})
    else:
        print(f"table {directory}: {len(table)} entries imported")
    return 0


@on_device
def cmd_adapt(args: argparse.Namespace) -> int:
    from nas.cli import print_json
    from nas.latency import load_table
    from nas.latency.adapt import adapt_table

    start = time.perf_counter()
    directory = adapt_table(args.source, args.out, samples=args.samples, progress=not args.no_progress)
    table = load_table(directory)
    summary = {"table": str(directory), "device": table.device_id, "adapted_from": table.meta["adapted_from"]["device"],
               "samples": table.meta["adapted_samples"], "entries": len(table),
               "seconds": round(time.perf_counter() - start, 1),
               "calibration_fit_max_abs_error": table.calibration["fit_max_abs_error"]}
    if args.json:
        print_json(summary)
    else:
        print(f"table {directory} (device {summary['device']}): {summary['entries']} entries of device "
              f"{summary['adapted_from']} fitted on {summary['samples']} networks measured on it in "
              f"{summary['seconds']} s; check it with `nas lut validate {directory}"
              + (f" --device {args.device}`" if args.device else "`"))
    return 0


@on_device
def cmd_validate(args: argparse.Namespace) -> int:
    from nas.cli import print_json
    from nas.latency.validate import validate_table

    from nas.latency.catalog import resolve_table

    table = resolve_table(args.table, build=False)
    result = validate_table(table, samples=args.samples, seed=args.seed, out_dir=args.out,
                            progress=not args.no_progress and not args.json)
    s = result.summary()
    if args.json:
        print_json(s)
        return 0
    print(f"{'predictor':<14}{'within ±5 %':>12}{'within ±10 %':>14}{'MAPE':>8}{'Spearman':>10}")
    rows = (("lookup table", ""), ("MAdds-linear", "madds_"), ("raw sum", "raw_sum_"), ("no drift adj.", "unadjusted_"))
    for name, prefix in rows:
        print(f"{name:<14}{s[prefix + 'within_5']:>12.1%}{s[prefix + 'within_10']:>14.1%}"
              f"{s[prefix + 'mape']:>8.1%}{s[prefix + 'spearman']:>10.3f}")
    print(f"drift: the calibration networks ran {1 / s['drift']:.3f}x their build-time latency now; measurements "
          f"are multiplied by {s['drift']:.3f} before comparing ('no drift adj.': without it)")
    if args.out:
        print(f"wrote {args.out}/validation.csv, validation.json, validation.png")
    return 0
