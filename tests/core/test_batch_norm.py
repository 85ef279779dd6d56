"""BatchNormalization3D: Keras' batch norm, computed by the fused kernel in training mode."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from dltk_mm.core.batch_norm import BatchNormalization3D


def pair(channels: int, **kwargs) -> tuple[keras.layers.Layer, keras.layers.Layer]:
    """A Keras layer and a BatchNormalization3D with the same random weights and statistics."""
    reference = keras.layers.BatchNormalization(**kwargs)
    fused = BatchNormalization3D(**kwargs)
    shape = (None, None, None, None, channels)
    reference.build(shape)
    fused.build(shape)
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=w.shape).astype(np.float32) for w in reference.get_weights()]
    weights[-1] = np.abs(weights[-1]) + 0.5  # a positive moving variance
    reference.set_weights(weights)
    fused.set_weights(weights)
    return reference, fused


def run(layer: keras.layers.Layer, x: np.ndarray, training: bool) -> list[np.ndarray]:
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        cotangent = tf.reshape(tf.cos(tf.cast(tf.range(tf.size(y)), y.dtype)), tf.shape(y))
        loss = tf.reduce_sum(y * cotangent)
    grads = tape.gradient(loss, [x, *layer.trainable_variables])
    return [y.numpy(), *[g.numpy() for g in grads],
            layer.moving_mean.numpy(), layer.moving_variance.numpy()]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(2, 6, 5, 7, 3), (1, 4, 4, 4, 8)])
def test_matches_keras_batch_normalization(shape, training):
    reference, fused = pair(shape[-1], momentum=0.9, epsilon=1e-3)
    x = (np.random.default_rng(1).normal(size=shape) * 3.0 + 1.5).astype(np.float32)
    expected = run(reference, x, training)
    actual = run(fused, x, training)
    names = ["output", "d/dx", "d/dgamma", "d/dbeta", "moving mean", "moving variance"]
    for name, got, want in zip(names, actual, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4, err_msg=name)
    if training:  # the moving statistics moved (by the biased batch variance, as in Keras)
        assert not np.allclose(actual[-1], pair(shape[-1])[1].moving_variance.numpy())


def test_fused_kernel_in_training_and_keras_ops_otherwise():
    _, fused = pair(4)
    spec = tf.TensorSpec((2, 4, 4, 4, 4), tf.float32)
    for training, uses_fused in [(True, True), (False, False)]:
        graph = tf.function(lambda t, training=training: fused(t, training=training)) \
            .get_concrete_function(spec).graph
        types = {op.type for op in graph.get_operations()}
        assert ("FusedBatchNormV3" in types) is uses_fused


def test_keras_path_for_what_the_kernel_cannot_do():
    """4-D inputs and an epsilon below the fused kernel's minimum stay on the Keras ops."""
    reference, fused = pair(3, epsilon=1e-6)
    x = np.random.default_rng(2).normal(size=(2, 4, 4, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(fused(x, training=True), reference(x, training=True), atol=1e-5)
    flat = BatchNormalization3D()
    y = flat(np.ones((4, 3), np.float32), training=True)
    assert y.shape == (4, 3)


def test_mixed_precision_and_serialisation():
    layer = BatchNormalization3D(momentum=0.5, dtype="mixed_float16", name="bn")
    x = tf.random.normal((2, 4, 4, 4, 2), dtype=tf.float16)
    y = layer(x, training=True)
    assert y.dtype == tf.float16 and layer.moving_mean.dtype == tf.float32
    assert np.all(np.isfinite(y.numpy()))
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(clone, BatchNormalization3D) and clone.momentum == 0.5
