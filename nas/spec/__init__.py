"""Architecture specs as pure data (no torch): dataclasses, string form, spaces, counting."""

from nas.spec.arch import (ACTIVATIONS, KERNELS, ArchSpec, BlockSpec, HeadSpec, LastStageSpec, SpecError, StemSpec,
                           conv_output_size, make_divisible)
from nas.spec.count import count_madds, count_params, layer_table
from nas.spec.named import NAMED_NETWORKS, mobilenetv3_large, mobilenetv3_small, named_spec
from nas.spec.space import Decision, SearchSpace, SpaceError, load_space

__all__ = [
    "ACTIVATIONS", "KERNELS", "ArchSpec", "BlockSpec", "HeadSpec", "LastStageSpec", "SpecError", "StemSpec",
    "conv_output_size", "make_divisible", "count_madds", "count_params", "layer_table", "NAMED_NETWORKS",
    "mobilenetv3_large", "mobilenetv3_small", "named_spec", "Decision", "SearchSpace",
    "SpaceError", "load_space",
]
