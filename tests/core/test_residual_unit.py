"""Pre-activation residual unit: wiring, shortcut pooling and padding, kernels.

docs/paper.md, section 2.2.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from dltk_mm.core.residual_unit import residual_unit, strided_kernel_size
from dltk_mm.errors import ConfigurationError


def unit_model(in_channels: int, **kwargs) -> keras.Model:
    inputs = keras.Input((None, None, None, in_channels))
    return keras.Model(inputs, residual_unit(inputs, name="u", **kwargs))


def conv_layers(model: keras.Model) -> list[keras.layers.Conv3D]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Conv3D)]


def zero_convolutions(model: keras.Model) -> None:
    for layer in conv_layers(model):
        layer.kernel.assign(np.zeros(layer.kernel.shape, np.float32))


def numpy_max_pool(x: np.ndarray, s: tuple[int, int, int]) -> np.ndarray:
    b, z, y, w, c = x.shape
    blocks = x.reshape(b, z // s[0], s[0], y // s[1], s[1], w // s[2], s[2], c)
    return blocks.max(axis=(2, 4, 6))


def test_strided_unit_shortcut_is_max_pooled_and_centre_padded() -> None:
    model = unit_model(2, filters=5, strides=2)
    zero_convolutions(model)
    x = np.random.default_rng(0).normal(size=(2, 4, 6, 8, 2)).astype(np.float32)
    out = model(x, training=False).numpy()
    pooled = numpy_max_pool(x, (2, 2, 2))
    expected = np.pad(pooled, [(0, 0)] * 4 + [(1, 2)])  # 3 new channels: floor 1 / ceil 2
    assert out.shape == (2, 2, 3, 4, 5)
    np.testing.assert_array_equal(out, expected)


def test_anisotropic_stride_pools_per_axis() -> None:
    model = unit_model(3, filters=3, strides=(1, 2, 2))
    zero_convolutions(model)
    x = np.random.default_rng(1).normal(size=(1, 3, 4, 4, 3)).astype(np.float32)
    np.testing.assert_array_equal(model(x).numpy(), numpy_max_pool(x, (1, 2, 2)))


def test_identity_shortcut_and_shrinking_projection() -> None:
    same = unit_model(4, filters=4)
    zero_convolutions(same)
    x = np.random.default_rng(2).normal(size=(1, 3, 3, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(same(x).numpy(), x)

    shrink = unit_model(4, filters=2)
    names = [layer.name for layer in conv_layers(shrink)]
    assert names == ["u_conv0", "u_conv1", "u_shortcut_conv"]
    zero_convolutions(shrink)
    projection = shrink.get_layer("u_shortcut_conv")
    assert projection.kernel_size == (1, 1, 1)
    weights = np.zeros((1, 1, 1, 4, 2), np.float32)
    weights[0, 0, 0, 1, 0] = weights[0, 0, 0, 3, 1] = 1.0
    projection.kernel.assign(weights)
    np.testing.assert_array_equal(shrink(x).numpy(), x[..., [1, 3]])


def test_pre_activation_order_matches_manual_computation() -> None:
    rng = np.random.default_rng(3)
    model = unit_model(2, filters=4, strides=2, leaky_relu_alpha=0.01)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            for var in (layer.gamma, layer.beta, layer.moving_mean):
                var.assign(rng.normal(size=var.shape).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2, size=layer.moving_variance.shape))
    x = rng.normal(size=(1, 4, 4, 4, 2)).astype(np.float32)

    def bn(name: str, v: tf.Tensor) -> tf.Tensor:
        layer = model.get_layer(name)
        scale = layer.gamma / tf.sqrt(layer.moving_variance + 1e-3)
        return (v - layer.moving_mean) * scale + layer.beta

    def conv(name: str, v: tf.Tensor, stride: int) -> tf.Tensor:
        kernel = model.get_layer(name).kernel
        return tf.nn.conv3d(v, kernel, [1, stride, stride, stride, 1], "SAME")

    def act(v: tf.Tensor) -> tf.Tensor:
        return tf.nn.leaky_relu(v, alpha=0.01)

    branch = conv("u_conv1", act(bn("u_bn1", conv("u_conv0", act(bn("u_bn0", x)), 2))), 1)
    shortcut = np.pad(numpy_max_pool(x, (2, 2, 2)), [(0, 0)] * 4 + [(1, 1)])
    expected = branch.numpy() + shortcut
    np.testing.assert_allclose(model(x, training=False).numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("option", "strides", "expected"),
    [
        ("paper", (2, 2, 2), (4, 4, 4)),
        ("code", (2, 2, 2), (2, 2, 2)),
        ("paper", (1, 2, 2), (3, 4, 4)),
        ("code", (1, 2, 2), (1, 2, 2)),
        ("paper", (1, 1, 1), (3, 3, 3)),
        ("code", (1, 1, 1), (3, 3, 3)),
    ],
)
def test_strided_kernel_options(option: str, strides: tuple, expected: tuple) -> None:
    assert strided_kernel_size((3, 3, 3), strides, option) == expected
    model = unit_model(2, filters=2, strides=strides, strided_kernel=option)
    assert model.get_layer("u_conv0").kernel_size == expected
    assert model.get_layer("u_conv1").kernel_size == (3, 3, 3)


def test_layer_settings_follow_the_spec() -> None:
    model = unit_model(2, filters=3)
    for layer in conv_layers(model):
        assert layer.use_bias is False
        assert layer.padding == "same"
        assert isinstance(layer.kernel_initializer, keras.initializers.LecunUniform)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            assert (layer.momentum, layer.epsilon) == (0.99, 1e-3)
        if isinstance(layer, keras.layers.LeakyReLU):
            assert layer.negative_slope == pytest.approx(0.01)
    assert model.layers[-1].name == "u_add"  # no activation after the sum


def test_provider_decides_layers() -> None:
    cache: dict[str, keras.layers.Layer] = {}

    def shared(name, factory, kind):
        return cache.setdefault(name, factory(name))

    a, b = keras.Input((None, None, None, 2)), keras.Input((None, None, None, 2))
    residual_unit(a, 4, layers=shared, name="u")
    residual_unit(b, 4, layers=shared, name="u")
    assert sorted(cache) == ["u_bn0", "u_bn1", "u_conv0", "u_conv1"]
    assert len(cache["u_conv0"]._inbound_nodes) == 2  # the same layer serves both inputs


def test_invalid_options() -> None:
    with pytest.raises(ConfigurationError, match="strided_kernel"):
        unit_model(2, filters=2, strides=2, strided_kernel="twice")
    with pytest.raises(ConfigurationError, match="strides"):
        unit_model(2, filters=2, strides=(2, 2))
