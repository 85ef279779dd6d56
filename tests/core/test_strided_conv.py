"""StridedConv3D equals keras.layers.Conv3D (outputs and gradients) with the same kernel."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from dltk_mm.core import strided_conv  # noqa: E402
from dltk_mm.core.residual_unit import conv_factory  # noqa: E402
from dltk_mm.core.strided_conv import StridedConv3D, space_to_depth_conv3d  # noqa: E402
from dltk_mm.errors import ConfigurationError  # noqa: E402


@pytest.fixture(params=["space_to_depth", "native"])
def computation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test with each of StridedConv3D's two computations."""
    monkeypatch.setattr(strided_conv, "space_to_depth_is_faster",
                        lambda: request.param == "space_to_depth")
    return request.param


def reference_and_strided(kernel_size, strides, in_channels=3, filters=5, use_bias=False):
    reference = keras.layers.Conv3D(
        filters, kernel_size, strides=strides, padding="same", use_bias=use_bias,
        kernel_initializer="lecun_uniform", bias_initializer="random_normal",
    )
    strided = StridedConv3D(
        filters, kernel_size, strides=strides, use_bias=use_bias,
        kernel_initializer="lecun_uniform",
    )
    shape = (None, None, None, None, in_channels)
    reference.build(shape)
    strided.build(shape)
    strided.set_weights(reference.get_weights())
    return reference, strided


def outputs_and_gradients(layer, x):
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        # A non-uniform cotangent so that every output position matters.
        weights = tf.reshape(tf.sin(tf.cast(tf.range(tf.size(y)), y.dtype)), tf.shape(y))
        loss = tf.reduce_sum(y * weights)
    grad_x, grad_k = tape.gradient(loss, [x, layer.kernel])
    return y.numpy(), grad_x.numpy(), grad_k.numpy()


@pytest.mark.parametrize(
    ("kernel_size", "strides", "size"),
    [
        ((4, 4, 4), (2, 2, 2), (8, 6, 10)),  # 'paper': kernel twice the stride
        ((2, 2, 2), (2, 2, 2), (8, 6, 10)),  # 'code': kernel = stride
        ((3, 4, 4), (1, 2, 2), (5, 8, 6)),  # anisotropic stride
        ((4, 4, 4), (2, 2, 2), (7, 5, 9)),  # sizes not divisible by the stride
        ((2, 2, 2), (2, 2, 2), (7, 6, 5)),
        ((3, 3, 3), (2, 2, 2), (7, 8, 9)),  # odd kernel: asymmetric 'same' padding
        ((1, 1, 1), (2, 2, 2), (6, 7, 8)),  # kernel smaller than the stride: no padding
    ],
)
def test_outputs_and_gradients_equal_conv3d(kernel_size, strides, size, computation):
    rng = np.random.default_rng(0)
    reference, strided = reference_and_strided(kernel_size, strides)
    x = rng.normal(size=(2, *size, 3)).astype(np.float32)
    expected = outputs_and_gradients(reference, x)
    actual = outputs_and_gradients(strided, x)
    assert actual[0].shape == expected[0].shape == (
        2, *[-(-n // s) for n, s in zip(size, strides, strict=True)], 5)
    for got, want in zip(actual, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_bias_and_dynamic_shapes_inside_tf_function(computation):
    rng = np.random.default_rng(1)
    reference, strided = reference_and_strided((4, 4, 4), (2, 2, 2), in_channels=1, filters=3,
                                               use_bias=True)
    spec = tf.TensorSpec((None, None, None, None, 1), tf.float32)
    run = tf.function(lambda t: strided(t), input_signature=[spec])
    for size in [(8, 8, 8), (6, 10, 4), (5, 7, 9)]:
        x = rng.normal(size=(1, *size, 1)).astype(np.float32)
        np.testing.assert_allclose(run(x).numpy(), reference(x).numpy(), atol=1e-5, rtol=1e-5)


def test_function_matches_tf_nn_conv3d_same():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 6, 8, 4, 3)).astype(np.float32)
    kernel = rng.normal(size=(4, 2, 4, 3, 7)).astype(np.float32)
    expected = tf.nn.conv3d(x, kernel, [1, 2, 2, 2, 1], "SAME").numpy()
    np.testing.assert_allclose(space_to_depth_conv3d(x, kernel, (2, 2, 2)).numpy(), expected,
                               atol=1e-4, rtol=1e-5)


def test_weights_config_and_round_trip(tmp_path):
    layer = StridedConv3D(5, 4, strides=2, use_bias=False, name="unit_conv0")
    layer.build((None, 8, 8, 8, 3))
    assert isinstance(layer, keras.layers.Conv3D)
    assert [w.shape for w in layer.weights] == [(4, 4, 4, 3, 5)]
    assert layer.count_params() == 4 * 4 * 4 * 3 * 5
    config = layer.get_config()
    assert config["strides"] == (2, 2, 2) and config["padding"] == "same"
    clone = StridedConv3D.from_config(config)
    assert clone.strides == (2, 2, 2) and clone.kernel_size == (4, 4, 4)

    inputs = keras.Input((8, 8, 8, 3))
    model = keras.Model(inputs, StridedConv3D(5, 4, strides=2, name="c")(inputs))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("c"), StridedConv3D)
    x = np.random.default_rng(3).normal(size=(1, 8, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)


def test_conv_factory_uses_strided_conv_for_strided_convolutions_only():
    assert type(conv_factory(4, (4, 4, 4), (2, 2, 2))("a")) is StridedConv3D
    assert type(conv_factory(4, (3, 4, 4), (1, 2, 2))("b")) is StridedConv3D
    assert type(conv_factory(4, (3, 3, 3))("c")) is keras.layers.Conv3D


@pytest.mark.parametrize(
    "kwargs",
    [
        {"strides": 2, "padding": "valid"},
        {"strides": 2, "data_format": "channels_first"},
        {"strides": 1, "dilation_rate": 2},
    ],
)
def test_unsupported_arguments_are_rejected(kwargs):
    with pytest.raises(ConfigurationError):
        StridedConv3D(4, 4, **kwargs)


def test_the_computation_follows_the_backend(computation):
    """Space-to-depth shows as transposes in the traced graph; the native path has none."""
    _, strided = reference_and_strided((4, 4, 4), (2, 2, 2))
    spec = tf.TensorSpec((1, 8, 8, 8, 3), tf.float32)
    graph = tf.function(lambda t: strided(t)).get_concrete_function(spec).graph
    op_types = {op.type for op in graph.get_operations()}
    assert ("Transpose" in op_types) == (computation == "space_to_depth")
    assert "Conv3D" in op_types


_GRAPH_HAS_TRANSPOSE = """
import tensorflow as tf
from dltk_mm.core.strided_conv import StridedConv3D
layer = StridedConv3D(2, 4, strides=2)
spec = tf.TensorSpec((1, 8, 8, 8, 1), tf.float32)
graph = tf.function(lambda t: layer(t)).get_concrete_function(spec).graph
print("transpose" if any(op.type == "Transpose" for op in graph.get_operations()) else "native")
"""


@pytest.mark.parametrize(("onednn", "expected"), [("0", "transpose"), ("1", "native")])
def test_space_to_depth_is_used_only_without_onednn_on_a_cpu(onednn, expected):
    """A real process on the CPU: oneDNN off -> space-to-depth; oneDNN on -> the native conv."""
    import subprocess
    import sys

    environment = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "CUDA_VISIBLE_DEVICES": "",
                   "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", _GRAPH_HAS_TRANSPOSE], env=environment,
                            capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.split()[-1] == expected
