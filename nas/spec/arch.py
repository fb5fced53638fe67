"""Architecture specs: frozen dataclasses describing a MobileNetV3-style network as pure data.

A network is ``stem -> blocks (inverted residuals) -> last stage -> head``. Nothing here imports
torch: specs can be built, validated, hashed, counted and turned into latency keys anywhere.

Channel rules follow MobileNetV3 (../shared/reference/mobilenetv3.md):
  * a block skips its 1x1 expansion conv when ``exp_channels == in_channels``;
  * a block is residual exactly when ``stride == 1 and in_channels == out_channels``;
  * the SE squeeze width is ``make_divisible(exp_channels // 4, 8)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

from nas.config import short
from nas.errors import NasError

ACTIVATIONS = ("relu", "relu6", "hswish")
KERNELS = (3, 5, 7)
STRIDES = (1, 2)
SPEC_FORMAT = "nas-arch/1"

# Limits on what a spec may ask for (hostile or mistaken input must fail in one line, not allocate).
MAX_CHANNELS = 1 << 16       # channels of any layer, hidden width of the head
MAX_RESOLUTION = 4096        # input side in pixels
MAX_CLASSES = 1 << 20        # classifier outputs
MAX_BLOCKS = 256             # inverted-residual blocks
# What a network may need for one image: fp32 weights plus 3x its largest activation (input,
# output and one intermediate tensor alive at once). 1 GiB; MobileNetV3-Large at 224 needs 0.05 GiB.
MAX_MODEL_BYTES = 1 << 30


class SpecError(NasError):
    """An invalid architecture spec; the message names the offending field."""


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (at least ``min_value``), never more
    than 10 % below ``value`` (the TF/torchvision rule used by MobileNetV2/V3)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def conv_output_size(size: int, kernel: int, stride: int) -> int:
    """Spatial size after a ``kernel``x``kernel`` conv with 'same' padding ``(kernel-1)//2``."""
    padding = (kernel - 1) // 2
    return (size + 2 * padding - kernel) // stride + 1


def se_channels(channels: int) -> int:
    """Squeeze width of an SE module on ``channels`` channels (torchvision's rule)."""
    return make_divisible(channels // 4, 8)


# --- validation helpers ------------------------------------------------------------------------

def _check_int(where: str, value: Any, minimum: int = 1, maximum: int = MAX_CHANNELS) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where}: expected an integer, got {short(value)}")
    if value < minimum:
        raise SpecError(f"{where}: must be >= {minimum}, got {value}")
    if value > maximum:
        raise SpecError(f"{where}: must be <= {maximum:,}, got {short(value)}")


def _check_choice(where: str, value: Any, allowed: tuple) -> None:
    if isinstance(value, bool) or value not in allowed:
        shown = ", ".join(str(a) for a in allowed)
        raise SpecError(f"{where}: {short(value)} is not one of {shown}")


def _check_bool(where: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise SpecError(f"{where}: expected true or false, got {short(value)}")


# --- the dataclasses ---------------------------------------------------------------------------

@dataclass(frozen=True)
class StemSpec:
    """First layer: ``kernel``x``kernel`` conv (stride ``stride``) + BN + activation."""

    out_channels: int = 16
    kernel: int = 3
    stride: int = 2
    act: str = "hswish"

    def validate(self, where: str = "stem") -> None:
        _check_int(f"{where}.out_channels", self.out_channels)
        _check_choice(f"{where}.kernel", self.kernel, KERNELS)
        _check_choice(f"{where}.stride", self.stride, STRIDES)
        _check_choice(f"{where}.act", self.act, ACTIVATIONS)


@dataclass(frozen=True)
class BlockSpec:
    """One inverted-residual (bneck) block: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project."""

    in_channels: int
    exp_channels: int
    out_channels: int
    kernel: int = 3
    stride: int = 1
    se: bool = False
    act: str = "relu"

    def validate(self, where: str = "block") -> None:
        _check_int(f"{where}.in_channels", self.in_channels)
        _check_int(f"{where}.exp_channels", self.exp_channels)
        _check_int(f"{where}.out_channels", self.out_channels)
        _check_choice(f"{where}.kernel", self.kernel, KERNELS)
        _check_choice(f"{where}.stride", self.stride, STRIDES)
        _check_bool(f"{where}.se", self.se)
        _check_choice(f"{where}.act", self.act, ACTIVATIONS)

    @property
    def has_expand(self) -> bool:
        return self.exp_channels != self.in_channels

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels

    @property
    def se_channels(self) -> int:
        return se_channels(self.exp_channels)


@dataclass(frozen=True)
class LastStageSpec:
    """MobileNetV3's efficient last stage: 1x1 conv + BN + activation [+ SE], then global pooling."""

    out_channels: int
    act: str = "hswish"
    se: bool = False

    def validate(self, where: str = "last") -> None:
        _check_int(f"{where}.out_channels", self.out_channels)
        _check_choice(f"{where}.act", self.act, ACTIVATIONS)
        _check_bool(f"{where}.se", self.se)


@dataclass(frozen=True)
class HeadSpec:
    """Classifier after pooling: Linear(hidden) + activation + dropout + Linear(classes).

    ``hidden == 0`` means a single Linear layer straight to the classes."""

    hidden: int = 1280
    act: str = "hswish"
    dropout: float = 0.2

    def validate(self, where: str = "head") -> None:
        _check_int(f"{where}.hidden", self.hidden, minimum=0)
        _check_choice(f"{where}.act", self.act, ACTIVATIONS)
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise SpecError(f"{where}.dropout: must be a number in [0, 1), got {short(self.dropout)}")


@dataclass(frozen=True)
class ArchSpec:
    """A whole network. Immutable, hashable, JSON-serialisable; validated at construction."""

    resolution: int
    in_channels: int
    num_classes: int
    stem: StemSpec
    blocks: tuple[BlockSpec, ...]
    last: LastStageSpec
    head: HeadSpec = field(default_factory=HeadSpec)

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))
        self.validate()

    # -- validation --
    def validate(self) -> None:
        _check_int("resolution", self.resolution, maximum=MAX_RESOLUTION)
        _check_int("in_channels", self.in_channels)
        _check_int("num_classes", self.num_classes, maximum=MAX_CLASSES)
        for name, part, kind in (("stem", self.stem, StemSpec), ("last", self.last, LastStageSpec),
                                 ("head", self.head, HeadSpec)):
            if not isinstance(part, kind):
                raise SpecError(f"{name}: expected a {kind.__name__}, got {type(part).__name__}")
            part.validate(name)
        if not self.blocks:
            raise SpecError("blocks: a network needs at least one block")
        if len(self.blocks) > MAX_BLOCKS:
            raise SpecError(f"blocks: at most {MAX_BLOCKS} blocks, got {len(self.blocks)}")
        channels = self.stem.out_channels
        for i, block in enumerate(self.blocks):
            if not isinstance(block, BlockSpec):
                raise SpecError(f"blocks[{i}]: expected a BlockSpec, got {type(block).__name__}")
            block.validate(f"blocks[{i}]")
            if block.in_channels != channels:
                raise SpecError(f"blocks[{i}].in_channels: {block.in_channels} does not match the "
                                f"{channels} channels produced by the layer before it")
            channels = block.out_channels
        need = self.estimated_bytes()
        if need > MAX_MODEL_BYTES:
            raise SpecError(f"network too large: its weights and one image's activations need about "
                            f"{need / 2**30:,.1f} GiB (fp32), more than the limit of {MAX_MODEL_BYTES / 2**30:g} GiB")

    def estimated_bytes(self) -> int:
        """fp32 weights plus 3x the largest activation tensor, for one image (integer arithmetic)."""
        s = self.stem
        size = conv_output_size(self.resolution, s.kernel, s.stride)
        weights = self.in_channels * s.out_channels * s.kernel ** 2
        largest = max(self.in_channels * self.resolution ** 2, s.out_channels * size ** 2)
        for block in self.blocks:
            weights += (block.in_channels * block.exp_channels + block.exp_channels * block.kernel ** 2
                        + block.exp_channels * block.out_channels + 2 * block.exp_channels * block.se_channels)
            largest = max(largest, block.exp_channels * size ** 2)
            size = conv_output_size(size, block.kernel, block.stride)
        last, head = self.last, self.head
        weights += self.blocks[-1].out_channels * last.out_channels + 2 * last.out_channels * se_channels(last.out_channels)
        largest = max(largest, last.out_channels * size ** 2)
        weights += (last.out_channels * head.hidden + head.hidden * self.num_classes if head.hidden
                    else last.out_channels * self.num_classes)
        return 4 * (weights + 3 * largest)

    # -- derived facts --
    @property
    def feature_channels(self) -> int:
        """Channels entering the last stage."""
        return self.blocks[-1].out_channels

    @property
    def classifier_in(self) -> int:
        """Width of the pooled feature vector that enters the head."""
        return self.last.out_channels

    def block_input_sizes(self) -> list[int]:
        """Spatial size of the input of every block (square feature maps)."""
        size = conv_output_size(self.resolution, self.stem.kernel, self.stem.stride)
        sizes = []
        for block in self.blocks:
            sizes.append(size)
            size = conv_output_size(size, block.kernel, block.stride)
        return sizes

    @property
    def final_size(self) -> int:
        last = self.blocks[-1]
        return conv_output_size(self.block_input_sizes()[-1], last.kernel, last.stride)

    # -- serialisation --
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SPEC_FORMAT,
            "resolution": self.resolution,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "stem": dataclasses.asdict(self.stem),
            "blocks": [dataclasses.asdict(b) for b in self.blocks],
            "last": dataclasses.asdict(self.last),
            "head": dataclasses.asdict(self.head),
        }

    @classmethod
    def from_dict(cls, data: Any) -> "ArchSpec":
        if not isinstance(data, dict):
            raise SpecError(f"spec: expected a JSON object, got {type(data).__name__}")
        data = dict(data)
        fmt = data.pop("format", SPEC_FORMAT)
        if fmt != SPEC_FORMAT:
            raise SpecError(f"format: {fmt!r} is not {SPEC_FORMAT!r}")
        expected = {"resolution", "in_channels", "num_classes", "stem", "blocks", "last", "head"}
        _reject_unknown("spec", data, expected)
        missing = sorted(expected - set(data) - {"head"})
        if missing:
            raise SpecError(f"spec: missing field {missing[0]!r}")
        blocks = data["blocks"]
        if not isinstance(blocks, list):
            raise SpecError("blocks: expected a list")
        if len(blocks) > MAX_BLOCKS:
            raise SpecError(f"blocks: at most {MAX_BLOCKS} blocks, got {len(blocks)}")
        return cls(
            resolution=data["resolution"],
            in_channels=data["in_channels"],
            num_classes=data["num_classes"],
            stem=_part(StemSpec, data["stem"], "stem"),
            blocks=tuple(_part(BlockSpec, b, f"blocks[{i}]") for i, b in enumerate(blocks)),
            last=_part(LastStageSpec, data["last"], "last"),
            head=_part(HeadSpec, data.get("head", {}), "head"),
        )

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "ArchSpec":
        from nas.io import parse_json

        return cls.from_dict(parse_json(text, SpecError, "spec"))

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        """Stable content hash (16 hex digits of SHA-256 over the canonical JSON)."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    def to_string(self) -> str:
        return encode_spec(self)

    @classmethod
    def from_string(cls, text: str) -> "ArchSpec":
        return decode_spec(text)

    def __str__(self) -> str:
        return self.to_string()

    def replace(self, **changes: Any) -> "ArchSpec":
        return dataclasses.replace(self, **changes)

    def with_io(self, resolution: int | None = None, in_channels: int | None = None,
                num_classes: int | None = None) -> "ArchSpec":
        """Same network for another input size, input channel count or class count."""
        return self.replace(
            resolution=self.resolution if resolution is None else resolution,
            in_channels=self.in_channels if in_channels is None else in_channels,
            num_classes=self.num_classes if num_classes is None else num_classes,
        )

    def iter_blocks(self) -> Iterator[tuple[int, int, BlockSpec]]:
        """(index, input size, block) for every block."""
        for i, (size, block) in enumerate(zip(self.block_input_sizes(), self.blocks)):
            yield i, size, block


def _reject_unknown(where: str, data: dict, expected: set[str]) -> None:
    unknown = sorted(map(str, set(data) - expected))
    if unknown:
        raise SpecError(f"{where}: unknown field {short(unknown[0])} (expected: {', '.join(sorted(expected))})")


def _part(kind: type, data: Any, where: str):
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected an object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(kind)}
    _reject_unknown(where, data, names)
    try:
        return kind(**data)
    except TypeError as exc:  # a required field is missing
        raise SpecError(f"{where}: {exc}") from None


# --- the string form ---------------------------------------------------------------------------------
# The one-line string form of a spec, readable and writable by a person.
#
# Tokens are separated by spaces, in network order::
#
#     in224x3 stem_c16_k3_s2_hs ir_k3_e16_c16_s2_se_re ir_k3_e72_c24_s2_re ... last_c576_hs head_c1024_hs_d0.2 cls1000
#
# ==========================  ====================================================================
# ``inRxC``                   input resolution R (square) and C input channels
# ``stem_cN_kK_sS_ACT``       stem conv: N filters, kernel K, stride S
# ``ir_kK_eE_cN_sS[_se]_ACT`` inverted residual: kernel K, *expansion width* E (channels, as the
#                             paper's "exp" column, not a ratio), N output channels, stride S,
#                             optional SE; the input width is the previous layer's output
# ``last_cN[_se]_ACT``        last stage 1x1 conv to N channels (optional SE)
# ``head_cH_ACT_dP``          classifier hidden width H (0: no hidden layer) and dropout P
# ``clsK``                    K classes
# ==========================  ====================================================================
#
# Activations: ``re`` = ReLU, ``r6`` = ReLU6, ``hs`` = hard-swish.

ACT_TOKENS = {"relu": "re", "relu6": "r6", "hswish": "hs"}
TOKEN_ACTS = {v: k for k, v in ACT_TOKENS.items()}


def _fmt_float(value: float) -> str:
    text = f"{value:g}"
    return text


def encode_spec(spec: ArchSpec) -> str:
    parts = [f"in{spec.resolution}x{spec.in_channels}"]
    s = spec.stem
    parts.append(f"stem_c{s.out_channels}_k{s.kernel}_s{s.stride}_{ACT_TOKENS[s.act]}")
    for b in spec.blocks:
        se = "_se" if b.se else ""
        parts.append(f"ir_k{b.kernel}_e{b.exp_channels}_c{b.out_channels}_s{b.stride}{se}_{ACT_TOKENS[b.act]}")
    se = "_se" if spec.last.se else ""
    parts.append(f"last_c{spec.last.out_channels}{se}_{ACT_TOKENS[spec.last.act]}")
    h = spec.head
    parts.append(f"head_c{h.hidden}_{ACT_TOKENS[h.act]}_d{_fmt_float(h.dropout)}")
    parts.append(f"cls{spec.num_classes}")
    return " ".join(parts)


# Numbers are ASCII digits only (``\d`` and ``str.isdigit`` accept e.g. Arabic-Indic digits), at most 9 of them.
_NUMBER = r"[0-9]{1,9}"
_INPUT = re.compile(rf"in({_NUMBER})x({_NUMBER})", re.ASCII)
_CLS = re.compile(rf"cls({_NUMBER})", re.ASCII)
_FIELD = re.compile(rf"([a-z])({_NUMBER}(?:\.[0-9]{{1,9}})?)", re.ASCII)
MAX_SPEC_CHARS = 1 << 16  # a spec string of MAX_BLOCKS blocks is about 8 KB


def _fields(token: str, kind: str, allowed: str) -> dict[str, str]:
    """Split ``kind_k3_e16_...`` into {'k': '3', 'e': '16', ..., 'se': '', 'act': 're'}."""
    pieces = token.split("_")
    if pieces[0] != kind:
        raise SpecError(f"token {_shown(token)}: expected a {kind}_ token")
    fields: dict[str, str] = {}
    for piece in pieces[1:]:
        if piece in TOKEN_ACTS:
            key, value = "act", TOKEN_ACTS[piece]
        elif piece == "se":
            key, value = "se", ""
        else:
            m = _FIELD.fullmatch(piece)
            if not m or m.group(1) not in allowed:
                raise SpecError(f"token {_shown(token)}: cannot read {_shown(piece)} (activations: re, r6, hs; "
                                f"numbers: at most 9 ASCII digits)")
            key, value = m.group(1), m.group(2)
        if key in fields:
            raise SpecError(f"token {_shown(token)}: {_shown(piece)} given twice")
        fields[key] = value
    return fields


def _int(token: str, fields: dict[str, str], key: str, default: int | None = None) -> int:
    if key not in fields:
        if default is None:
            raise SpecError(f"token {_shown(token)}: missing '{key}N'")
        return default
    value = fields[key]
    if not value.isascii() or not value.isdigit():
        raise SpecError(f"token {_shown(token)}: '{key}{value}' must be a whole number")
    return int(value)


def _act(token: str, fields: dict[str, str]) -> str:
    if "act" not in fields:
        raise SpecError(f"token {_shown(token)}: missing activation (re, r6 or hs)")
    return fields["act"]


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 60 else repr(text[:57] + "...")


def decode_spec(text: str) -> ArchSpec:
    """Parse the string form; raises :class:`SpecError` naming the bad token."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise SpecError("spec string: not ASCII text") from None
    if not isinstance(text, str):
        raise SpecError(f"spec string: expected text, got {type(text).__name__}")
    if len(text) > MAX_SPEC_CHARS:
        raise SpecError(f"spec string: more than {MAX_SPEC_CHARS:,} characters")
    tokens = text.replace(",", " ").split()
    if not 5 <= len(tokens) <= MAX_BLOCKS + 5:
        raise SpecError("spec string: expected 'inRxC stem_... ir_... last_... head_... clsK'")
    m = _INPUT.fullmatch(tokens[0])
    if not m:
        raise SpecError(f"token {_shown(tokens[0])}: expected the input as inRxC, e.g. in224x3")
    resolution, in_channels = int(m.group(1)), int(m.group(2))
    m = _CLS.fullmatch(tokens[-1])
    if not m:
        raise SpecError(f"token {_shown(tokens[-1])}: expected the class count as clsK, e.g. cls1000")
    num_classes = int(m.group(1))

    f = _fields(tokens[1], "stem", "cks")
    stem = StemSpec(out_channels=_int(tokens[1], f, "c"), kernel=_int(tokens[1], f, "k", 3),
                    stride=_int(tokens[1], f, "s", 2), act=_act(tokens[1], f))
    channels = stem.out_channels
    blocks = []
    for token in tokens[2:-3]:
        f = _fields(token, "ir", "kecs")
        block = BlockSpec(in_channels=channels, exp_channels=_int(token, f, "e"), out_channels=_int(token, f, "c"),
                          kernel=_int(token, f, "k"), stride=_int(token, f, "s", 1), se="se" in f,
                          act=_act(token, f))
        blocks.append(block)
        channels = block.out_channels
    f = _fields(tokens[-3], "last", "c")
    last = LastStageSpec(out_channels=_int(tokens[-3], f, "c"), act=_act(tokens[-3], f), se="se" in f)
    f = _fields(tokens[-2], "head", "cd")
    try:
        dropout = float(f.get("d", "0"))
    except ValueError:
        raise SpecError(f"token {_shown(tokens[-2])}: bad dropout") from None
    head = HeadSpec(hidden=_int(tokens[-2], f, "c"), act=_act(tokens[-2], f), dropout=dropout)
    return ArchSpec(resolution=resolution, in_channels=in_channels, num_classes=num_classes, stem=stem,
                    blocks=tuple(blocks), last=last, head=head)
