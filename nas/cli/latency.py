"""``nas latency predict | measure``: one network's latency from a table or end to end."""

from __future__ import annotations

import argparse

from nas.cli import args as A
from nas.cli.device import measuring_device, on_device, remote_options, split_target


def register(sub: argparse._SubParsersAction) -> None:
    lat = sub.add_parser("latency", help="predict or measure one network's latency")
    lat_sub = lat.add_subparsers(dest="latency_command", required=True, metavar="ACTION")

    pred = lat_sub.add_parser("predict", help="latency of a spec from a lookup table")
    pred.add_argument("table", metavar="TABLE", help="a table folder (any device's), or a space's folder of tables")
    pred.add_argument("spec", metavar="SPEC", help="spec JSON, spec string, space YAML (baseline) or checkpoint")
    pred.add_argument("--device", default="this",
                      help="with a space's folder: the device whose table to use: a device id, or the URL of its "
                           "measurement server (default: this machine)")
    pred.add_argument("--token-file", metavar="FILE", help="with --device URL: the server's token")
    pred.add_argument("--breakdown", action="store_true", help="also print every unit's entry")
    pred.add_argument("--json", action="store_true")
    pred.set_defaults(func=cmd_predict)

    meas = lat_sub.add_parser("measure", help="measure a spec or an ONNX file end to end")
    meas.add_argument("model", metavar="SPEC|MODEL.onnx")
    meas.add_argument("--runtime", default="onnxruntime", help="onnxruntime (default) or torch (specs only)")
    meas.add_argument("--threads", type=A.threads, default=1)
    meas.add_argument("--json", action="store_true")
    remote_options(meas, "measure")
    meas.set_defaults(func=cmd_measure)


def cmd_predict(args: argparse.Namespace) -> int:
    from nas.cli import print_json
    from nas.latency import load_predictor
    from nas.latency.catalog import resolve_table
    from nas.load import load_spec_arg

    spec = load_spec_arg(args.spec)
    url, device = split_target(args.device)  # a server's device is "this" device within the block
    with measuring_device(url, args.token_file):
        table = resolve_table(args.table, device=device, build=False)
    predictor = load_predictor(table)
    ms = predictor.predict(spec)
    if args.json:
        out = {"predicted_ms": ms, "raw_sum_ms": predictor.raw_sum(spec), "spec_hash": spec.hash,
               "device": predictor.device_id, "table": str(predictor.table.path)}
        if args.breakdown:
            out["units"] = predictor.unit_breakdown(spec).to_dict("records")
        print_json(out)
        return 0
    if args.breakdown:
        print(predictor.unit_breakdown(spec).to_string(index=False))
    print(f"predicted latency: {ms:.4f} ms on device {predictor.device_id} ({predictor.table.runtime}, "
          f"{predictor.table.threads} thread(s))")
    return 0


@on_device
def cmd_measure(args: argparse.Namespace) -> int:
    from nas.cli import print_json
    from nas.latency import MeasureConfig, measure_onnx, measure_spec
    from nas.latency.device import this_device
    from nas.load import load_spec_arg

    config = MeasureConfig(runtime=args.runtime, threads=args.threads)
    if args.model.endswith(".onnx"):
        m = measure_onnx(args.model, config)
    else:
        m = measure_spec(load_spec_arg(args.model), config)
    device = this_device(config.runtime, config.threads)["id"]
    if args.json:
        print_json({"median_ms": m.median_ms, "iqr_ms": m.iqr_ms, "runs": m.runs, "runtime": config.runtime,
                    "threads": config.threads, "device": device})
    else:
        print(f"median {m.median_ms:.4f} ms, IQR {m.iqr_ms:.4f} ms over {m.runs} runs "
              f"({config.runtime}, {config.threads} thread(s), device {device})")
    return 0
