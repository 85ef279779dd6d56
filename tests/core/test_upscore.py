"""Upscore unit (docs/paper.md, section 2.3): reduction conv, upsampling, skip conv + BN, sum."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from dltk_mm.core.upsampling import linear_upsample_3d
from dltk_mm.core.upscore import upscore_kernel_size, upscore_unit
from dltk_mm.errors import ConfigurationError


def upscore_model(channels: int, skip_channels: int, **kwargs) -> keras.Model:
    x = keras.Input((None, None, None, channels))
    skip = keras.Input((None, None, None, skip_channels))
    return keras.Model([x, skip], upscore_unit(x, skip, name="up", **kwargs))


@pytest.mark.parametrize(("option", "kernel"), [("paper", (1, 1, 1)), ("code", (3, 3, 3))])
def test_reduction_kernel_option(option: str, kernel: tuple) -> None:
    model = upscore_model(8, 4, filters=5, kernel_size=upscore_kernel_size(option))
    assert model.get_layer("up_reduce").kernel_size == kernel
    assert model.get_layer("up_skip_conv").kernel_size == (1, 1, 1)
    assert model.get_layer("up_skip_conv").use_bias is False


def test_no_reduction_when_channels_equal_classes() -> None:
    model = upscore_model(5, 4, filters=5)
    names = [layer.name for layer in model.layers]
    assert "up_reduce" not in names
    assert sum(len(layer.trainable_weights) for layer in model.layers) == 3  # conv + BN


@pytest.mark.parametrize("border", ["replicate", "zero"])
def test_output_is_upsampled_reduction_plus_normalised_skip(border: str) -> None:
    rng = np.random.default_rng(0)
    model = upscore_model(6, 3, filters=5, strides=(2, 2, 1), border=border)
    bn = model.get_layer("up_skip_bn")
    bn.moving_mean.assign(rng.normal(size=5).astype(np.float32))
    bn.gamma.assign(rng.normal(size=5).astype(np.float32))
    x = rng.normal(size=(1, 2, 3, 4, 6)).astype(np.float32)
    skip = rng.normal(size=(1, 4, 6, 4, 3)).astype(np.float32)
    reduced = tf.nn.conv3d(x, model.get_layer("up_reduce").kernel, [1] * 5, "SAME")
    skipped = tf.nn.conv3d(skip, model.get_layer("up_skip_conv").kernel, [1] * 5, "SAME")
    normalised = (skipped - bn.moving_mean) * bn.gamma / tf.sqrt(bn.moving_variance + 1e-3)
    expected = linear_upsample_3d(reduced, (2, 2, 1), border) + normalised + bn.beta
    got = model([x, skip], training=False).numpy()
    assert got.shape == (1, 4, 6, 4, 5)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_invalid_kernel_option() -> None:
    with pytest.raises(ConfigurationError, match="upscore_kernel"):
        upscore_kernel_size("big")
