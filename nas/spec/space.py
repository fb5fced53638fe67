"""Search spaces: YAML files -> validated choices -> decisions -> specs.

A space fixes the stem, the stride of every stage, the last stage, the head and the input, and
lets each *stage* choose its depth and output width and each *block* (layer) of a stage choose its
kernel, expansion ratio, SE and nonlinearity. The expansion width of a block is
``make_divisible(in_channels * ratio, 8)``, except that ratio 1 means "no expansion conv"
(``exp == in``), as in MobileNetV3's first block.

The choices are flattened into an ordered list of :class:`Decision` (the factorized token list of
MnasNet: ``s0.depth, s0.width, s0.b0.kernel, s0.b0.expansion, s0.b0.se, s0.b0.act, s0.b1.kernel,
...``). An *assignment* maps every decision name to one of its choices; blocks beyond a stage's
depth ignore theirs. Strategies (Optuna, RL, evolution) only ever see decisions.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from nas.config import short
from nas.errors import NasError
from nas.io import read_yaml
from nas.spec.arch import (ACTIVATIONS, KERNELS, MAX_CHANNELS, STRIDES, ArchSpec, BlockSpec, HeadSpec, LastStageSpec, SpecError,
                           StemSpec, make_divisible)

BLOCK_CHOICES = ("kernel", "expansion", "se", "act")
STAGE_KEYS = {"stride", "depth", "width", *BLOCK_CHOICES, "name"}
TOP_KEYS = {"name", "description", "input", "num_classes", "stem", "stages", "last_stage", "head", "baseline"}
# Limits on a space file (a member must also fit the spec limits of nas.spec.arch, checked on the largest one).
MAX_STAGES = 32
MAX_STAGE_DEPTH = 32
MAX_CHOICES = 64
MAX_EXPANSION = 64
MAX_TEXT = 4096  # characters of the name and the description


class SpaceError(NasError):
    """An invalid search-space file or a spec/assignment that is not in the space."""


@dataclass(frozen=True)
class Decision:
    """One categorical choice the search makes."""

    name: str
    choices: tuple

    def __post_init__(self) -> None:
        if not self.choices:
            raise SpaceError(f"{self.name}: empty choice list")


@dataclass(frozen=True)
class StageChoices:
    stride: int
    depth: tuple[int, ...]
    width: tuple[int, ...]
    kernel: tuple[int, ...]
    expansion: tuple[float, ...]
    se: tuple[bool, ...]
    act: tuple[str, ...]

    @property
    def max_depth(self) -> int:
        return max(self.depth)

    @property
    def block_combinations(self) -> int:
        return len(self.kernel) * len(self.expansion) * len(self.se) * len(self.act)


def expansion_width(in_channels: int, ratio: float) -> int:
    """Expansion width of a block: ratio 1 keeps the input width (no 1x1 expansion conv)."""
    return in_channels if ratio == 1 else make_divisible(in_channels * ratio, 8)


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str
    resolution: int
    in_channels: int
    num_classes: int
    stem: StemSpec
    stages: tuple[StageChoices, ...]
    last: LastStageSpec
    head: HeadSpec
    baseline_source: Any = None
    source: str = "<memory>"

    # -- decisions --
    @property
    def decisions(self) -> list[Decision]:
        out: list[Decision] = []
        for i, st in enumerate(self.stages):
            out.append(Decision(f"s{i}.depth", st.depth))
            out.append(Decision(f"s{i}.width", st.width))
            for j in range(st.max_depth):
                for key in BLOCK_CHOICES:
                    out.append(Decision(f"s{i}.b{j}.{key}", getattr(st, key)))
        return out

    @property
    def size(self) -> int:
        """Number of decision combinations that give different networks' choice lists
        (blocks past a stage's depth do not count); distinct specs can be slightly fewer when
        two expansion ratios round to the same width."""
        total = 1
        for st in self.stages:
            total *= len(st.width) * sum(st.block_combinations ** d for d in st.depth)
        return total

    @property
    def log10_size(self) -> float:
        return math.log10(self.size)

    def decode(self, assignment: Mapping[str, Any]) -> ArchSpec:
        """The spec an assignment describes; unknown or out-of-range values raise SpaceError."""
        for decision in self.decisions:
            if decision.name not in assignment:
                raise SpaceError(f"assignment: missing decision {decision.name!r}")
            if assignment[decision.name] not in decision.choices:
                raise SpaceError(f"assignment: {decision.name}={assignment[decision.name]!r} is not one of "
                                 f"{list(decision.choices)}")
        channels = self.stem.out_channels
        blocks = []
        for i, st in enumerate(self.stages):
            width = assignment[f"s{i}.width"]
            for j in range(assignment[f"s{i}.depth"]):
                get = lambda key: assignment[f"s{i}.b{j}.{key}"]  # noqa: E731
                blocks.append(BlockSpec(in_channels=channels, exp_channels=expansion_width(channels, get("expansion")),
                                        out_channels=width, kernel=get("kernel"), stride=st.stride if j == 0 else 1,
                                        se=get("se"), act=get("act")))
                channels = width
        return ArchSpec(resolution=self.resolution, in_channels=self.in_channels, num_classes=self.num_classes,
                        stem=self.stem, blocks=tuple(blocks), last=self.last, head=self.head)

    def largest_assignment(self) -> dict[str, Any]:
        """The member with the most of everything: deepest, widest, largest kernel and expansion, SE."""
        return self._extreme_assignment(max)

    def smallest_assignment(self) -> dict[str, Any]:
        """The member with the least of everything: shallowest, narrowest, smallest kernel and
        expansion, no SE where the space allows it."""
        return self._extreme_assignment(min)

    def _extreme_assignment(self, pick) -> dict[str, Any]:
        """``pick`` (min or max) of every depth, width, kernel, expansion and SE choice; the first activation."""
        out: dict[str, Any] = {}
        for i, st in enumerate(self.stages):
            out[f"s{i}.depth"], out[f"s{i}.width"] = pick(st.depth), pick(st.width)
            for j in range(st.max_depth):
                for key in BLOCK_CHOICES:
                    choices = getattr(st, key)
                    out[f"s{i}.b{j}.{key}"] = choices[0] if key == "act" else pick(choices)
        return out

    def sample_assignment(self, rng: random.Random | int) -> dict[str, Any]:
        rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        return {d.name: rng.choice(d.choices) for d in self.decisions}

    def sample(self, rng: random.Random | int) -> ArchSpec:
        """A uniformly sampled member (deterministic for a given seed)."""
        return self.decode(self.sample_assignment(rng))

    def encode(self, spec: ArchSpec) -> dict[str, Any]:
        """The assignment of a member spec; raises SpaceError naming the first mismatch.

        Decisions of blocks past a stage's depth get their first choice."""
        fixed = {"resolution": (spec.resolution, self.resolution), "in_channels": (spec.in_channels, self.in_channels),
                 "num_classes": (spec.num_classes, self.num_classes), "stem": (spec.stem, self.stem),
                 "last": (spec.last, self.last), "head": (spec.head, self.head)}
        for key, (got, want) in fixed.items():
            if got != want:
                raise SpaceError(f"spec not in space {self.name!r}: {key} is {got}, the space fixes {want}")
        assignment = {d.name: d.choices[0] for d in self.decisions}
        problems: list[str] = []
        split = self._split_stages(tuple(spec.blocks), 0, problems)
        if split is None:
            raise SpaceError(f"spec not in space {self.name!r}: {problems[0] if problems else 'blocks do not fit'}")
        for i, stage_blocks in enumerate(split):
            assignment[f"s{i}.depth"], assignment[f"s{i}.width"] = len(stage_blocks), stage_blocks[0].out_channels
            for j, b in enumerate(stage_blocks):
                values = {"kernel": b.kernel, "expansion": _ratio_for(b, self.stages[i].expansion), "se": b.se,
                          "act": b.act}
                for key, value in values.items():
                    assignment[f"s{i}.b{j}.{key}"] = value
        return assignment

    def _stage_problem(self, i: int, blocks: tuple[BlockSpec, ...]) -> str | None:
        """Why ``blocks`` cannot be stage ``i`` (None when they can)."""
        st = self.stages[i]
        width = blocks[0].out_channels
        if width not in st.width:
            return f"stage {i} width {width} not in {list(st.width)}"
        for j, b in enumerate(blocks):
            stride = st.stride if j == 0 else 1
            if b.stride != stride:
                return f"stage {i} block {j} stride {b.stride}, the space fixes {stride}"
            if b.out_channels != width:
                return f"stage {i} block {j} width {b.out_channels} differs from the stage's {width}"
            if _ratio_for(b, st.expansion) is None:
                return (f"stage {i} block {j} expansion width {b.exp_channels} from {b.in_channels} matches no "
                        f"ratio in {list(st.expansion)}")
            for key, value in (("kernel", b.kernel), ("se", b.se), ("act", b.act)):
                if value not in getattr(st, key):
                    return f"stage {i} block {j} {key} {value!r} not in {list(getattr(st, key))}"
        return None

    def _split_stages(self, blocks: tuple[BlockSpec, ...], i: int, problems: list[str]):
        """Cut ``blocks`` into the remaining stages (backtracking over depths); None if impossible."""
        if i == len(self.stages):
            if blocks:
                problems.append(f"{len(blocks)} blocks left over after the last stage")
                return None
            return []
        for depth in sorted(self.stages[i].depth, reverse=True):
            if depth > len(blocks):
                continue
            problem = self._stage_problem(i, blocks[:depth])
            if problem:
                problems.append(problem)
                continue
            rest = self._split_stages(blocks[depth:], i + 1, problems)
            if rest is not None:
                return [blocks[:depth], *rest]
        if not problems:
            problems.append(f"stage {i} cannot take {len(blocks)} remaining blocks (depth choices "
                            f"{list(self.stages[i].depth)})")
        return None

    def contains(self, spec: ArchSpec) -> bool:
        try:
            self.encode(spec)
        except SpaceError:
            return False
        return True

    @property
    def baseline(self) -> ArchSpec:
        """The space's reference network (named in the YAML file; always a member)."""
        return _resolve_baseline(self)

    # -- identity --
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "input": {"resolution": self.resolution, "channels": self.in_channels},
            "num_classes": self.num_classes,
            "stem": vars_of(self.stem),
            "stages": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in vars_of(st).items()}
                       for st in self.stages],
            "last_stage": vars_of(self.last),
            "head": vars_of(self.head),
        }

    @property
    def hash(self) -> str:
        """Content hash of what the space can produce (the name and description do not count)."""
        data = self.to_dict()
        data.pop("name")
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def vars_of(obj: Any) -> dict[str, Any]:
    return {k: getattr(obj, k) for k in obj.__dataclass_fields__}


def _ratio_for(block: BlockSpec, ratios: tuple[float, ...]) -> float | None:
    for ratio in ratios:
        if expansion_width(block.in_channels, ratio) == block.exp_channels:
            return ratio
    return None


# --- loading -----------------------------------------------------------------------------------

def _choices(where: str, value: Any, kind: type | tuple, allowed: tuple | None = None) -> tuple:
    if not isinstance(value, list):
        value = [value]
    if not value:
        raise SpaceError(f"{where}: empty choice list")
    if len(value) > MAX_CHOICES:
        raise SpaceError(f"{where}: at most {MAX_CHOICES} choices, got {len(value)}")
    for v in value:
        ok = isinstance(v, kind) and not (kind is not bool and isinstance(v, bool))
        if ok and isinstance(v, float) and not math.isfinite(v):
            ok = False
        if not ok:
            raise SpaceError(f"{where}: {short(v)} is not a valid choice")
        if allowed is not None and v not in allowed:
            raise SpaceError(f"{where}: {short(v)} is not one of {', '.join(map(str, allowed))}")
    if len(set(value)) != len(value):
        raise SpaceError(f"{where}: duplicated choice in {value}")
    return tuple(value)


def _stage(where: str, data: Any) -> StageChoices:
    if not isinstance(data, dict):
        raise SpaceError(f"{where}: expected a mapping")
    unknown = sorted(map(str, set(data) - STAGE_KEYS))
    if unknown:
        raise SpaceError(f"{where}: unknown key {short(unknown[0])} (expected: {', '.join(sorted(STAGE_KEYS))})")
    for key in ("stride", "depth", "width", *BLOCK_CHOICES):
        if key not in data:
            raise SpaceError(f"{where}: missing key {key!r}")
    stride = data["stride"]
    if isinstance(stride, bool) or stride not in STRIDES:
        raise SpaceError(f"{where}.stride: {short(stride)} is not one of 1, 2")
    depth = _choices(f"{where}.depth", data["depth"], int)
    width = _choices(f"{where}.width", data["width"], int)
    for name, values, most in (("depth", depth, MAX_STAGE_DEPTH), ("width", width, MAX_CHANNELS)):
        if min(values) < 1:
            raise SpaceError(f"{where}.{name}: choices must be >= 1, got {min(values)}")
        if max(values) > most:
            raise SpaceError(f"{where}.{name}: choices must be <= {most:,}, got {short(max(values))}")
    expansion = tuple(float(v) if v != 1 else 1 for v in _choices(f"{where}.expansion", data["expansion"], (int, float)))
    if min(expansion) < 1 or max(expansion) > MAX_EXPANSION:
        raise SpaceError(f"{where}.expansion: ratios must be in [1, {MAX_EXPANSION}], got {list(expansion)}")
    return StageChoices(stride=stride, depth=depth, width=width,
                        kernel=_choices(f"{where}.kernel", data["kernel"], int, KERNELS),
                        expansion=expansion, se=_choices(f"{where}.se", data["se"], bool),
                        act=_choices(f"{where}.act", data["act"], str, ACTIVATIONS))


def _fixed(where: str, kind: type, data: Any):
    if not isinstance(data, dict):
        raise SpaceError(f"{where}: expected a mapping")
    names = set(kind.__dataclass_fields__)
    unknown = sorted(map(str, set(data) - names))
    if unknown:
        raise SpaceError(f"{where}: unknown key {short(unknown[0])} (expected: {', '.join(sorted(names))})")
    try:
        part = kind(**data)
        part.validate(where)
    except TypeError as exc:
        raise SpaceError(f"{where}: {exc}") from None
    return part


def space_from_dict(data: Any, source: str = "<memory>") -> SearchSpace:
    if not isinstance(data, dict):
        raise SpaceError(f"{source}: a space file must be a YAML mapping")
    unknown = sorted(map(str, set(data) - TOP_KEYS))
    if unknown:
        raise SpaceError(f"{source}: unknown key {short(unknown[0])} (expected: {', '.join(sorted(TOP_KEYS))})")
    for key in ("name", "input", "num_classes", "stem", "stages", "last_stage"):
        if key not in data:
            raise SpaceError(f"{source}: missing key {key!r}")
    for key in ("name", "description"):
        value = data.get(key, "")
        if not isinstance(value, (str, int, float)) or isinstance(value, bool) or len(str(value)) > MAX_TEXT:
            raise SpaceError(f"{source}: {key}: expected text of at most {MAX_TEXT} characters")
    inp = data["input"]
    if not isinstance(inp, dict) or set(inp) != {"resolution", "channels"}:
        raise SpaceError(f"{source}: input must have exactly 'resolution' and 'channels'")
    stages = data["stages"]
    if not isinstance(stages, list) or not stages:
        raise SpaceError(f"{source}: stages: empty choice list")
    if len(stages) > MAX_STAGES:
        raise SpaceError(f"{source}: stages: at most {MAX_STAGES}, got {len(stages)}")
    try:
        space = SearchSpace(
            name=str(data["name"]), description=str(data.get("description", "")),
            resolution=inp["resolution"], in_channels=inp["channels"], num_classes=data["num_classes"],
            stem=_fixed("stem", StemSpec, data["stem"]),
            stages=tuple(_stage(f"stages[{i}]", st) for i, st in enumerate(stages)),
            last=_fixed("last_stage", LastStageSpec, data["last_stage"]),
            head=_fixed("head", HeadSpec, data.get("head", {})),
            baseline_source=data.get("baseline"), source=source,
        )
        # Validate the fixed parts and the extreme members by building them (the largest member
        # must fit the spec limits, e.g. the memory bound, or no network of the space can be trained).
        space.decode({d.name: d.choices[0] for d in space.decisions})
        space.decode(space.largest_assignment())
        if space.baseline_source is not None:
            space.baseline  # noqa: B018 - resolves and checks membership
    except SpaceError as exc:
        raise SpaceError(f"{source}: {exc}") from None
    except SpecError as exc:
        raise SpaceError(f"{source}: {exc}") from None
    except TypeError as exc:  # e.g. baseline options that are not a network's parameters
        raise SpaceError(f"{source}: {exc}") from None
    return space


def load_space(path: str | Path) -> SearchSpace:
    path = Path(path)
    data = read_yaml(path, SpaceError, "space file")
    return space_from_dict(data, source=str(path))


def _resolve_baseline(space: SearchSpace) -> ArchSpec:
    from nas.spec.named import named_spec

    src = space.baseline_source
    if src is None:
        raise SpaceError(f"{space.source}: the space names no baseline network")
    if isinstance(src, str):
        spec = ArchSpec.from_string(src)
    elif isinstance(src, dict) and "network" in src:
        options = {k: v for k, v in src.items() if k != "network"}
        spec = named_spec(src["network"], resolution=space.resolution, in_channels=space.in_channels,
                          num_classes=space.num_classes, **options)
    else:
        raise SpaceError("baseline: expected a spec string or {network: NAME, ...}")
    try:
        space.encode(spec)
    except SpaceError as exc:
        raise SpaceError(f"baseline is not a member of the space: {exc}") from None
    return spec
