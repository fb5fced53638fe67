"""Latency-table keys derived from specs (never from modules).

A network is timed as a sum of *units*, each the fused group of kernels the runtime executes:
the stem, every inverted-residual block at its input resolution, the last stage and the head.
A unit's latency depends only on the fields of its :class:`UnitKey`; :func:`unit_id` is the one
place that turns a key into its canonical string. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Iterable

from nas.spec.arch import ArchSpec, BlockSpec, conv_output_size
from nas.spec.space import SearchSpace, expansion_width

KINDS = ("stem", "block", "last", "head")

# The fields that identify a unit of each kind, in the order they appear in its id.
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "stem": ("size", "in_ch", "out", "kernel", "stride", "act"),
    "block": ("size", "in_ch", "exp", "out", "kernel", "stride", "se", "act", "residual"),
    "last": ("size", "in_ch", "out", "se", "act"),
    "head": ("in_ch", "hidden", "act", "out"),
}
_SHORT = {"size": "r", "in_ch": "i", "exp": "e", "out": "o", "kernel": "k", "stride": "s", "se": "se",
          "act": "", "residual": "res", "hidden": "h"}


@dataclass(frozen=True)
class UnitKey:
    """One table entry's identity. Fields a kind does not use keep their defaults.

    ``size`` is the unit's input spatial size (square), ``in_ch``/``out`` its input and output
    channels (for the head: pooled features and classes), ``exp`` a block's expansion width,
    ``hidden`` the head's hidden width (0: one Linear, act "none")."""

    kind: str
    size: int = 0
    in_ch: int = 0
    out: int = 0
    exp: int = 0
    kernel: int = 0
    stride: int = 1
    se: bool = False
    act: str = ""
    residual: bool = False
    hidden: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unit kind {self.kind!r} is not one of {KINDS}")

    @property
    def id(self) -> str:
        return unit_id(self)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of the unit's input at batch 1."""
        return (1, self.in_ch) if self.kind == "head" else (1, self.in_ch, self.size, self.size)

    def as_row(self) -> dict[str, Any]:
        return {"id": self.id, **asdict(self)}


def unit_id(key: UnitKey) -> str:
    """The canonical id, e.g. ``block:r7_i24_e72_o24_k5_s1_se1_hswish_res1``."""
    parts = []
    for name in KIND_FIELDS[key.kind]:
        value = getattr(key, name)
        parts.append(f"{_SHORT[name]}{int(value) if isinstance(value, bool) else value}")
    return f"{key.kind}:" + "_".join(parts)


def key_from_row(row: dict[str, Any]) -> UnitKey:
    """Inverse of :meth:`UnitKey.as_row` (also accepts a pandas row); checks the stored id."""
    values = {}
    for f in fields(UnitKey):
        value = row[f.name]
        if f.type in ("bool", bool):
            value = value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1")
        elif f.type in ("int", int):
            value = int(value)
        else:
            value = "" if value is None or value != value else str(value)  # NaN -> ""
        values[f.name] = value
    key = UnitKey(**values)
    if "id" in row and row["id"] != key.id:
        raise ValueError(f"row id {row['id']!r} does not match its fields ({key.id!r})")
    return key


# --- keys of one spec ----------------------------------------------------------------------------

def stem_key(spec: ArchSpec) -> UnitKey:
    s = spec.stem
    return UnitKey("stem", size=spec.resolution, in_ch=spec.in_channels, out=s.out_channels, kernel=s.kernel,
                   stride=s.stride, act=s.act)


def block_key(block: BlockSpec, size: int) -> UnitKey:
    return UnitKey("block", size=size, in_ch=block.in_channels, exp=block.exp_channels, out=block.out_channels,
                   kernel=block.kernel, stride=block.stride, se=block.se, act=block.act, residual=block.residual)


def last_key(spec: ArchSpec) -> UnitKey:
    return UnitKey("last", size=spec.final_size, in_ch=spec.feature_channels, out=spec.last.out_channels,
                   se=spec.last.se, act=spec.last.act)


def head_key(spec: ArchSpec) -> UnitKey:
    h = spec.head
    return UnitKey("head", in_ch=spec.classifier_in, hidden=h.hidden, act=h.act if h.hidden else "none",
                   out=spec.num_classes)


def unit_keys(spec: ArchSpec) -> list[UnitKey]:
    """The units of a network in execution order: stem, blocks, last stage, head."""
    return [stem_key(spec), *(block_key(b, size) for _, size, b in spec.iter_blocks()), last_key(spec),
            head_key(spec)]


def unique_keys(keys: Iterable[UnitKey]) -> list[UnitKey]:
    """Keys without repeats, first occurrence order kept."""
    return list(dict.fromkeys(keys))


# --- every key a space can produce -----------------------------------------------------------------

def space_unit_keys(space: SearchSpace) -> list[UnitKey]:
    """Every unit any member of ``space`` can contain, without enumerating the members.

    A block's key depends on (input size, in, exp, out, kernel, stride, se, act): per stage
    position the input width is the previous stage's width (first block) or the stage's own width,
    the input size follows from the fixed stride plan, and the depth choices only decide which
    positions exist. Last stage and head see every width of the final stage.
    """
    stem = space.stem
    size = conv_output_size(space.resolution, stem.kernel, stem.stride)
    keys = [UnitKey("stem", size=space.resolution, in_ch=space.in_channels, out=stem.out_channels,
                    kernel=stem.kernel, stride=stem.stride, act=stem.act)]
    in_widths: tuple[int, ...] = (stem.out_channels,)
    for st in space.stages:
        # Input sizes per position: every kernel keeps 'same' padding, so a stage's block j sees the
        # same size whatever the kernels chosen (stride 2 halves once, in block 0).
        for j in range(st.max_depth):
            stride = st.stride if j == 0 else 1
            block_size = size if j == 0 else conv_output_size(size, 3, st.stride)
            inputs = in_widths if j == 0 else st.width
            for cin in inputs:
                for cout in st.width:
                    for kernel in st.kernel:
                        for ratio in st.expansion:
                            for se in st.se:
                                for act in st.act:
                                    block = BlockSpec(cin, expansion_width(cin, ratio), cout, kernel, stride, se, act)
                                    keys.append(block_key(block, block_size))
        size = conv_output_size(size, 3, st.stride)
        in_widths = st.width
    for cin in in_widths:
        keys.append(UnitKey("last", size=size, in_ch=cin, out=space.last.out_channels, se=space.last.se,
                            act=space.last.act))
    h = space.head
    keys.append(UnitKey("head", in_ch=space.last.out_channels, hidden=h.hidden, act=h.act if h.hidden else "none",
                        out=space.num_classes))
    return unique_keys(keys)


# --- narrower widths for NetAdapt --------------------------------------------------------------------

def narrower_specs(spec: ArchSpec, step: int = 8, minimum: int = 8) -> list[ArchSpec]:
    """Every spec one NetAdapt cut away from ``spec``: one block's expansion width, or one
    residual group's width, reduced by a multiple of ``step`` (down to ``minimum``).

    A residual group is a block's output plus every following stride-1, in == out block (they must
    keep one width). Blocks without an expand conv (exp == in) keep exp == in when their input shrinks.
    Used to measure, up front, the units NetAdapt's first round can ask for; later rounds call
    :func:`nas.latency.ensure_entries` on their own candidates.
    """
    out: list[ArchSpec] = []
    blocks = list(spec.blocks)
    for i, b in enumerate(blocks):
        if b.has_expand:
            for exp in range(b.exp_channels - step, minimum - 1, -step):
                if exp == b.in_channels:
                    continue  # would silently become a no-expand block
                out.append(spec.replace(blocks=tuple(blocks[:i] + [replace(b, exp_channels=exp)] + blocks[i + 1:])))
    for start, end in residual_groups(spec):
        width = blocks[start].out_channels
        for new in range(width - step, minimum - 1, -step):
            out.append(spec.replace(blocks=tuple(_set_group_width(blocks, start, end, new))))
    return out


def residual_groups(spec: ArchSpec) -> list[tuple[int, int]]:
    """(first, last) block indices of each group sharing one width: a producing block and the
    residual (stride 1, in == out) blocks that follow it."""
    groups = []
    i, blocks = 0, spec.blocks
    while i < len(blocks):
        j = i
        while j + 1 < len(blocks) and blocks[j + 1].residual:
            j += 1
        groups.append((i, j))
        i = j + 1
    return groups


def _set_group_width(blocks: list[BlockSpec], start: int, end: int, width: int) -> list[BlockSpec]:
    new = list(blocks)
    for k in range(start, end + 1):
        b = new[k]
        cin = width if k > start else b.in_channels
        exp = cin if not b.has_expand else b.exp_channels
        new[k] = replace(b, in_channels=cin, exp_channels=exp, out_channels=width)
    if end + 1 < len(new):
        b = new[end + 1]
        new[end + 1] = replace(b, in_channels=width, exp_channels=width if not b.has_expand else b.exp_channels)
    return new
