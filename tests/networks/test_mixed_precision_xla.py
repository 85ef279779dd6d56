"""Mixed precision (mixed_float16 + loss scaling) and XLA compilation of the routed step."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from dltk_mm.networks import build_multistream, make_optimizer  # noqa: E402
from dltk_mm.training.config_flags import config_from_args  # noqa: E402

TINY = {"filters": (2, 4, 4, 4, 8), "num_res_units": 1}


def _batch(index: int, seed: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(2, 16, 16, 16, 1)).astype(np.float32)
    label = rng.integers(0, 5, size=(2, 16, 16, 16)).astype(np.int32)
    return tf.constant(image), tf.constant(label), tf.fill([2], index)


def test_mixed_precision_trains_without_nans() -> None:
    keras.utils.set_random_seed(0)
    model = build_multistream("v4", dtype_policy="mixed_float16", **TINY)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    model.compile(optimizer=make_optimizer("v4", loss_scale=True))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    convs = [layer for layer in model.streams["mr"].layers
             if isinstance(layer, keras.layers.Conv3D)]
    assert convs[0].compute_dtype == "float16"  # the stem computes in half precision
    assert all(v.dtype == "float32" for v in model.weights)  # variables stay float32
    before = [np.array(v.numpy()) for v in model.trainable_variables]
    step = tf.function(model.train_step)
    losses = [float(step(_batch(i % 2, seed=i))["loss"]) for i in range(4)]
    assert all(np.isfinite(losses))
    assert all(np.isfinite(v.numpy()).all() for v in model.weights)
    assert any(not np.array_equal(b, v.numpy())
               for b, v in zip(before, model.trainable_variables, strict=True))
    assert float(model.optimizer.dynamic_scale.numpy()) > 1.0
    out = model.streams["ct"](_batch(1, seed=9)[0], training=False)
    assert out["logits"].dtype == tf.float32 and out["probabilities"].dtype == tf.float32
    np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1.0, atol=1e-3)


def test_jit_compile_gives_the_same_predictions_and_steps() -> None:
    keras.utils.set_random_seed(1)
    reference = build_multistream("v4", **TINY)
    compiled = build_multistream("v4", **TINY)
    compiled.set_weights(reference.get_weights())
    image = _batch(0, seed=3)[0]
    stream_a, stream_b = reference.streams["ct"], compiled.streams["ct"]
    plain = tf.function(lambda x: stream_a(x, training=False)["probabilities"])
    xla = tf.function(lambda x: stream_b(x, training=False)["probabilities"], jit_compile=True)
    np.testing.assert_allclose(plain(image).numpy(), xla(image).numpy(), atol=1e-5)

    reference.compile(optimizer=make_optimizer("v4"), jit_compile=False)
    compiled.compile(optimizer=make_optimizer("v4"), jit_compile=True)
    step_a = tf.function(reference.train_step)
    step_b = tf.function(compiled.train_step, jit_compile=True)
    for i in range(2):  # one compiled graph routes both modalities
        data = _batch(i % 2, seed=10 + i)
        np.testing.assert_allclose(float(step_a(data)["loss"]), float(step_b(data)["loss"]),
                                   rtol=1e-4)
    for a, b in zip(reference.weights, compiled.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4, err_msg=a.path)


def test_flags_reach_the_config() -> None:
    config = config_from_args(["--manifest=m.csv", "--scheme=v4", "--mixed_precision",
                               "--jit_compile", "--strategy=mirrored", "--width=0.125"])
    assert config.mixed_precision and config.jit_compile and config.strategy == "mirrored"
    model = config.build_model("mixed_float16")
    assert model.streams["mr"].layers[1].compute_dtype == "float16"
