"""Compiled training steps: ``torch.compile`` of the model, with a depthwise weight gradient it can fuse.

oneDNN's weight gradient of a 5x5 depthwise convolution was about a quarter of the training step
(Intel Xeon model 167, 2 threads, torch.profiler). Inside a compiled model the depthwise layers compute
it as a sum over the kernel's taps, which inductor fuses into one loop
(:func:`nas.train.depthwise.depthwise_weight_grad`; the layers are patched by
:mod:`nas.train.layer_patches`).

``torch.compile`` costs tens of seconds on the first step (a C++ compiler builds the kernels; the
compiled graphs are cached on disk for later runs of the same shapes), so ``compile: auto`` uses it
only for trainings of at least :data:`nas.train.cpu.LONG_TRAINING_STEPS` steps, and only where a C++ compiler is found.
Any failure to compile falls back to the eager model with one line on stderr.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys

import torch
import torch.nn as nn

from nas.train.cpu import LONG_TRAINING_STEPS


@functools.lru_cache(maxsize=1)
def compiler_available() -> bool:
    """Whether inductor can build CPU kernels here: a C++ compiler on PATH (or in $CXX)."""
    names = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
    return any(name and shutil.which(name) for name in names)


def resolve_compile(setting: str, total_steps: int) -> bool:
    """``on`` / ``off`` as given; ``auto`` compiles long trainings where a C++ compiler exists."""
    if setting == "off":
        return False
    if setting == "on":
        return True
    return total_steps >= LONG_TRAINING_STEPS and compiler_available()


# Each architecture trained in one process is another compilation of ``Network.forward``; past this
# many, a first step fails (and trains eagerly, see the trainer) rather than silently running the
# shifted depthwise gradient uncompiled, where it is slower than oneDNN's.
RECOMPILE_LIMIT = 64


def compiled_model(model: nn.Module) -> nn.Module | None:
    """``torch.compile(model)``, or None (with one line on stderr) when this torch cannot compile.

    Random ops (dropout) use aten's generator, so a compiled training draws the same masks as an
    eager one and a seed means the same training either way."""
    try:
        import torch._dynamo.config as dynamo_config
        import torch._inductor.config as inductor_config

        inductor_config.fallback_random = True
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
        dynamo_config.fail_on_recompile_limit_hit = True
        return torch.compile(model)
    except Exception as exc:  # noqa: BLE001 - any failure means: train eagerly
        warn_eager(exc)
        return None


def warn_eager(exc: BaseException) -> None:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    print(f"torch.compile failed ({type(exc).__name__}: {first}); training eagerly", file=sys.stderr, flush=True)
