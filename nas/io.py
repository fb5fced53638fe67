"""Small file helpers shared by every stage: atomic writes and YAML files read with one-line errors."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

import yaml

from nas.errors import NasError


def write_atomic(path: str | Path, write: Callable[[IO], Any], binary: bool = False) -> Path:
    """Write ``path`` through ``write(handle)`` into a temporary file in the same folder, fsync it,
    then ``os.replace`` it: a crash leaves the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda handle: handle.write(text))


def read_yaml(path: str | Path, error: type[NasError], what: str) -> Any:
    """Parse a YAML file; a missing file or bad YAML raises ``error`` with one line."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
