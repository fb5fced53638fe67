"""Argument types of the command line: every number is read strictly (ASCII digits, finite, within
bounds) and every output folder is checked before any work starts.

``int()`` and ``float()`` accept more than a person means: ``float("nan")``, ``float("inf")``,
``float("1e999")`` (inf), ``int("١٦")`` (16, Arabic-Indic digits), ``int("1_000")``. These types
accept only ``[+-]digits`` and ``[+-]digits[.digits][e[+-]digits]`` in ASCII, then check the range;
argparse turns their ``ArgumentTypeError`` into one line and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from typing import Callable

from nas.errors import NasError

_INT = re.compile(r"[+-]?[0-9]{1,18}", re.ASCII)
_FLOAT = re.compile(r"[+-]?(?:[0-9]{1,30}(?:\.[0-9]{0,30})?|\.[0-9]{1,30})(?:[eE][+-]?[0-9]{1,3})?", re.ASCII)

MAX_SEED = 2**32 - 1      # numpy's seeds
MAX_STEPS = 10**9
MAX_EPOCHS = 10**4
MAX_BATCH = 1 << 16
MAX_THREADS = 4096        # the parse limit; more than this machine's cores needs --force-threads
MAX_IMAGES = 10**9


def integer(minimum: int, maximum: int) -> Callable[[str], int]:
    """An argparse type: a whole number in [minimum, maximum]."""

    def parse(text: str) -> int:
        if not _INT.fullmatch(text.strip()):
            raise argparse.ArgumentTypeError(f"expected a whole number (ASCII digits), got {_shown(text)}")
        value = int(text)
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be between {minimum:,} and {maximum:,}, got {value:,}")
        return value

    parse.__name__ = "integer"
    return parse


def number(minimum: float, maximum: float, *, above: bool = False, below: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [minimum, maximum] (``above``/``below``: strictly)."""

    def parse(text: str) -> float:
        if not _FLOAT.fullmatch(text.strip()):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {_shown(text)}")
        value = float(text)
        low_ok = value > minimum if above else value >= minimum
        high_ok = value < maximum if below else value <= maximum
        if not math.isfinite(value) or not low_ok or not high_ok:
            low = f"> {minimum:g}" if above else f">= {minimum:g}"
            high = f"< {maximum:g}" if below else f"<= {maximum:g}"
            raise argparse.ArgumentTypeError(f"must be {low} and {high}, got {_shown(text)}")
        return value

    parse.__name__ = "number"
    return parse


def output_dir(text: str) -> str:
    """An argparse type: a folder outputs can go to (see :func:`nas.io.check_output_dir`), checked
    at parse time so that a command fails in a second, not after its work."""
    from nas.io import check_output_dir

    try:
        check_output_dir(text)
    except NasError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def url(text: str) -> str:
    """An argparse type: a URL or storage string of printable characters, at most 4096 of them."""
    if len(text) > 4096 or not text.isprintable() or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError("expected a URL (printable, no spaces, at most 4096 characters)")
    return text


def cores() -> int:
    return os.cpu_count() or 1


def check_threads(args: argparse.Namespace) -> None:
    """``--threads`` above this machine's cores oversubscribes it; refused unless ``--force-threads``."""
    threads = getattr(args, "threads", None)
    if threads is not None and threads > cores() and not getattr(args, "force_threads", False):
        raise NasError(f"--threads {threads}: this machine has {cores()} cores (add --force-threads to use more)")


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:37] + "...")


# The types the commands use.
seed = integer(0, MAX_SEED)
threads = integer(1, MAX_THREADS)
steps = integer(1, MAX_STEPS)
images = integer(1, MAX_IMAGES)
batch_size = integer(1, MAX_BATCH)
epochs = number(0, MAX_EPOCHS, above=True)
fraction = number(0, 1, above=True)            # (0, 1]
open_fraction = number(0, 1, above=True, below=True)  # (0, 1)
width_mult = number(0, 64, above=True)
learning_rate = number(0, 100, above=True)
