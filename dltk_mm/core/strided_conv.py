"""Strided 3-D convolution, computed as space-to-depth + stride-1 convolution where that is faster.

TensorFlow's generic (Eigen) CPU gradients of a *strided* 3-D convolution
(``Conv3DBackpropFilterV2`` / ``Conv3DBackpropInputV2``) take a slow path, 20-150x the cost of the
forward convolution (experiments/bench/README.md, "Training step"). A strided convolution is
exactly a stride-1 convolution of a space-to-depth rearrangement of its input (block size =
stride) with a rearranged kernel, whose forward pass and gradients use the fast stride-1 kernels.
oneDNN's CPU kernels (on by default in dltk_mm, :mod:`dltk_mm.runtime`) and cuDNN have fast
strided gradients of their own; there the rearrangement only adds two transposes (the full-width
strided units trained 1.8x slower through it with oneDNN), so :class:`StridedConv3D` uses it only
where neither is in use (:func:`space_to_depth_is_faster`).

:class:`StridedConv3D` is a :class:`keras.layers.Conv3D` (same weights, same variable names and
shapes, same config, same results). It is used for the strided first convolution of the residual
units (Valindria et al. 2018, section 3; docs/paper.md, section 2.2).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from dltk_mm.errors import ConfigurationError
from dltk_mm.runtime import onednn_enabled


def space_to_depth_is_faster() -> bool:
    """Whether strided convolutions run faster through :func:`space_to_depth_conv3d` here.

    True only for TensorFlow's generic CPU kernels: no GPU visible and oneDNN off
    (``TF_ENABLE_ONEDNN_OPTS=0``, or TensorFlow imported before dltk_mm on a CPU without AVX-512).
    """
    if tf.config.list_logical_devices("GPU"):
        return False
    return not onednn_enabled()


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def space_to_depth_conv3d(
    inputs: tf.Tensor, kernel: tf.Tensor, strides: tuple[int, int, int]
) -> tf.Tensor:
    """``tf.nn.conv3d(inputs, kernel, strides, "SAME")`` computed with a stride-1 convolution.

    With stride ``s`` and kernel ``k`` on an axis of size ``n``, TensorFlow's 'same' padding gives
    ``out = ceil(n / s)`` outputs and pads ``pad = max((out - 1) * s + k - n, 0)`` zeros,
    ``pad // 2`` before. That padding is applied explicitly; the padded input is further
    zero-padded at the end to ``(out - 1 + K) * s`` with ``K = ceil(k / s)``, rearranged into
    ``s``-blocks (channels ``(s_z, s_y, s_x, C)``) and convolved ('valid', stride 1) with the
    kernel zero-padded to ``K * s`` per axis and rearranged the same way. Output ``o`` then sums
    ``x[o * s + K' * s + r] * w[K' * s + r]`` over ``K' < K, r < s``: the strided convolution.
    Sizes need not be divisible by the strides (they may be dynamic).

    Args:
        inputs: ``(batch, z, y, x, channels)`` channels-last tensor.
        kernel: ``(kz, ky, kx, channels, filters)`` kernel.
        strides: strides per spatial axis.

    Returns:
        ``(batch, ceil(z/sz), ceil(y/sy), ceil(x/sx), filters)``, equal to the strided convolution.
    """
    kernel_size = tuple(int(k) for k in kernel.shape[:3])
    channels = int(kernel.shape[3])
    filters = int(kernel.shape[4])
    blocks = tuple(_ceil_div(k, s) for k, s in zip(kernel_size, strides, strict=True))

    shape = tf.shape(inputs)
    paddings = [[0, 0]]
    block_counts = []
    for axis, (k, s, big_k) in enumerate(zip(kernel_size, strides, blocks, strict=True)):
        static = inputs.shape[axis + 1]
        n = int(static) if static is not None else shape[axis + 1]
        out = (n + s - 1) // s
        pad = (out - 1) * s + k - n
        before = (max(pad, 0) if static is not None else tf.maximum(pad, 0)) // 2
        count = out - 1 + big_k
        paddings.append([before, count * s - n - before])
        block_counts.append(count)
    paddings.append([0, 0])
    x = tf.pad(inputs, paddings)

    batch = shape[0]
    sz, sy, sx = strides
    x = tf.reshape(x, [batch, block_counts[0], sz, block_counts[1], sy, block_counts[2], sx,
                       channels])
    x = tf.transpose(x, [0, 1, 3, 5, 2, 4, 6, 7])
    x = tf.reshape(x, [batch, block_counts[0], block_counts[1], block_counts[2],
                       sz * sy * sx * channels])

    w = tf.pad(kernel, [[0, b * s - k] for k, s, b in zip(kernel_size, strides, blocks,
                                                             strict=True)] + [[0, 0], [0, 0]])
    w = tf.reshape(w, [blocks[0], sz, blocks[1], sy, blocks[2], sx, channels, filters])
    w = tf.transpose(w, [0, 2, 4, 1, 3, 5, 6, 7])
    w = tf.reshape(w, [blocks[0], blocks[1], blocks[2], sz * sy * sx * channels, filters])
    return tf.nn.conv3d(x, w, strides=[1, 1, 1, 1, 1], padding="VALID")


@keras.saving.register_keras_serializable(package="dltk_mm")
class StridedConv3D(keras.layers.Conv3D):
    """A 'same'-padded, channels-last strided :class:`keras.layers.Conv3D`, fast on every backend.

    Same arguments, weights (``kernel`` of shape ``(kz, ky, kx, in, filters)``, optional
    ``bias``), config and results as ``keras.layers.Conv3D(..., padding="same")``; only the
    computation may differ: where :func:`space_to_depth_is_faster` (decided when the layer is
    traced) it is :func:`space_to_depth_conv3d`, so that forward and backward passes use
    TensorFlow's fast stride-1 kernels.

    Args:
        filters: output channels.
        kernel_size: int or 3 ints.
        strides: int or 3 ints.
        padding: must be ``"same"``.
        data_format: must be channels-last.
        dilation_rate: must be 1.
        **kwargs: the remaining :class:`keras.layers.Conv3D` arguments (``use_bias``,
            ``kernel_initializer``, ``name``, ...).

    Raises:
        ConfigurationError: for padding other than 'same', channels-first data or dilation.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | tuple[int, int, int],
        strides: int | tuple[int, int, int] = (1, 1, 1),
        padding: str = "same",
        data_format: str | None = None,
        dilation_rate: int | tuple[int, int, int] = (1, 1, 1),
        **kwargs,
    ) -> None:
        super().__init__(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            data_format=data_format,
            dilation_rate=dilation_rate,
            **kwargs,
        )
        if self.padding != "same":
            raise ConfigurationError(f"StridedConv3D supports padding='same' only, got {padding!r}")
        if self.data_format != "channels_last":
            raise ConfigurationError("StridedConv3D supports channels_last data only")
        if any(d != 1 for d in self.dilation_rate):
            raise ConfigurationError(
                f"StridedConv3D does not support dilation, got {self.dilation_rate}"
            )
        if self.groups != 1:
            raise ConfigurationError(f"StridedConv3D does not support groups, got {self.groups}")

    def convolution_op(self, inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        """The 'same' strided convolution (:func:`space_to_depth_conv3d` where that is faster)."""
        if all(s == 1 for s in self.strides) or not space_to_depth_is_faster():
            return super().convolution_op(inputs, kernel)
        return space_to_depth_conv3d(inputs, kernel, tuple(self.strides))
