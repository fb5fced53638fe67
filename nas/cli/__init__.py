"""The ``nas`` command line: argument parsing and printing only.

Every command lives in a module of this package that exposes ``register(subparsers)``; the
command itself calls a plain function of the library. A :class:`~nas.errors.NasError` becomes one
line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings
from typing import Any, Sequence

from nas.errors import NasError

# One line per command group; each module has ``register(subparsers)``.
COMMAND_MODULES = [
    "nas.cli.arch",
    "nas.cli.train",
    "nas.cli.search",
    "nas.cli.export",
    "nas.cli.lut",
    "nas.cli.latency",
    "nas.cli.netadapt",
    "nas.cli.run",
]


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="nas", description="Platform-aware NAS for CPUs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def print_json(obj: Any) -> None:
    """Print one JSON object on stdout (the ``--json`` output of every command)."""
    print(json.dumps(obj, indent=2, sort_keys=False, default=str))


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"nas: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    formatwarning, warnings.formatwarning = warnings.formatwarning, one_line_warning  # one line, like errors
    try:
        return _run(argv)
    finally:
        warnings.formatwarning = formatwarning


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except NasError as exc:
        print(f"nas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nas: interrupted (work done so far is kept; run the same command again to resume)", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
