"""dltk_mm.core: building blocks (residual unit, upsampling, upscore) and losses."""

from dltk_mm.core.losses import (
    cross_entropy_loss,
    dice_cross_entropy_loss,
    dice_loss,
    get_loss,
    soft_dice_per_class,
)
from dltk_mm.core.residual_unit import (
    ChannelZeroPadding,
    LayerProvider,
    fresh_layers,
    residual_unit,
    strided_kernel_size,
)
from dltk_mm.core.upsampling import LinearUpsampling3D, linear_upsample_3d, linear_upsample_axis
from dltk_mm.core.upscore import upscore_kernel_size, upscore_unit

__all__ = [
    "ChannelZeroPadding",
    "LayerProvider",
    "LinearUpsampling3D",
    "cross_entropy_loss",
    "dice_cross_entropy_loss",
    "dice_loss",
    "fresh_layers",
    "get_loss",
    "linear_upsample_3d",
    "linear_upsample_axis",
    "residual_unit",
    "soft_dice_per_class",
    "strided_kernel_size",
    "upscore_kernel_size",
    "upscore_unit",
]
