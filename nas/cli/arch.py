"""``nas arch show`` and ``nas arch sample``."""

from __future__ import annotations

import argparse

from nas.cli import args as A
from nas.load import load_spec_arg
from nas.spec import ArchSpec, count_madds, count_params, layer_table, load_space

from nas.spec.arch import MAX_CHANNELS, MAX_CLASSES, MAX_RESOLUTION


def register(sub: argparse._SubParsersAction) -> None:
    arch = sub.add_parser("arch", help="inspect architectures and spaces")
    arch_sub = arch.add_subparsers(dest="arch_command", required=True, metavar="ACTION")

    show = arch_sub.add_parser("show", help="layer table, params and MAdds of a network",
                               description="NAME is mobilenetv3-large|mobilenetv3-small, a spec JSON file, a space "
                                           "YAML (its baseline), a checkpoint, or a spec string.")
    show.add_argument("network", metavar="NAME|SPEC.json|SPACE.yaml")
    show.add_argument("--width-mult", type=A.width_mult)
    show.add_argument("--num-classes", type=A.integer(1, MAX_CLASSES))
    show.add_argument("--resolution", type=A.integer(1, MAX_RESOLUTION))
    show.add_argument("--in-channels", type=A.integer(1, MAX_CHANNELS))
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(func=cmd_show)

    sample = arch_sub.add_parser("sample", help="sample a network from a search space")
    sample.add_argument("space", metavar="SPACE.yaml")
    sample.add_argument("--seed", type=A.seed, required=True)
    sample.add_argument("--json", action="store_true", help="print the spec as JSON")
    sample.set_defaults(func=cmd_sample)


def describe(spec: ArchSpec) -> dict:
    """Summary used by ``--json`` outputs: counts, hash, string form and the spec itself."""
    return {"params": count_params(spec), "madds": count_madds(spec), "hash": spec.hash,
            "string": spec.to_string(), "spec": spec.to_dict()}


def format_layer_table(spec: ArchSpec) -> str:
    header = ("#", "input", "operator", "exp", "out", "SE", "NL", "s", "params", "MAdds")
    rows = [header]
    for i, r in enumerate(layer_table(spec)):
        rows.append((str(i), r.input, r.operator, "-" if r.exp is None else str(r.exp), str(r.out),
                     "yes" if r.se else "-", r.act or "-", str(r.stride), f"{r.params:,}", f"{r.madds:,}"))
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if c in (0, 3, 4, 7, 8, 9) else cell.ljust(w)
                       for c, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def cmd_show(args: argparse.Namespace) -> int:
    from nas.cli import print_json

    spec = load_spec_arg(args.network, width_mult=args.width_mult, num_classes=args.num_classes,
                         resolution=args.resolution, in_channels=args.in_channels)
    if args.json:
        print_json(describe(spec))
        return 0
    print(format_layer_table(spec))
    print()
    print(f"params {count_params(spec):,}   MAdds {count_madds(spec) / 1e6:.2f} M   hash {spec.hash}")
    print(f"spec   {spec.to_string()}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    space = load_space(args.space)
    spec = space.sample(args.seed)
    if args.json:
        print(spec.to_json())
    else:
        print(spec.to_string())
    return 0
