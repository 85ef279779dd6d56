"""dltk_mm.core: building blocks (residual unit, upsampling, upscore), losses and metrics.

The TensorFlow-based names are imported on first use, so that NumPy-only users (``metrics``, the
evaluate command) start without loading TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY_NAMES: dict[str, str] = {
    "BatchNormalization3D": "dltk_mm.core.batch_norm",
    "ChannelZeroPadding": "dltk_mm.core.residual_unit",
    "LayerProvider": "dltk_mm.core.residual_unit",
    "LinearUpsampling3D": "dltk_mm.core.upsampling",
    "StridedConv3D": "dltk_mm.core.strided_conv",
    "space_to_depth_conv3d": "dltk_mm.core.strided_conv",
    "cross_entropy_loss": "dltk_mm.core.losses",
    "dice_cross_entropy_loss": "dltk_mm.core.losses",
    "dice_loss": "dltk_mm.core.losses",
    "fresh_layers": "dltk_mm.core.residual_unit",
    "get_loss": "dltk_mm.core.losses",
    "linear_upsample_3d": "dltk_mm.core.upsampling",
    "linear_upsample_axis": "dltk_mm.core.upsampling",
    "residual_unit": "dltk_mm.core.residual_unit",
    "soft_dice_per_class": "dltk_mm.core.losses",
    "strided_kernel_size": "dltk_mm.core.residual_unit",
    "upscore_kernel_size": "dltk_mm.core.upscore",
    "upscore_unit": "dltk_mm.core.upscore",
}

__all__ = sorted(_LAZY_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _LAZY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAMES))
