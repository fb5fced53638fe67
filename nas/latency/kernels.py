"""Units as modules and as small ONNX graphs, built by the real builder modules.

A table entry is timed on the graph the runtime actually executes: the unit is built with the same
classes as a whole network (``nas.models.blocks``), exported with the same exporter settings as a
whole network (:func:`export_module`), so onnxruntime fuses it the same way.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from torch import nn

from nas.io import write_bytes_atomic, write_text_atomic
from nas.latency.keys import UnitKey
from nas.latency.standalone_measure import MANIFEST_FORMAT, REFERENCE_ID, Protocol
from nas.models import build_model
from nas.models.onnx import to_onnx
from nas.models.blocks import Head, InvertedResidual, LastStage, Stem
from nas.spec.arch import ArchSpec, BlockSpec, HeadSpec, LastStageSpec, StemSpec

WEIGHT_SEED = 0
# The torch-free files a kernels folder gets: the measuring script and the server it can start.
STANDALONE_SCRIPTS = ("standalone_measure.py", "device_server.py")


def unit_module(key: UnitKey) -> nn.Module:
    """The unit a key describes, in eval mode, with seeded weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(WEIGHT_SEED)
        if key.kind == "stem":
            module = Stem(StemSpec(key.out, key.kernel, key.stride, key.act), key.in_ch)
        elif key.kind == "block":
            module = InvertedResidual(BlockSpec(key.in_ch, key.exp, key.out, key.kernel, key.stride, key.se, key.act))
        elif key.kind == "last":
            module = LastStage(LastStageSpec(key.out, key.act, key.se), key.in_ch)
        else:
            module = Head(HeadSpec(key.hidden, key.act if key.hidden else "relu", 0.0), key.in_ch, key.out)
    return module.eval()


def network_module(spec: ArchSpec) -> nn.Module:
    return build_model(spec, seed=WEIGHT_SEED).eval()


def network_input_shape(spec: ArchSpec) -> tuple[int, ...]:
    return (1, spec.in_channels, spec.resolution, spec.resolution)


def export_module(module: nn.Module, input_shape: tuple[int, ...], target: str | Path | None = None) -> bytes:
    """ONNX export of ``module`` at batch 1 with the project's one exporter; returns the bytes and
    writes them to ``target`` when given."""
    return to_onnx(module, input_shape, target)


def export_unit(key: UnitKey, target: str | Path | None = None) -> bytes:
    return export_module(unit_module(key), key.input_shape, target)


def export_spec(spec: ArchSpec, target: str | Path | None = None) -> bytes:
    return export_module(network_module(spec), network_input_shape(spec), target)


def file_name(identifier: str) -> str:
    """A file name for a unit or network id (ids use only [a-z0-9_:.])."""
    return identifier.replace(":", "__") + ".onnx"


def export_kernels(out_dir: str | Path, keys: list[UnitKey], networks: dict[str, ArchSpec], protocol: Protocol,
                   info: dict, extra_graphs: dict[str, bytes] | None = None, progress: bool = True,
                   reference: ArchSpec | None = None) -> Path:
    """Write every unit (and whole network) as an ONNX file plus ``manifest.json`` and copies of the
    torch-free measuring script and server (:data:`STANDALONE_SCRIPTS`). ``networks`` maps an id
    (e.g. ``net:calib0``) to its spec,
    ``extra_graphs`` an id to ready ONNX bytes (e.g. the overhead graph), ``reference`` the paired
    protocol's reference network."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    (out_dir / "graphs").mkdir(parents=True, exist_ok=True)
    units = []
    for key in tqdm(keys, desc="export units", unit="unit", disable=not progress):
        name = f"graphs/{file_name(key.id)}"
        if not (out_dir / name).exists():
            export_unit(key, out_dir / name)
        units.append({"id": key.id, "file": name, "input_shape": list(key.input_shape), "key": key.as_row()})
    nets = []
    for net_id, spec in networks.items():
        name = f"graphs/{file_name(net_id)}"
        export_spec(spec, out_dir / name)
        nets.append({"id": net_id, "file": name, "input_shape": list(network_input_shape(spec)),
                     "spec": spec.to_dict()})
    for graph_id, data in (extra_graphs or {}).items():
        name = f"graphs/{file_name(graph_id)}"
        write_bytes_atomic(out_dir / name, data)
        nets.append({"id": graph_id, "file": name, "input_shape": [1, 1]})
    manifest = {"format": MANIFEST_FORMAT, "protocol": protocol.as_dict(), **info, "units": units, "networks": nets}
    if reference is not None:
        name = f"graphs/{file_name(REFERENCE_ID)}"
        export_spec(reference, out_dir / name)
        manifest["reference"] = {"id": REFERENCE_ID, "file": name, "input_shape": list(network_input_shape(reference)),
                                 "spec": reference.to_string()}
    write_text_atomic(out_dir / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    for script in STANDALONE_SCRIPTS:
        shutil.copyfile(Path(__file__).with_name(script), out_dir / script)
    return out_dir / "manifest.json"
