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
from dataclasses import dataclass, field
from typing import Any, Iterator

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
        raise SpecError(f"{where}: expected an integer, got {_short(value)}")
    if value < minimum:
        raise SpecError(f"{where}: must be >= {minimum}, got {value}")
    if value > maximum:
        raise SpecError(f"{where}: must be <= {maximum:,}, got {_short(value)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_choice(where: str, value: Any, allowed: tuple) -> None:
    if isinstance(value, bool) or value not in allowed:
        shown = ", ".join(str(a) for a in allowed)
        raise SpecError(f"{where}: {_short(value)} is not one of {shown}")


def _check_bool(where: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise SpecError(f"{where}: expected true or false, got {_short(value)}")


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
            raise SpecError(f"{where}.dropout: must be a number in [0, 1), got {_short(self.dropout)}")


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
        from nas.spec.codec import encode_spec

        return encode_spec(self)

    @classmethod
    def from_string(cls, text: str) -> "ArchSpec":
        from nas.spec.codec import decode_spec

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
        raise SpecError(f"{where}: unknown field {_short(unknown[0])} (expected: {', '.join(sorted(expected))})")


def _part(kind: type, data: Any, where: str):
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected an object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(kind)}
    _reject_unknown(where, data, names)
    try:
        return kind(**data)
    except TypeError as exc:  # a required field is missing
        raise SpecError(f"{where}: {exc}") from None
