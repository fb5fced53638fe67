"""A tiny space for the supernet tests: every choice kind varies (kernel up to 7, ratio 1, SE, activations)."""

from pathlib import Path

SUPER_SPACE = """\
name: supertiny
description: tiny space for the supernet tests
input: {resolution: 8, channels: 1}
num_classes: 3
stem: {out_channels: 8, kernel: 3, stride: 1, act: hswish}
stages:
  - {stride: 2, depth: [1, 2], width: [8, 16], kernel: [3, 5, 7], expansion: [1, 3], se: [false, true], act: [relu, hswish]}
  - {stride: 1, depth: [1, 2, 3], width: [16, 24], kernel: [3, 7], expansion: [2, 4], se: [false, true], act: [relu6, hswish]}
last_stage: {out_channels: 32, act: hswish, se: true}
head: {hidden: 16, act: hswish, dropout: 0.2}
baseline: "in8x1 stem_c8_k3_s1_hs ir_k3_e24_c8_s2_re ir_k7_e32_c16_s1_se_hs last_c32_se_hs head_c16_hs_d0.2 cls3"
"""


def write_super_space(directory: Path) -> Path:
    path = directory / "supertiny.yaml"
    path.write_text(SUPER_SPACE)
    return path
