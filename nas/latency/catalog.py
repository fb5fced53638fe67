"""Where tables live: one folder per space, one table per device inside it.

::

    latency_tables/fashion_mnist/                                  <- a space's folder ("table set")
        intel-xeon-2.80ghz-2c-ort1.32.0-t1-6c1f0a3e/{entries.csv, meta.json, validation/}
        amd-epyc-2c-ort1.32.0-t1-0d4b5e91/{entries.csv, meta.json}

An experiment's ``latency.table`` (or a command's TABLE argument) names either one table folder or
a space's folder. From a space's folder the table of the *target device* is picked: this machine by
default (``device: this``), or the device id given. When the target is this machine and the folder
has no table of it, :func:`resolve_table` builds one there (``nas lut build`` with the default
protocol, resumable), so a first run on a new CPU measures its own table and later runs reuse it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from nas.errors import NasError
from nas.latency.device import THIS, device_id, this_device
from nas.latency.table import TableError, is_table, read_meta, table_dir


DEVICE_ID = re.compile(r"[a-z0-9][a-z0-9.-]{0,120}")


class NoTableError(NasError):
    """No table of the target device in a space's folder (and none may be built)."""


def device_tables(folder: str | Path) -> dict[str, Path]:
    """The tables in a space's folder, by device id (sub-folders holding a meta.json)."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()):
        if is_table(sub):
            found[device_id(read_meta(sub)["device"])] = sub
    return found


def target_id(device: str, runtime: str = "onnxruntime", threads: int = 1) -> str:
    """The device id a target names (``this``: this machine with ``runtime`` and ``threads``)."""
    if device == THIS:
        return this_device(runtime, threads)["id"]
    if not isinstance(device, str) or not DEVICE_ID.fullmatch(device):
        raise NasError(f"device {str(device)[:80]!r}: not a device id (lower-case letters, digits, '.' and '-', "
                       f"as `nas lut build --json` prints) nor {THIS!r}")
    return device


def find_table(location: str | Path, device: str = THIS, runtime: str = "onnxruntime",
               threads: int = 1) -> Path | None:
    """The table at ``location`` (a table folder), or the target device's table in a space's folder;
    None when the folder has no table of that device."""
    location = table_dir(location)
    if is_table(location):
        return location
    return device_tables(location).get(target_id(device, runtime, threads))


def default_table_folder(space) -> Path:
    """Where a space's tables go by default: ``latency_tables/<space>`` beside the space's
    ``search_spaces/`` folder when the project has one there, else under the current folder."""
    source = Path(str(space.source))
    project = source.resolve().parent.parent / "latency_tables"
    return (project if project.is_dir() else Path("latency_tables")) / space.name


def resolve_table(location: str | Path | None, space=None, device: str = THIS, runtime: str = "onnxruntime",
                  threads: int = 1, build: bool = True, progress: bool = True) -> Path:
    """The table to use for ``space`` on the target ``device``: found at ``location`` (a table or a
    space's folder; None: the space's default folder), else, for this machine with ``build``, built
    there now (progress with ETA; resumable) and returned."""
    if location is None:
        if space is None:
            raise NasError("no latency table given and no space to find one for")
        location = default_table_folder(space)
    location = Path(os.path.normpath(table_dir(location)))
    if location.exists() and not location.is_dir():
        raise TableError(f"latency table {location}: not a folder")
    wanted = target_id(device, runtime, threads)
    found = find_table(location, device, runtime, threads)
    if found is not None:
        _check_space(found, space)
        if found == location or not build or read_meta(found).get("calibration") is not None:
            return found
        # this machine's table in a space's folder whose build stopped before the end: resume it
        space = space or folder_space(location)
        from nas.latency.build import build_default_table

        return build_default_table(found, space, runtime=runtime, threads=threads, progress=progress)
    if space is None:
        space = folder_space(location)
    if device != THIS or not build or space is None:
        have = ", ".join(device_tables(location)) or "none"
        how = (f"build it on that device with `nas lut build --space SPACE.yaml --out {location / wanted}`"
               if device != THIS else f"build it with `nas lut build --space SPACE.yaml --out {location / wanted}`")
        raise NoTableError(f"{location} has no latency table of device {wanted} (tables there: {have}); {how}")
    from nas.latency.build import build_default_table

    return build_default_table(location / wanted, space, runtime=runtime, threads=threads, progress=progress)


def folder_space(location: Path):
    """The space of a space's folder, read from one of its tables (None when it has none)."""
    from nas.latency.build import table_space
    from nas.latency.table import load_table

    tables = device_tables(location)
    return table_space(load_table(next(iter(tables.values())))) if tables else None


def _check_space(table: Path, space) -> None:
    if space is None:
        return
    record = read_meta(table).get("space") or {}
    if record.get("hash") not in (None, space.hash):
        raise TableError(f"latency table {table} was built for another space (space hash {record.get('hash')}, "
                         f"{space.name} has {space.hash}); rebuild it with `nas lut build --space {space.source} "
                         f"--out {table}-new`")


def measures_here(table: str | Path | None) -> bool:
    """Whether networks measured here can stand beside ``table``'s predictions (no table, or one of
    this machine)."""
    if table is None:
        return True
    from nas.latency.device import is_this_device

    return is_this_device(read_meta(table_dir(table))["device"])
