"""``nas export``: write a network as spec JSON, ONNX, TorchScript and/or int8 ONNX, with a model card."""

from __future__ import annotations

import argparse

from nas.cli import args as A


def register(sub: argparse._SubParsersAction) -> None:
    from nas.config import EXPORT_FORMATS as FORMATS

    p = sub.add_parser("export", help="export a network (ONNX, TorchScript, int8 ONNX, JSON) with a model card",
                       description="SOURCE is a checkpoint (its trained weights), a run folder of `nas train --out`, "
                                   "a spec JSON file, a spec string or a named network (fresh weights, seed 0). "
                                   "Every exported model is checked against PyTorch (max abs diff <= 1e-4).")
    p.add_argument("source", metavar="SOURCE", help="CHECKPOINT.pt | RUN_DIR | SPEC.json | spec string | name")
    p.add_argument("--format", dest="formats", action="append", choices=FORMATS, required=True,
                   help="repeat for several formats")
    p.add_argument("--out", required=True, type=A.output_dir, help="output folder (created if missing)")
    p.add_argument("--table", help="latency table folder, or a space's folder of tables (this machine's is used, built "
                                   "first if missing): adds the predicted latency to the card")
    p.add_argument("--data", help="dataset (fashion-mnist, cifar10, folder): needed for onnx-int8; also gives "
                                  "class names and normalisation")
    p.add_argument("--data-dir", help="dataset folder")
    p.add_argument("--threads", type=A.threads, default=1, help="onnxruntime threads for the latency measurement")
    p.add_argument("--no-measure", action="store_true", help="skip the latency measurement")
    p.add_argument("--calibration-images", type=A.images, default=300, help="int8 calibration images (default 300)")
    p.add_argument("--eval-images", type=A.images, default=2000,
                   help="test images for the fp32 vs int8 accuracy (default 2000)")
    p.add_argument("--seed", type=A.seed, default=0, help="weights of a bare spec; calibration sample")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from nas.cli import print_json
    from nas.export import export

    table = None
    if args.table:
        from nas.latency.catalog import resolve_table

        table = str(resolve_table(args.table, progress=not args.no_progress))
    result = export(args.source, args.out, args.formats, table=table, data=args.data, data_dir=args.data_dir,
                    measure=not args.no_measure, threads=args.threads, calibration_images=args.calibration_images,
                    eval_images=args.eval_images, seed=args.seed, progress=not args.no_progress)
    summary = result.summary()
    if args.json:
        print_json(summary)
        return 0
    print(format_summary(summary))
    return 0


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} ms"


def format_summary(summary: dict) -> str:
    lines = [f"wrote {len(summary['files'])} files to {summary['out']}:"]
    lines += [f"  {f}" for f in summary["files"]]
    for fmt, diff in summary["checks"].items():
        lines.append(f"{fmt:<12} max abs diff vs PyTorch {diff:.2e}")
    lines.append(f"latency      measured {_ms(summary['measured_ms'])}   predicted {_ms(summary['predicted_ms'])}")
    int8 = summary.get("int8")
    if int8:
        lines.append(f"int8         accuracy {100 * int8['fp32_acc']:.2f} % -> {100 * int8['int8_acc']:.2f} % "
                     f"({int8['eval_images']} test images), latency {_ms(int8['fp32_ms'])} -> {_ms(int8['int8_ms'])}")
        lines.append(f"             {int8['note']}")
    return "\n".join(lines)
