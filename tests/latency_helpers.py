"""Shared bits of the latency tests: a tiny space and a fast protocol."""

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
