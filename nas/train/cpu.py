"""What this CPU offers for training: its model name and bf16 flags, the fused optimizer steps of
this torch build, and the precision ``auto`` resolves to."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# A long training: ``compile: auto`` compiles it (nas.train.compiled) and ``precision: auto`` runs it
# in bf16 autocast on a CPU with AVX512-BF16 or AMX. Compiling, measured (Intel Xeon model 167, 2 threads,
# Fashion-MNIST baseline, batch 128, benchmarks/train_throughput.py --compile): the first compiled step
# costs ~52 s, each later one saves ~54 ms (704 against 542 img/s), so it pays off after about 1,000
# steps; twice that leaves room for smaller networks, which save less per step. bf16 at this length was
# measured faster than fp32 at the same accuracy (Intel Xeon with AVX512-BF16 and AMX, torch 2.13,
# 2 threads): the trainer compiled ran 789 img/s in bf16 against
# 704 in fp32 (benchmarks/train_throughput.py, side by side); the Fashion-MNIST baseline's 12 epochs
# (SGD defaults, seed 0) reached test 92.25 % (val 92.28 %) in bf16 and 92.05 % (val 92.67 %) in fp32.
# Short trainings (search proxies, NetAdapt's proposals) stay fp32: at one epoch bf16 was 0.66 pt
# behind on one seed, and their accuracies rank candidates against ones trained before.
LONG_TRAINING_STEPS = 2000


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The fields of the first processor in /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    return fields


def cpu_model() -> str:
    return _cpuinfo().get("model name", "unknown")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    return frozenset(_cpuinfo().get("flags", "").split())


def cpu_family() -> tuple[str, int | None]:
    """(vendor, family) as /proc/cpuinfo gives them, e.g. ("AuthenticAMD", 26); ("", None) if unknown."""
    fields = _cpuinfo()
    family = fields.get("cpu family", "")
    return fields.get("vendor_id", ""), int(family) if family.isdigit() else None


def has_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX)."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in BF16_FLAGS)


# AMD's family 26 (0x1A, Zen 5) has full-width AVX-512 datapaths; family 25 (Zen 4) runs them in two halves.
FULL_WIDTH_AVX512_AMD_FAMILY = 26


def small_map_depthwise(flags: frozenset[str] | None = None, compiled: bool = False,
                        family: tuple[str, int | None] | None = None) -> bool:
    """Whether trainings compute the weight gradient of large-kernel depthwise layers on small maps with
    a batched matrix multiply (:mod:`nas.train.depthwise`).

    * On CPUs without AVX-512, compiled or not: there oneDNN's took 68 ms for the Fashion-MNIST
      baseline's 576-channel 4x4 layer against 7.7 ms. The trainer ran 1.47x a plain loop's images/s
      without it and 1.80x with it, compiled 1.76x and 2.15x (AMD EPYC family 23, AVX2, 2 threads,
      benchmarks/train_throughput.py).
    * In a compiled training (the other depthwise layers taking inductor's tap sum) on AMD family 26
      and newer (Zen 5): the compiled bf16 trainer ran 1.07x and 1.08x as fast with it as with the tap
      sum alone, in two side-by-side runs (AMD EPYC family 26 model 2, 2 threads). Not on family 25
      (Zen 4), where it ran 0.91x, nor on the Intel Xeon with AMX, where the product alone was 3-6x
      slower than the compiled tap sum.
    """
    flags = cpu_flags() if flags is None else flags
    if "avx512f" not in flags:
        return True
    if not compiled:
        return False
    vendor, number = cpu_family() if family is None else family
    return vendor == "AuthenticAMD" and number is not None and number >= FULL_WIDTH_AVX512_AMD_FAMILY


def cpu_summary() -> str:
    """One line: the CPU model and which bf16 flags it has."""
    flags = cpu_flags()
    marks = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in BF16_FLAGS)
    return f"{cpu_model()} ({marks}; torch {torch.__version__}, {torch.get_num_threads()} threads)"


def resolve_precision(precision: str, total_steps: int, flags: frozenset[str] | None = None) -> str:
    """``fp32`` or ``bf16``: ``auto`` is bf16 on a bf16 CPU for a training of at least
    :data:`LONG_TRAINING_STEPS` steps, fp32 otherwise."""
    if precision != "auto":
        return precision
    return "bf16" if total_steps >= LONG_TRAINING_STEPS and has_bf16(flags) else "fp32"


def resolve_scoring_precision(precision: str, flags: frozenset[str] | None = None) -> str:
    """``fp32`` or ``bf16`` for scoring candidates with a supernet: ``auto`` is bf16 on a bf16 CPU. All
    candidates of a search are scored alike, and bf16 ranks them as fp32 does: over 30 members of the
    Fashion-MNIST space scored by one trained supernet, Kendall tau 0.947 between the two precisions'
    val accuracies (mean difference 0.06 pt, range 81.6-84.3 %), 1.47 against 2.20 s per candidate
    (Intel Xeon model 167, AMX, 2 threads)."""
    if precision != "auto":
        return precision
    return "bf16" if has_bf16(flags) else "fp32"


# Evaluation's images per batch: about the same activation bytes in fp32 and in bf16, small enough for a
# batch's activations to stay in the CPU's caches. Measured (AMD EPYC family 25 model 17, 2 threads, the
# Fashion-MNIST baseline and 7 sampled members, 3,000 val images, BatchNorm folded): fp32 at 128 took 0.73x
# the time of batches of 512 (median; 0.49-0.97x), 256 0.85x; bf16 autocast at 256 0.94x, at 128 1.05x.
EVAL_BATCH = {"fp32": 128, "bf16": 256}


def eval_batch_size() -> int:
    """Images per evaluation batch for the precision in force (bf16 autocast on the CPU or not)."""
    bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    return EVAL_BATCH["bf16" if bf16 else "fp32"]


def autocast(precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on the CPU for ``bf16``, nothing for ``fp32``."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


@functools.lru_cache(maxsize=None)
def fused_supported(optimizer: str) -> bool:
    """Whether this torch build has a fused CPU step for ``sgd`` / ``adamw`` (tried once on a toy tensor)."""
    param = torch.nn.Parameter(torch.zeros(4))
    param.grad = torch.ones(4)
    try:
        if optimizer == "adamw":
            torch.optim.AdamW([param], lr=0.1, fused=True).step()
        else:
            torch.optim.SGD([param], lr=0.1, momentum=0.9, nesterov=True, fused=True).step()
    except (RuntimeError, TypeError, ValueError):
        return False
    return True
