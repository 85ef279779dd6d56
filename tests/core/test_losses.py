"""Soft Dice, cross-entropy and their sum on hand-made arrays (docs/paper.md, section 4.3)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from dltk_mm.core.losses import (
    LOSS_NAMES,
    cross_entropy_loss,
    dice_cross_entropy_loss,
    dice_loss,
    get_loss,
    soft_dice_per_class,
)
from dltk_mm.errors import ConfigurationError


def hard_logits(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Logits whose softmax is exactly the one-hot map of ``labels`` in float32."""
    return (np.eye(num_classes, dtype=np.float32)[labels] * 1000.0).astype(np.float32)


def test_perfect_prediction_gives_zero_loss() -> None:
    labels = np.array([[[0, 1], [2, 3]], [[3, 2], [1, 0]]], dtype=np.int32)  # (2, 2, 2)
    assert dice_loss(labels, hard_logits(labels, 4)).numpy() == pytest.approx(0.0, abs=1e-7)


def test_disjoint_prediction_gives_one() -> None:
    labels = np.array([[0, 0, 1, 1]], dtype=np.int32)
    predicted = 1 - labels
    dice = soft_dice_per_class(labels, hard_logits(predicted, 2)).numpy()
    np.testing.assert_array_equal(dice, [[0.0, 0.0]])
    assert dice_loss(labels, hard_logits(predicted, 2)).numpy() == pytest.approx(1.0)


def test_partial_overlap_hand_computed() -> None:
    # truth 0 0 1 1 1, prediction 0 1 1 1 2 (3 classes)
    labels = np.array([[0, 0, 1, 1, 1]], dtype=np.int32)
    predicted = np.array([[0, 1, 1, 1, 2]], dtype=np.int32)
    dice = soft_dice_per_class(labels, hard_logits(predicted, 3)).numpy()
    # class 0: 2*1/(1+2); class 1: 2*2/(3+3); class 2: absent from truth, 1 predicted voxel -> 0
    np.testing.assert_allclose(dice, [[2 / 3, 2 / 3, 0.0]], rtol=1e-6)
    assert dice_loss(labels, hard_logits(predicted, 3)).numpy() == pytest.approx(1 - 4 / 9)


def test_soft_probabilities_hand_computed() -> None:
    probabilities = np.array([[[0.8, 0.2], [0.4, 0.6]]], dtype=np.float32)  # 2 voxels, 2 classes
    labels = np.array([[0, 1]], dtype=np.int32)
    dice = soft_dice_per_class(labels, np.log(probabilities)).numpy()
    # class 0: 2*0.8/(1.2+1) ; class 1: 2*0.6/(0.8+1)
    np.testing.assert_allclose(dice, [[1.6 / 2.2, 1.2 / 1.8]], rtol=1e-5)
    smoothed = soft_dice_per_class(labels, np.log(probabilities), smooth=1.0).numpy()
    np.testing.assert_allclose(smoothed, [[2.6 / 3.2, 2.2 / 2.8]], rtol=1e-5)


def test_per_sample_mean_and_background_included() -> None:
    labels = np.array([[0, 1], [0, 0]], dtype=np.int32)  # sample 2 has no class 1
    predicted = np.array([[0, 1], [0, 1]], dtype=np.int32)
    dice = soft_dice_per_class(labels, hard_logits(predicted, 2)).numpy()
    np.testing.assert_allclose(dice, [[1.0, 1.0], [2 / 3, 0.0]], rtol=1e-6)
    assert dice_loss(labels, hard_logits(predicted, 2)).numpy() == pytest.approx(
        1 - (1 + 1 + 2 / 3 + 0) / 4
    )


def test_class_absent_from_truth_and_prediction_counts_as_perfect_without_nan() -> None:
    labels = np.array([[0, 0, 1]], dtype=np.int32)
    logits = tf.constant(hard_logits(labels, 3))  # class 2 absent in both, p underflows to 0
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = dice_loss(labels, logits)
    np.testing.assert_array_equal(soft_dice_per_class(labels, logits).numpy(), [[1.0, 1.0, 1.0]])
    assert loss.numpy() == pytest.approx(0.0, abs=1e-7)
    assert np.all(np.isfinite(tape.gradient(loss, logits).numpy()))


def test_cross_entropy_and_sum() -> None:
    probabilities = np.array([[[0.8, 0.2], [0.4, 0.6]]], dtype=np.float32)
    labels = np.array([[0, 1]], dtype=np.int32)
    logits = np.log(probabilities)
    expected_ce = -(np.log(0.8) + np.log(0.6)) / 2
    assert cross_entropy_loss(labels, logits).numpy() == pytest.approx(expected_ce, rel=1e-5)
    total = dice_cross_entropy_loss(labels, logits).numpy()
    assert total == pytest.approx(dice_loss(labels, logits).numpy() + expected_ce, rel=1e-5)


def test_labels_with_channel_axis_and_5d_volumes() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=(2, 4, 4, 4)).astype(np.int32)
    logits = rng.normal(size=(2, 4, 4, 4, 5)).astype(np.float32)
    a = dice_loss(labels, logits).numpy()
    b = dice_loss(labels[..., None], logits).numpy()
    assert a == b and 0.0 < a < 1.0
    with pytest.raises(ValueError, match="do not match"):
        dice_loss(labels[0], logits)


def test_get_loss() -> None:
    assert get_loss("dice") is dice_loss
    assert get_loss("cross_entropy") is cross_entropy_loss
    assert get_loss("dice_cross_entropy") is dice_cross_entropy_loss
    assert get_loss(dice_loss) is dice_loss
    with pytest.raises(ConfigurationError, match="unknown loss"):
        get_loss("focal")
    assert [get_loss(name) for name in LOSS_NAMES] == [
        dice_loss, cross_entropy_loss, dice_cross_entropy_loss]
