"""Batch normalisation of 3-D feature maps through TensorFlow's fused kernel.

The residual units and upscore units normalise every convolution's input (Valindria et al.
2018, section 3: pre-activation residual units; docs/paper.md, section 2.1). Keras 3's
:class:`keras.layers.BatchNormalization` computes the batch moments and the normalisation with
separate element-wise ops (mean, squared difference, mean, scale, shift, and as many again for the
gradient); on a 5-D ``(batch, z, y, x, channels)`` tensor they cost about as much as a third of the
network's convolutions at quarter width (experiments/bench/README.md, "Training step").
:class:`BatchNormalization3D` computes the same training-mode function with one
``FusedBatchNormV3`` kernel (and its fused gradient) on a 4-D view ``(batch, z * y, x, channels)``
of the tensor, which oneDNN and cuDNN accelerate, and is otherwise the Keras layer: the same
variables, config, inference path and moving-statistics update, with the biased batch variance
as Keras uses it. Results agree with Keras up to float32 round-off (the fused kernel sums in
another order).
"""

from __future__ import annotations

import keras
import tensorflow as tf

#: The smallest epsilon the fused kernel accepts (cuDNN's limit; TensorFlow raises smaller ones).
FUSED_MIN_EPSILON = 1.001e-5


@keras.saving.register_keras_serializable(package="dltk_mm")
class BatchNormalization3D(keras.layers.BatchNormalization):
    """:class:`keras.layers.BatchNormalization` with a fused training-mode kernel for 5-D inputs.

    Takes the Keras layer's arguments. The fused path serves training calls on rank-5,
    channels-last inputs without a mask, renormalisation or synchronisation and with
    ``epsilon >= FUSED_MIN_EPSILON``; every other call is the Keras layer's own.
    """

    def _fuses(self, inputs: tf.Tensor, training: bool | None, mask: tf.Tensor | None) -> bool:
        return bool(
            training
            and self.trainable
            and mask is None
            and not self.renorm
            and not self.synchronized
            and len(inputs.shape) == 5
            and self.axis in (-1, 4)
            and self.epsilon >= FUSED_MIN_EPSILON
        )

    def call(self, inputs: tf.Tensor, training: bool | None = None,
             mask: tf.Tensor | None = None) -> tf.Tensor:
        """Normalises ``inputs``; in training mode also updates the moving statistics."""
        if not self._fuses(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        # Like Keras: float16/bfloat16 inputs are normalised in float32.
        x = tf.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        shape = tf.shape(x)
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, x.dtype) if self.scale else tf.ones([channels], x.dtype)
        beta = tf.cast(self.beta, x.dtype) if self.center else tf.zeros([channels], x.dtype)
        folded = tf.reshape(x, [shape[0], shape[1] * shape[2], shape[3], shape[4]])
        outputs, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
            folded, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True)
        # The kernel reports the Bessel-corrected variance; Keras averages the biased one.
        count = tf.cast(tf.reduce_prod(shape[:4]), x.dtype)
        variance = unbiased_variance * (count - 1.0) / tf.maximum(count, 1.0)
        momentum = self.momentum
        self.moving_mean.assign(
            tf.cast(self.moving_mean, x.dtype) * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(
            tf.cast(self.moving_variance, x.dtype) * momentum + variance * (1.0 - momentum))
        return tf.cast(tf.reshape(outputs, shape), self.compute_dtype)


__all__ = ["FUSED_MIN_EPSILON", "BatchNormalization3D"]
