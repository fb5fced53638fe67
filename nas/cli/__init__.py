"""The ``nas`` command line: argument parsing and printing only.

Every command lives in a module of this package that exposes ``register(subparsers)``; the
command itself calls a plain function of the library. A :class:`~nas.errors.NasError` (and bad
usage) becomes one line on stderr and exit status 2; so do a RecursionError or MemoryError (input
too deep or too large for a check to have caught it). Any other exception is a bug: one line, a
pointer to ``--debug`` (which shows the traceback) and exit status 3. Everything printed on stderr
is scrubbed of URL secrets (:func:`nas.redact.scrub`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback
import warnings
from typing import Any, Sequence

from nas.errors import NasError

EXIT_ERROR = 2      # the user's input: NasError, bad usage, input too deep or too large
EXIT_BUG = 3        # an unexpected exception (run again with --debug for the traceback)
EXIT_INTERRUPTED = 130

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
    "nas.cli.device",
    "nas.cli.supernet",
]
# Commands that run on a target device without torch: only their own module is registered (other
# command modules import torch while registering).
TORCH_FREE_COMMANDS = {"device": "nas.cli.device"}


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        from nas.redact import scrub

        self.exit(EXIT_ERROR, f"{self.prog}: error: {scrub(_one_line(message))}\n")


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> ArgumentParser:
    parser = ArgumentParser(prog="nas", description="Platform-aware NAS for CPUs.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error "
                                                             "(also accepted after the command)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in modules:
        importlib.import_module(name).register(sub)
    _add_force_threads(parser)
    return parser


def _add_force_threads(parser: argparse.ArgumentParser) -> None:
    """Every command with ``--threads`` also gets ``--force-threads`` (more threads than cores)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_force_threads(child)
    if "--threads" in parser._option_string_actions and "--force-threads" not in parser._option_string_actions:
        parser.add_argument("--force-threads", action="store_true",
                            help="allow --threads above this machine's core count")


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = " / ".join(lines) if len(lines) <= 3 else " / ".join(lines[:3]) + " ..."
    return line[:2000]


def _say(prefix: str, message: Any) -> None:
    from nas.redact import scrub

    print(f"nas: {prefix}{scrub(_one_line(message))}", file=sys.stderr)


def print_json(obj: Any) -> None:
    """Print one JSON object on stdout (the ``--json`` output of every command)."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=False, default=str, allow_nan=False)
    except ValueError:  # NaN or an infinity: not JSON, never printed as such
        raise NasError("the result holds a number that is not finite (NaN or infinity); is the input (a table's "
                       "median_ms, say) corrupt?") from None
    print(text)


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    from nas.redact import scrub

    return f"nas: warning: {scrub(_one_line(message))}\n"


def main(argv: Sequence[str] | None = None) -> int:
    formatwarning, warnings.formatwarning = warnings.formatwarning, one_line_warning  # one line, like errors
    try:
        return _run(argv)
    finally:
        warnings.formatwarning = formatwarning


def _run(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        torch_free = TORCH_FREE_COMMANDS.get(argv[0]) if argv else None
        parser = build_parser([torch_free] if torch_free else COMMAND_MODULES)
        args = parser.parse_args(argv)
        from nas.cli.args import check_threads

        check_threads(args)
        status = args.func(args)
    except NasError as exc:
        _say("error: ", exc)
        return EXIT_ERROR
    except KeyboardInterrupt:
        _say("", "interrupted (work done so far is kept; run the same command again to resume)")
        return EXIT_INTERRUPTED
    except RecursionError:
        _say("error: ", "the input is nested too deeply to read")
        return EXIT_ERROR
    except MemoryError:
        _say("error: ", "the input needs more memory than this machine has (reduce its sizes)")
        return EXIT_ERROR
    except Exception as exc:  # the last line of defence: a bug, not the user's input
        if debug:
            from nas.redact import scrub

            sys.stderr.write(scrub(traceback.format_exc()))
        _say("internal error: ", f"{type(exc).__name__}: {exc}"[:300]
             + ("" if debug else " (run again with --debug for the traceback)"))
        return EXIT_BUG
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
