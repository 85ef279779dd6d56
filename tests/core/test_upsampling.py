"""Fixed linear upsampling against NumPy references, borders included.

docs/paper.md, section 2.3.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from dltk_mm.core.upsampling import LinearUpsampling3D, linear_upsample_3d, linear_upsample_axis
from dltk_mm.errors import ConfigurationError


def numpy_linear_upsample_axis(x: np.ndarray, axis: int, factor: int, border: str) -> np.ndarray:
    """Reference: output sample j sits at input coordinate (j + 0.5) / factor - 0.5."""
    x = np.moveaxis(x, axis, 0)
    n = x.shape[0]
    out = np.zeros((n * factor, *x.shape[1:]), dtype=np.float64)
    for j in range(n * factor):
        c = (j + 0.5) / factor - 0.5
        i0 = int(np.floor(c))
        w = c - i0
        for i, weight in ((i0, 1.0 - w), (i0 + 1, w)):
            if 0 <= i < n:
                out[j] += weight * x[i]
            elif border == "replicate":
                out[j] += weight * x[min(max(i, 0), n - 1)]
    return np.moveaxis(out, 0, axis)


def numpy_code_transposed_conv_axis(x: np.ndarray, axis: int) -> np.ndarray:
    """The authors' upsampling: transposed conv, stride 2, kernel [.25, .75, .75, .25], 'same'."""
    kernel = np.array([0.25, 0.75, 0.75, 0.25])
    x = np.moveaxis(x, axis, 0)
    n = x.shape[0]
    full = np.zeros((2 * n + 2, *x.shape[1:]))
    for i in range(n):
        for k in range(4):
            full[2 * i + k] += kernel[k] * x[i]
    return np.moveaxis(full[1 : 1 + 2 * n], 0, axis)  # 'same' crops (4 - 2) / 2 = 1 in front


def test_stride_two_borders_by_hand() -> None:
    x = np.array([1.0, 2.0, 3.0], dtype=np.float32).reshape(1, 3, 1, 1, 1)
    replicate = linear_upsample_axis(tf.constant(x), 1, 2, "replicate").numpy().ravel()
    zero = linear_upsample_axis(tf.constant(x), 1, 2, "zero").numpy().ravel()
    np.testing.assert_allclose(replicate, [1.0, 1.25, 1.75, 2.25, 2.75, 3.0])
    np.testing.assert_allclose(zero, [0.75, 1.25, 1.75, 2.25, 2.75, 2.25])


@pytest.mark.parametrize("border", ["replicate", "zero"])
@pytest.mark.parametrize("factor", [1, 2, 3, 4])
def test_axis_matches_numpy_reference(border: str, factor: int) -> None:
    x = np.random.default_rng(factor).normal(size=(2, 5, 3, 4, 2)).astype(np.float32)
    for axis in (1, 2, 3):
        got = linear_upsample_axis(tf.constant(x), axis, factor, border).numpy()
        want = numpy_linear_upsample_axis(x, axis, factor, border)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("border", ["replicate", "zero"])
def test_3d_is_separable_composition(border: str) -> None:
    x = np.random.default_rng(0).normal(size=(1, 4, 3, 5, 3)).astype(np.float32)
    strides = (2, 1, 3)
    want = x
    for axis, s in zip((1, 2, 3), strides, strict=True):
        want = numpy_linear_upsample_axis(want, axis, s, border)
    got = linear_upsample_3d(tf.constant(x), strides, border).numpy()
    assert got.shape == (1, 8, 3, 15, 3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_zero_border_equals_authors_transposed_convolution() -> None:
    x = np.random.default_rng(1).normal(size=(1, 4, 5, 3, 2)).astype(np.float32)
    want = x
    for axis in (1, 2, 3):
        want = numpy_code_transposed_conv_axis(want, axis)
    got = linear_upsample_3d(tf.constant(x), 2, "zero").numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_replicate_keeps_constants_and_zero_scales_faces() -> None:
    x = tf.ones((1, 4, 4, 4, 1))
    np.testing.assert_allclose(linear_upsample_3d(x, 2, "replicate").numpy(), 1.0)
    zero = linear_upsample_3d(x, 2, "zero").numpy()[0, :, :, :, 0]
    assert zero[0, 4, 4] == pytest.approx(0.75)  # one face
    assert zero[0, 0, 0] == pytest.approx(0.75**3)  # a corner
    assert zero[4, 4, 4] == pytest.approx(1.0)  # interior


def test_layer_dynamic_shape_no_weights_and_config() -> None:
    inputs = keras.Input((None, None, None, 2))
    layer = LinearUpsampling3D((2, 2, 1), border="zero")
    outputs = layer(inputs)
    assert tuple(outputs.shape) == (None, None, None, None, 2)
    model = keras.Model(inputs, outputs)
    assert layer.weights == []
    x = np.random.default_rng(2).normal(size=(1, 3, 4, 5, 2)).astype(np.float32)
    assert model(x).shape == (1, 6, 8, 5, 2)
    assert layer.compute_output_shape((1, 3, 4, 5, 2)) == (1, 6, 8, 5, 2)
    clone = LinearUpsampling3D.from_config(layer.get_config())
    np.testing.assert_array_equal(clone(x).numpy(), layer(x).numpy())


def test_invalid_arguments() -> None:
    with pytest.raises(ConfigurationError, match="border"):
        LinearUpsampling3D(2, border="reflect")
    with pytest.raises(ConfigurationError, match="factor"):
        linear_upsample_axis(tf.ones((1, 2, 2, 2, 1)), 1, 0)
