"""File helpers shared by every stage: the boundary for untrusted files and the one way outputs are written.

Reading (untrusted input): :func:`read_text_bounded` refuses a file larger than its limit before
reading it; :func:`read_yaml` parses YAML with a loader that refuses anchors and aliases (no
"billion laughs") and nesting deeper than :data:`MAX_NESTING`; :func:`parse_json` refuses NaN and
infinities, numbers that overflow and nesting deeper than :data:`MAX_NESTING`. Every failure is the
caller's :class:`~nas.errors.NasError` subclass with one line.

Writing: :func:`check_output_dir` says before any work whether a folder can take outputs (exists
or can be created, is a folder, is writable, holds no symlink); :func:`atomic_path` /
:func:`write_atomic` write a file into a temporary name in the same folder and ``os.replace`` it
into place, so a crash leaves the old file or the new one, and a symlink already at the target
name is replaced, never followed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import yaml

from nas.errors import NasError

MAX_NESTING = 32                  # lists/mappings inside each other in a YAML or JSON document
MAX_YAML_BYTES = 1 << 20          # a space or experiment file: 1 MiB (the shipped ones are < 4 KiB)
MAX_JSON_BYTES = 16 << 20         # a spec JSON file, a table's meta.json, device.json: 16 MiB
MAX_MANIFEST_BYTES = 64 << 20     # a kernels manifest.json or results.csv (tens of thousands of units)


# --- reading -----------------------------------------------------------------------------------

def read_text_bounded(path: str | Path, error: type[NasError], what: str, max_bytes: int) -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes``; anything else raises ``error``."""
    path = Path(path)
    try:
        if not path.is_file():
            raise error(f"{what} not found: {path}")
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{path}: {what} is {size:,} bytes, more than the limit of {max_bytes:,}")
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise error(f"cannot read {what} {path} ({getattr(exc, 'strerror', None) or exc})") from None
    if len(data) > max_bytes:
        raise error(f"{path}: {what} is more than the limit of {max_bytes:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{path}: {what} is not UTF-8 text") from None


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader without anchors/aliases and with bounded nesting.

    Anchors and aliases are refused when scanned, so a "billion laughs" document is refused after
    reading its first ``&``, before anything is expanded."""

    def fetch_alias(self):
        raise yaml.YAMLError("aliases (*name) are not allowed")

    def fetch_anchor(self):
        raise yaml.YAMLError("anchors (&name) are not allowed")

    def compose_node(self, parent, index):
        depth = getattr(self, "_nas_depth", 0) + 1
        if depth > MAX_NESTING:
            raise yaml.YAMLError(f"nested deeper than {MAX_NESTING} levels")
        self._nas_depth = depth
        try:
            return super().compose_node(parent, index)
        finally:
            self._nas_depth = depth - 1


def parse_yaml(text: str | bytes, error: type[NasError], where: str) -> Any:
    """Parse one YAML document with :class:`_BoundedLoader`; any failure raises ``error``."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise error(f"{where}: not UTF-8 text") from None
    if len(text) > MAX_YAML_BYTES:
        raise error(f"{where}: more than the limit of {MAX_YAML_BYTES:,} characters")
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()
        raise error(f"{where}: not valid YAML ({first[0] if first else type(exc).__name__})") from None
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:  # e.g. a bad timestamp
        raise error(f"{where}: not valid YAML ({type(exc).__name__}: {str(exc)[:120]})") from None


def read_yaml(path: str | Path, error: type[NasError], what: str, max_bytes: int = MAX_YAML_BYTES) -> Any:
    """Parse a YAML file of at most ``max_bytes``; a missing, large or bad file raises ``error`` with one line."""
    text = read_text_bounded(path, error, what, max_bytes)
    return parse_yaml(text, error, str(path))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} overflows")
    return value


def parse_json(text: str | bytes, error: type[NasError], where: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse JSON text: no NaN/Infinity, finite numbers, nesting at most :data:`MAX_NESTING`."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise error(f"{where}: not UTF-8 text") from None
    if len(text) > max_bytes:
        raise error(f"{where}: more than the limit of {max_bytes:,} characters")
    try:
        data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: malformed JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # NaN, 1e999, 4300+ digit integers, deep nesting
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:120]
        raise error(f"{where}: malformed JSON ({reason})") from None
    if nesting(data) > MAX_NESTING:
        raise error(f"{where}: JSON nested deeper than {MAX_NESTING} levels")
    return data


def nesting(data: Any) -> int:
    """How deep lists and mappings sit inside each other in parsed data (iterative, no recursion)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, (list, tuple)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item)
    return deepest


def read_json(path: str | Path, error: type[NasError], what: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse a JSON file of at most ``max_bytes`` with :func:`parse_json`."""
    return parse_json(read_text_bounded(path, error, what, max_bytes), error, str(path), max_bytes)


# --- writing -----------------------------------------------------------------------------------

def check_output_dir(path: str | Path, what: str = "output folder", create: bool = False) -> Path:
    """Refuse, before any work, a folder outputs cannot go to: a path that is a file, a folder that
    is not writable or holds a symlink (outputs are never written through one), or a missing folder
    whose nearest existing parent is not a writable folder. With ``create`` the folder is made."""
    path = Path(path)
    try:
        if path.is_symlink() and not path.exists():
            raise NasError(f"{what} {path} is a dangling symlink")
        if path.exists():
            if not path.is_dir():
                raise NasError(f"{what} {path} exists and is not a folder")
            _check_writable(path, what)
            links = sorted(p.name for p in path.iterdir() if p.is_symlink())
            if links:
                raise NasError(f"{what} {path} holds a symlink ({links[0]}); outputs are never written through "
                               f"one: remove it or choose another folder")
            return path
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise NasError(f"{what} {path} cannot be created: {parent} is not a folder")
        _check_writable(parent, what)
        if create:
            path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NasError(f"{what} {path} is not usable ({exc.strerror or exc})") from None
    except ValueError as exc:  # a NUL byte in the path
        raise NasError(f"{what} {str(path)!r} is not a valid path ({exc})") from None
    return path


def _check_writable(folder: Path, what: str) -> None:
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise NasError(f"{what} {folder} is not writable ({exc.strerror or exc})") from None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A fresh temporary file name next to ``path`` for a writer that wants a file name (torch.onnx,
    onnx.save, torch.jit.save); on success it is renamed onto ``path`` (replacing a symlink there,
    never writing through it), on failure removed. Errors become :class:`NasError`."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise NasError(f"cannot write {path} ({exc.strerror or exc})") from None
    os.close(fd)
    try:
        yield Path(tmp)
        _make_readable(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise NasError(f"cannot write {path} ({exc.strerror or exc})") from None
        raise


def write_atomic(path: str | Path, write: Callable[[IO], Any], binary: bool = False) -> Path:
    """Write ``path`` through ``write(handle)`` into a temporary file in the same folder, fsync it,
    then ``os.replace`` it: a crash leaves the old file or the new one, never half of one."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb" if binary else "w") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda handle: handle.write(text))


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    return write_atomic(path, lambda handle: handle.write(data), binary=True)


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """JSON that is JSON: NaN and infinities are refused (``allow_nan=False``), not written."""
    try:
        text = json.dumps(obj, indent=indent, default=str, allow_nan=False) + "\n"
    except ValueError as exc:
        raise NasError(f"cannot write {path}: {exc}") from None
    return write_text_atomic(path, text)


def _make_readable(tmp: str) -> None:
    """mkstemp makes 0600 files; outputs get the usual 0666 minus the umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
