"""Shared bits of the latency tests: a tiny space and a fast protocol."""

import json
from pathlib import Path

TINY_SPACE = """\
name: tiny
description: tiny test space for latency tables
input: {resolution: 8, channels: 1}
num_classes: 3
stem: {out_channels: 8, kernel: 3, stride: 1, act: relu}
stages:
  - {stride: 2, depth: [1, 2], width: [8, 16], kernel: [3], expansion: [1, 3], se: [false, true], act: [relu]}
last_stage: {out_channels: 16, act: relu, se: false}
head: {hidden: 0, act: relu, dropout: 0.0}
baseline: "in8x1 stem_c8_k3_s1_re ir_k3_e24_c8_s2_re last_c16_re head_c0_re_d0 cls3"
"""

OTHER_SPACE = TINY_SPACE.replace("name: tiny", "name: other").replace("width: [8, 16]", "width: [8, 24]")

FAST = dict(warmup=1, runs=25, passes=4, remeasure=0)


def write_space(directory: Path, text: str = TINY_SPACE, name: str = "tiny.yaml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


SHIPPED_TABLES = Path(__file__).resolve().parents[1] / "latency_tables"
SHIPPED_FASHION = SHIPPED_TABLES / "fashion_mnist" / "intel-xeon-2.80ghz-2c-ort1.32.0-t1-74165aa5"
SHIPPED_FASHION_AMD = SHIPPED_TABLES / "fashion_mnist" / "amd-epyc-2c-ort1.32.0-t1-5726d391"


def another_devices_shipped_fashion_table() -> Path:
    """A shipped Fashion-MNIST table of a device other than this machine: the AMD EPYC one, or the Intel
    Xeon one on a machine whose fingerprint is the AMD EPYC table's."""
    from nas.latency.device import this_device

    meta = json.loads((SHIPPED_FASHION_AMD / "meta.json").read_text())
    this_id = this_device(meta["device"]["runtime"], meta["device"]["threads"])["id"]
    return SHIPPED_FASHION if this_id == SHIPPED_FASHION_AMD.name else SHIPPED_FASHION_AMD


def as_this_machines_table(source: Path, folder: Path) -> Path:
    """A copy of a shipped table made to belong to this machine: ``folder/<this device id>/`` with the
    source's entries and its meta's device replaced by this machine's fingerprint. For tests that need
    a complete table of this machine without measuring 3,000 units (the numbers are the source
    device's; the tests check behaviour, not latencies). Returns the copy."""
    import json
    import shutil

    from nas.latency.device import this_device

    meta = json.loads((source / "meta.json").read_text())
    device = this_device(meta["device"]["runtime"], meta["device"]["threads"])
    target = folder / device["id"]
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "entries.csv", target / "entries.csv")
    meta["device"] = device
    (target / "meta.json").write_text(json.dumps(meta, indent=2))
    return target
