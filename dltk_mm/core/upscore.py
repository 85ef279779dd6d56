"""Upscore unit of the FCN decoder (J. Long et al., CVPR 2015; DLTK; Valindria et al. 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from dltk_mm.core.residual_unit import (
    BATCH_NORM,
    CONV,
    LayerProvider,
    as_triple,
    batch_norm_factory,
    conv_factory,
    fresh_layers,
)
from dltk_mm.core.upsampling import LinearUpsampling3D
from dltk_mm.errors import ConfigurationError

UPSCORE_KERNELS = {"paper": (1, 1, 1), "code": (3, 3, 3)}


def upscore_kernel_size(upscore_kernel: str | int | Sequence[int]) -> tuple[int, int, int]:
    """Kernel of the upscore reduction convolution.

    Args:
        upscore_kernel: ``"paper"`` (1^3), ``"code"`` (3^3, the authors' code) or a kernel size.
    """
    if isinstance(upscore_kernel, str):
        if upscore_kernel not in UPSCORE_KERNELS:
            raise ConfigurationError(
                f"upscore_kernel must be 'paper', 'code' or a kernel size, got {upscore_kernel!r}"
            )
        return UPSCORE_KERNELS[upscore_kernel]
    return as_triple(upscore_kernel, "upscore_kernel")


def upscore_unit(
    inputs: tf.Tensor,
    skip: tf.Tensor,
    filters: int,
    strides: int | Sequence[int] = (2, 2, 2),
    kernel_size: int | Sequence[int] = (1, 1, 1),
    border: str = "replicate",
    batch_norm_momentum: float = 0.99,
    batch_norm_epsilon: float = 1e-3,
    layers: LayerProvider | None = None,
    name: str = "upscore",
) -> tf.Tensor:
    """Wires an upscore unit (docs/paper.md, section 2.3).

    ``x = inputs``; if its channel count differs from ``filters`` (the number of classes) a
    convolution with ``kernel_size`` (paper 1^3, code 3^3) reduces it; ``x`` is upsampled by
    ``strides`` with the fixed linear kernel (:class:`LinearUpsampling3D`); the skip feature map
    goes through a 1^3 convolution to ``filters`` and batch norm; the output is the sum. No
    nonlinearity. (The paper reduces when x has *more* channels than classes; a narrower x is
    projected as well, since the sum needs equal channels - this never happens at paper widths.)

    Args:
        inputs: features from the deeper scale, ``(b, z, y, x, c)``.
        skip: features of this scale, ``(b, z*sz, y*sy, x*sx, c')``.
        filters: output channels (the number of classes).
        strides: upsampling factor per axis (the stride of the deeper scale).
        kernel_size: kernel of the reduction convolution.
        border: upsampling border mode, ``"replicate"`` (paper) or ``"zero"`` (code).
        batch_norm_momentum: batch-norm momentum.
        batch_norm_epsilon: batch-norm epsilon.
        layers: decides which weighted layers are new or shared; default: all new.
        name: prefix of the layer names.

    Returns:
        The unit's output at the skip's resolution with ``filters`` channels.
    """
    layers = layers or fresh_layers
    x = inputs
    if x.shape[-1] != filters:
        reduce = conv_factory(filters, as_triple(kernel_size, "kernel_size"))
        x = layers(f"{name}_reduce", reduce, CONV)(x)
    x = LinearUpsampling3D(strides, border, name=f"{name}_upsample")(x)
    s = layers(f"{name}_skip_conv", conv_factory(filters, (1, 1, 1)), CONV)(skip)
    s = layers(
        f"{name}_skip_bn", batch_norm_factory(batch_norm_momentum, batch_norm_epsilon), BATCH_NORM
    )(s)
    return keras.layers.Add(name=f"{name}_add")([x, s])
