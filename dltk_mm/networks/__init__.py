"""dltk_mm.networks: the FCN streams, the training schemes and the multi-stream model."""

from dltk_mm.networks.fcn import LayerRegistry, block_names, build_stream
from dltk_mm.networks.multistream import MultiStreamModel, build_multistream, make_optimizer
from dltk_mm.networks.schemes import (
    BLOCK_NAMES,
    SCHEMES,
    Scheme,
    default_learning_rate,
    get_scheme,
)

__all__ = [
    "BLOCK_NAMES",
    "SCHEMES",
    "LayerRegistry",
    "MultiStreamModel",
    "Scheme",
    "block_names",
    "build_multistream",
    "build_stream",
    "default_learning_rate",
    "get_scheme",
    "make_optimizer",
]
