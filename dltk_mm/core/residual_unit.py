"""Pre-activation residual unit (He et al., ECCV 2016) as used by DLTK and Valindria et al. 2018.

The unit is written as a *wiring function*: it takes a symbolic (or eager) tensor and connects
layers obtained from a :data:`LayerProvider`. The provider decides whether a layer is new or an
existing (shared) one, which is how the multi-stream networks share blocks between modalities
(see :mod:`dltk_mm.networks.fcn`). Without a provider every call creates fresh layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import keras
import tensorflow as tf

from dltk_mm.core.batch_norm import BatchNormalization3D
from dltk_mm.core.strided_conv import StridedConv3D
from dltk_mm.errors import ConfigurationError

LayerFactory = Callable[[str], keras.layers.Layer]
"""Creates a layer given its final (unique) name."""

CONV = "conv"
BATCH_NORM = "batch_norm"


class LayerProvider(Protocol):
    """Returns the layer to use for one weighted layer of a block.

    Args:
        name: the layer's name inside its block, e.g. ``"unit0_conv0"``.
        factory: creates the layer when the provider needs a new one; called with the final name.
        kind: :data:`CONV` or :data:`BATCH_NORM`; lets a provider share convolutions while keeping
            batch-norm layers per modality (MSBN).

    Returns:
        A (possibly shared, already used) Keras layer.
    """

    def __call__(self, name: str, factory: LayerFactory, kind: str) -> keras.layers.Layer: ...


def fresh_layers(name: str, factory: LayerFactory, kind: str) -> keras.layers.Layer:
    """The trivial :class:`LayerProvider`: a new layer for every request."""
    del kind
    return factory(name)


def as_triple(value: int | Sequence[int], argument: str) -> tuple[int, int, int]:
    """Normalises an int or a 3-sequence of positive ints to a 3-tuple.

    Raises:
        ConfigurationError: for anything else.
    """
    triple = (value,) * 3 if isinstance(value, int) else tuple(value)
    if len(triple) != 3 or not all(isinstance(v, int) and v >= 1 for v in triple):
        raise ConfigurationError(
            f"`{argument}` must be a positive int or a sequence of 3 positive ints, got {value!r}"
        )
    return triple  # type: ignore[return-value]


def strided_kernel_size(
    kernel_size: Sequence[int], strides: Sequence[int], strided_kernel: str
) -> tuple[int, int, int]:
    """Kernel size of the first (possibly strided) convolution of a residual unit.

    Args:
        kernel_size: the unit's kernel size (3^3 in the paper).
        strides: the unit's strides.
        strided_kernel: ``"paper"``: twice the stride on strided axes (4^3 for stride 2; the
            paper's "kernel size twice the stride", as later DLTK); ``"code"``: the kernel equals
            the stride (2^3 for stride 2), as the early DLTK module used by the authors' code,
            which used the stride as kernel on every axis of a strided unit.

    Returns:
        The kernel size (kernel_size itself if the unit is not strided).
    """
    if strided_kernel not in ("paper", "code"):
        raise ConfigurationError(
            f"strided_kernel must be 'paper' or 'code', got {strided_kernel!r}"
        )
    if all(s == 1 for s in strides):
        return tuple(kernel_size)  # type: ignore[return-value]
    if strided_kernel == "code":
        return tuple(strides)  # type: ignore[return-value]
    return tuple(2 * s if s > 1 else k for k, s in zip(kernel_size, strides, strict=True))  # type: ignore[return-value]


@keras.saving.register_keras_serializable(package="dltk_mm")
class ChannelZeroPadding(keras.layers.Layer):
    """Zero-pads the channel (last) axis: ``before`` zeros in front, ``after`` behind."""

    def __init__(self, before: int, after: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.before = int(before)
        self.after = int(after)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        rank = len(inputs.shape)
        return tf.pad(inputs, [[0, 0]] * (rank - 1) + [[self.before, self.after]])

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        channels = input_shape[-1]
        new = None if channels is None else channels + self.before + self.after
        return (*input_shape[:-1], new)

    def get_config(self) -> dict:
        return {**super().get_config(), "before": self.before, "after": self.after}


def conv_factory(
    filters: int, kernel_size: Sequence[int], strides: Sequence[int] = (1, 1, 1)
) -> LayerFactory:
    """Factory of the convolutions used throughout (docs/paper.md, section 2.1).

    No bias, LeCun-uniform initialisation, 'same' padding, channels-last. Strided convolutions
    are :class:`~dltk_mm.core.strided_conv.StridedConv3D` (a ``Conv3D`` with the same weights
    and results, computed as space-to-depth + stride-1 convolution where TensorFlow's generic CPU
    kernels would make its gradients slow).
    """
    layer_class = StridedConv3D if any(s > 1 for s in strides) else keras.layers.Conv3D

    def make(name: str) -> keras.layers.Layer:
        return layer_class(
            filters,
            tuple(kernel_size),
            strides=tuple(strides),
            padding="same",
            use_bias=False,
            kernel_initializer="lecun_uniform",
            name=name,
        )

    return make


def batch_norm_factory(momentum: float, epsilon: float) -> LayerFactory:
    """Factory of batch-norm layers (momentum 0.99, epsilon 1e-3; docs/paper.md, section 2.1)."""

    def make(name: str) -> keras.layers.Layer:
        return BatchNormalization3D(momentum=momentum, epsilon=epsilon, name=name)

    return make


def residual_unit(
    inputs: tf.Tensor,
    filters: int,
    strides: int | Sequence[int] = (1, 1, 1),
    kernel_size: int | Sequence[int] = (3, 3, 3),
    strided_kernel: str = "paper",
    leaky_relu_alpha: float = 0.01,
    batch_norm_momentum: float = 0.99,
    batch_norm_epsilon: float = 1e-3,
    layers: LayerProvider | None = None,
    name: str = "unit",
) -> tf.Tensor:
    """Wires a 3D pre-activation residual unit (He et al., "Identity mappings", ECCV 2016).

    ``BN -> leaky ReLU -> conv(strides) -> BN -> leaky ReLU -> conv(kernel_size)`` plus the
    shortcut, with no activation after the sum (Valindria et al. 2018, section 3; docs/paper.md,
    section 2.2).
    The shortcut is the raw unit input; when the unit is strided it is max-pooled with
    window = stride, following DLTK (``max_pooling3d`` in ``dltk/core/residual_unit.py`` and
    ``tf.nn.max_pool3d`` in the early ``dltk/core/modules/residual_units.py`` the authors used).
    Pooling uses 'same' padding, which equals DLTK's 'valid' for sizes divisible by the stride and
    matches the strided convolution's output size otherwise. When the filter count grows the
    shortcut is zero-padded on the channel axis, floor(d/2) channels before and ceil(d/2) after;
    when it shrinks a 1^3 convolution projects it.

    Args:
        inputs: ``(batch, z, y, x, channels)`` tensor with a static channel count.
        filters: output channels.
        strides: strides of the first convolution (and the shortcut pooling window).
        kernel_size: kernel of the convolutions (of the second one always; of the first one when
            the unit is not strided).
        strided_kernel: ``"paper"`` (kernel 2 x stride on strided axes) or ``"code"`` (kernel =
            stride); see :func:`strided_kernel_size`.
        leaky_relu_alpha: negative slope of the leaky ReLU (0.01, the authors' code).
        batch_norm_momentum: batch-norm momentum.
        batch_norm_epsilon: batch-norm epsilon.
        layers: decides which weighted layers are new or shared; default: all new.
        name: prefix of the layer names (``{name}_bn0``, ``{name}_conv0``, ...).

    Returns:
        The unit's output, ``(batch, ceil(z/sz), ceil(y/sy), ceil(x/sx), filters)``.
    """
    layers = layers or fresh_layers
    strides = as_triple(strides, "strides")
    kernel_size = as_triple(kernel_size, "kernel_size")
    in_filters = inputs.shape[-1]
    if in_filters is None:
        raise ConfigurationError(f"{name}: the input's channel count must be static")
    first_kernel = strided_kernel_size(kernel_size, strides, strided_kernel)
    batch_norm = batch_norm_factory(batch_norm_momentum, batch_norm_epsilon)

    x = layers(f"{name}_bn0", batch_norm, BATCH_NORM)(inputs)
    x = keras.layers.LeakyReLU(negative_slope=leaky_relu_alpha, name=f"{name}_act0")(x)
    x = layers(f"{name}_conv0", conv_factory(filters, first_kernel, strides), CONV)(x)
    x = layers(f"{name}_bn1", batch_norm, BATCH_NORM)(x)
    x = keras.layers.LeakyReLU(negative_slope=leaky_relu_alpha, name=f"{name}_act1")(x)
    x = layers(f"{name}_conv1", conv_factory(filters, kernel_size), CONV)(x)

    shortcut = inputs
    if any(s > 1 for s in strides):
        shortcut = keras.layers.MaxPooling3D(
            pool_size=strides, strides=strides, padding="same", name=f"{name}_pool"
        )(shortcut)
    if in_filters < filters:
        grow = filters - in_filters
        shortcut = ChannelZeroPadding(grow // 2, grow - grow // 2, name=f"{name}_pad")(shortcut)
    elif in_filters > filters:
        shortcut = layers(f"{name}_shortcut_conv", conv_factory(filters, (1, 1, 1)), CONV)(shortcut)
    return keras.layers.Add(name=f"{name}_add")([x, shortcut])
