"""From spec to ``nn.Module``: layers, blocks and the builder; named networks re-exported."""

from nas.models.builder import Network, build_model, count_module_params
from nas.spec.named import NAMED_NETWORKS, mobilenetv3_large, mobilenetv3_small, named_spec

__all__ = ["Network", "build_model", "count_module_params", "NAMED_NETWORKS", "mobilenetv3_large",
           "mobilenetv3_small", "named_spec"]
