"""A tiny model overfits a fixed two-modality batch set with model.fit (joint and v4)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from dltk_mm.networks import build_multistream, make_optimizer


def two_modality_batches() -> tf.data.Dataset:
    """One MR and one CT batch of the same blocky label maps with modality-specific intensities."""
    z, y, x = np.meshgrid(np.arange(16), np.arange(16), np.arange(16), indexing="ij")
    base = ((z // 8) * 2 + (y // 8)).astype(np.int32)
    base[(abs(z - 8) < 4) & (abs(y - 8) < 4) & (abs(x - 8) < 4)] = 4
    labels = np.stack([base, np.flip(base, -1)])
    rng = np.random.default_rng(0)
    mr = (labels - 2.0) + 0.1 * rng.normal(size=labels.shape)
    ct = (labels - 1.5) + 0.1 * rng.normal(size=labels.shape)
    images = np.stack([mr, ct])[..., None].astype(np.float32)
    indices = np.array([[0, 0], [1, 1]], np.int32)
    return tf.data.Dataset.from_tensor_slices((images, np.stack([labels, labels]), indices))


@pytest.mark.parametrize("scheme", ["joint", "v4"])
def test_tiny_model_overfits(scheme: str) -> None:
    keras.utils.set_random_seed(0)
    model = build_multistream(scheme, filters=(4, 8, 8, 8, 16), num_res_units=1)
    model.compile(optimizer=make_optimizer(1e-2))
    history = model.fit(
        two_modality_batches().repeat(), steps_per_epoch=2, epochs=18, verbose=0, shuffle=False
    )
    losses = history.history["loss"]
    assert losses[-1] < 0.3 * losses[0], losses
    assert history.history["loss_mr"][-1] < 0.4 and history.history["loss_ct"][-1] < 0.4
