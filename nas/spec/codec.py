"""The one-line string form of a spec, readable and writable by a person.

Tokens are separated by spaces, in network order::

    in224x3 stem_c16_k3_s2_hs ir_k3_e16_c16_s2_se_re ir_k3_e72_c24_s2_re ... last_c576_hs head_c1024_hs_d0.2 cls1000

==========================  ====================================================================
``inRxC``                   input resolution R (square) and C input channels
``stem_cN_kK_sS_ACT``       stem conv: N filters, kernel K, stride S
``ir_kK_eE_cN_sS[_se]_ACT`` inverted residual: kernel K, *expansion width* E (channels, as the
                            paper's "exp" column, not a ratio), N output channels, stride S,
                            optional SE; the input width is the previous layer's output
``last_cN[_se]_ACT``        last stage 1x1 conv to N channels (optional SE)
``head_cH_ACT_dP``          classifier hidden width H (0: no hidden layer) and dropout P
``clsK``                    K classes
==========================  ====================================================================

Activations: ``re`` = ReLU, ``r6`` = ReLU6, ``hs`` = hard-swish.
"""

from __future__ import annotations

import re

from nas.spec.arch import MAX_BLOCKS, ArchSpec, BlockSpec, HeadSpec, LastStageSpec, SpecError, StemSpec

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
