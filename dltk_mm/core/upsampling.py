"""Fixed (non-trainable) linear upsampling, separable per axis.

Valindria et al. (WACV 2018) upsample coarse scores with a fixed linear (trilinear) interpolation
kernel inside the upscore units (docs/paper.md, section 2.3). Here the interpolation is computed
with cheap slicing, weighted sums and a reshape per axis: no transposed convolution, no weights.

Output voxel ``j`` of an axis upsampled by an integer factor ``s`` sits at input coordinate
``c = (j + 0.5) / s - 0.5`` (voxel centres aligned, "half-pixel"); its value is the linear
interpolation of the two nearest input voxels. For ``s = 2`` the weights are (0.25, 0.75) and
(0.75, 0.25). Two border modes:

* ``"replicate"`` (default, the paper: true linear interpolation): outside samples repeat the
  edge value, so a constant image stays constant.
* ``"zero"`` (the authors' code): outside samples are zero. For ``s = 2`` this is exactly their
  transposed convolution with the fixed separable kernel [0.25, 0.75, 0.75, 0.25], which scales the
  first and last sample of each axis by 0.75.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from dltk_mm.core.residual_unit import as_triple
from dltk_mm.errors import ConfigurationError

BORDERS = ("replicate", "zero")


def _take(x: tf.Tensor, axis: int, start, stop) -> tf.Tensor:
    """``x[..., start:stop, ...]`` along ``axis`` (bounds may be tensors).

    ``tf.slice`` rather than Python slicing: its gradient is a ``Pad``, where a strided slice's is
    the generic ``StridedSliceGrad`` kernel, which made the upsampling's backward pass about 4x
    slower on a CPU (experiments/bench/README.md, training step).
    """
    rank = x.shape.rank
    begin = [0] * axis + [start] + [0] * (rank - axis - 1)
    size = [-1] * axis + [stop - start] + [-1] * (rank - axis - 1)
    return tf.slice(x, begin, size)


def linear_upsample_axis(
    x: tf.Tensor, axis: int, factor: int, border: str = "replicate"
) -> tf.Tensor:
    """Upsamples ``x`` along one axis by an integer factor with linear interpolation.

    Args:
        x: a tensor of static rank.
        axis: the (non-negative) axis to upsample.
        factor: integer factor >= 1 (1 is the identity).
        border: ``"replicate"`` or ``"zero"`` (see the module docstring).

    Returns:
        ``x`` with ``factor`` times as many samples along ``axis``.
    """
    if border not in BORDERS:
        raise ConfigurationError(f"border must be one of {BORDERS}, got {border!r}")
    if not isinstance(factor, int) or factor < 1:
        raise ConfigurationError(f"the upsampling factor must be an int >= 1, got {factor!r}")
    if factor == 1:
        return x
    n = tf.shape(x)[axis]
    if border == "replicate":
        before, after = _take(x, axis, 0, 1), _take(x, axis, n - 1, n)
    else:
        edge = tf.zeros_like(_take(x, axis, 0, 1))
        before, after = edge, edge
    previous = tf.concat([before, _take(x, axis, 0, n - 1)], axis=axis)
    following = tf.concat([_take(x, axis, 1, n), after], axis=axis)

    phases = []
    for r in range(factor):
        offset = (r + 0.5) / factor - 0.5  # position of this phase relative to its input voxel
        if offset < 0:
            phases.append((1.0 + offset) * x + (-offset) * previous)
        elif offset > 0:
            phases.append((1.0 - offset) * x + offset * following)
        else:
            phases.append(x)
    stacked = tf.stack(phases, axis=axis + 1)
    shape = tf.shape(x)
    new_shape = tf.concat([shape[:axis], [n * factor], shape[axis + 1 :]], axis=0)
    out = tf.reshape(stacked, new_shape)
    static = list(x.shape)
    if static[axis] is not None:
        static[axis] *= factor
    out.set_shape(static)
    return out


def linear_upsample_3d(
    x: tf.Tensor, strides: int | Sequence[int] = (2, 2, 2), border: str = "replicate"
) -> tf.Tensor:
    """Trilinear upsampling of a ``(batch, z, y, x, channels)`` tensor, separably per axis."""
    for axis, factor in zip((1, 2, 3), as_triple(strides, "strides"), strict=True):
        x = linear_upsample_axis(x, axis, factor, border)
    return x


@keras.saving.register_keras_serializable(package="dltk_mm")
class LinearUpsampling3D(keras.layers.Layer):
    """Keras layer of :func:`linear_upsample_3d` (fixed kernel, no weights).

    Args:
        strides: integer upsampling factor per spatial axis (z, y, x).
        border: ``"replicate"`` (paper, default) or ``"zero"`` (authors' code).
    """

    def __init__(
        self, strides: int | Sequence[int] = (2, 2, 2), border: str = "replicate", **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if border not in BORDERS:
            raise ConfigurationError(f"border must be one of {BORDERS}, got {border!r}")
        self.strides = as_triple(strides, "strides")
        self.border = border

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return linear_upsample_3d(inputs, self.strides, self.border)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        spatial = tuple(
            None if d is None else d * s
            for d, s in zip(input_shape[1:4], self.strides, strict=True)
        )
        return (input_shape[0], *spatial, input_shape[4])

    def get_config(self) -> dict:
        return {**super().get_config(), "strides": self.strides, "border": self.border}
