"""Tests of dltk_mm.io.augmentation: noise, intensity offset, flips with left/right label swap."""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from dltk_mm.errors import ConfigurationError  # noqa: E402
from dltk_mm.flag_fields import attribute_docs  # noqa: E402
from dltk_mm.io import augmentation as aug  # noqa: E402


def _lr_label(shape=(6, 8, 10)) -> np.ndarray:
    """Right kidney (3) on the low-x half, left kidney (4) on the high-x half (LPS: +x = left)."""
    label = np.zeros(shape, np.uint8)
    label[1:3, 2:5, 1:4] = 3
    label[1:3, 2:5, 6:9] = 4
    label[4:, :, :] = 1
    label[0, 0, :] = 2
    return label


def test_gaussian_noise_statistics_and_seeding():
    image = tf.zeros((40, 40, 40))
    noisy = aug.add_gaussian_noise(image, 0.1, (1, 2)).numpy()
    assert abs(noisy.mean()) < 0.002
    assert abs(noisy.std() - 0.1) < 0.002
    # Per voxel: neighbours are uncorrelated.
    assert abs(np.corrcoef(noisy[:, :, 1:].ravel(), noisy[:, :, :-1].ravel())[0, 1]) < 0.02
    np.testing.assert_array_equal(noisy, aug.add_gaussian_noise(image, 0.1, (1, 2)).numpy())
    assert not np.array_equal(noisy, aug.add_gaussian_noise(image, 0.1, (1, 3)).numpy())
    np.testing.assert_array_equal(aug.add_gaussian_noise(image, 0.0, (1, 2)).numpy(), 0.0)


def test_intensity_offset_is_one_value_with_sigma():
    image = tf.random.stateless_normal((3, 8, 8, 8), (0, 0))
    shifted = aug.add_intensity_offset(image, 0.1, (4, 4)).numpy()
    difference = shifted - image.numpy()
    np.testing.assert_allclose(difference, difference.flat[0], atol=1e-6)
    offsets = np.array([aug.sample_intensity_offset(0.1, (seed, 0)).numpy()
                        for seed in range(400)])
    assert abs(offsets.std() - 0.1) < 0.015
    assert abs(offsets.mean()) < 0.015
    np.testing.assert_array_equal(aug.add_intensity_offset(image, 0.0, (4, 4)), image)


def test_left_right_flip_swaps_kidneys_and_reverses_x():
    label = _lr_label()
    image = np.arange(label.size, dtype=np.float32).reshape(label.shape)
    flipped_image, flipped_label = aug.flip(image, label, 2)
    flipped_label = flipped_label.numpy()
    np.testing.assert_array_equal(flipped_image.numpy(), image[:, :, ::-1])
    expected = label[:, :, ::-1].copy()
    expected[label[:, :, ::-1] == 3] = 4
    expected[label[:, :, ::-1] == 4] = 3
    np.testing.assert_array_equal(flipped_label, expected)
    # The right kidney stays on the low-x (patient right) side: anatomy stays consistent.
    assert np.all(np.nonzero(flipped_label == 3)[2] < 5)
    assert np.all(np.nonzero(flipped_label == 4)[2] >= 5)
    # Flipping twice restores the input.
    back_image, back_label = aug.flip(flipped_image, flipped_label, 2)
    np.testing.assert_array_equal(back_label.numpy(), label)
    np.testing.assert_array_equal(back_image.numpy(), image)


@pytest.mark.parametrize("axis", [0, 1])
def test_other_flips_do_not_swap_labels(axis):
    label = _lr_label()
    image = np.zeros(label.shape, np.float32)
    _, flipped = aug.flip(image, label, axis)
    np.testing.assert_array_equal(flipped.numpy(), np.flip(label, axis))


def test_flip_acts_on_the_last_three_axes_of_a_stack():
    label = np.stack([_lr_label(), _lr_label()])
    _, flipped = aug.flip(np.zeros(label.shape, np.float32), label, 2)
    assert np.all(np.nonzero(flipped.numpy() == 3)[3] < 5)
    _, flipped = aug.flip(np.zeros(label.shape, np.float32), label, 0)
    np.testing.assert_array_equal(flipped.numpy(), label[:, ::-1])


def test_random_flip_keeps_anatomy_and_flips_about_half_the_time():
    label = _lr_label()
    image = np.broadcast_to(np.arange(label.shape[2], dtype=np.float32), label.shape)
    flip = tf.function(lambda seed: aug.random_flip(image, label, (0, 1, 2), seed))
    lr_flips = 0
    trials = 200
    for seed in range(trials):
        out_image, out_label = flip(tf.constant([seed, 3], tf.int64))
        out_label = out_label.numpy()
        assert np.all(np.nonzero(out_label == 3)[2] < 5)
        assert np.all(np.nonzero(out_label == 4)[2] >= 5)
        lr_flips += out_image.numpy()[0, 0, 0] == label.shape[2] - 1
    assert 0.4 < lr_flips / trials < 0.6


def test_random_flip_without_axes_is_identity():
    label = _lr_label()
    image = np.ones(label.shape, np.float32)
    out_image, out_label = aug.random_flip(image, label, (), (0, 0))
    np.testing.assert_array_equal(out_label.numpy(), label)
    np.testing.assert_array_equal(out_image.numpy(), image)


def test_swap_labels_touches_only_the_pair():
    label = np.arange(6, dtype=np.int32)
    np.testing.assert_array_equal(aug.swap_labels(label).numpy(), [0, 1, 2, 4, 3, 5])


def test_config_defaults_and_validation():
    config = aug.AugmentationConfig()
    assert (config.noise_sigma, config.offset_sigma, config.flip_axes) == (0.1, 0.1, ())
    assert config.swap_lr_labels == (3, 4)
    with pytest.raises(ConfigurationError):
        aug.AugmentationConfig(flip_axes=(3,))
    with pytest.raises(ConfigurationError):
        aug.AugmentationConfig(flip_axes=(2, 2))
    with pytest.raises(ConfigurationError):
        aug.AugmentationConfig(noise_sigma=-1)
    with pytest.raises(ConfigurationError):
        aug.AugmentationConfig(flip_axes=(2,), swap_lr_labels=None)
    with pytest.raises(ConfigurationError):
        aug.flip(np.zeros((2, 2, 2)), np.zeros((2, 2, 2), np.uint8), 2, swap_lr_labels=(3, 3))


# --------------------------------------------------------------------------------------------
# Intensity augmentation beyond the paper: gamma, contrast, brightness
def _patch(seed=0) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).normal(size=(8, 9, 10)).astype(np.float32))


@pytest.mark.parametrize("function", [aug.random_gamma, aug.random_contrast,
                                      aug.random_brightness])
def test_intensity_augmentation_off_is_the_identity(function):
    image = _patch()
    np.testing.assert_array_equal(function(image, 0.0, (0.5, 2.0), (1, 2)).numpy(), image)
    # Drawn but with a factor of 1: the identity up to rounding.
    np.testing.assert_allclose(function(image, 1.0, (1.0, 1.0), (1, 2)).numpy(), image,
                               atol=1e-5)


def test_random_intensity_with_the_default_config_is_the_identity():
    image = _patch()
    out = aug.random_intensity(image, aug.AugmentationConfig(), (3, 4))
    np.testing.assert_array_equal(out.numpy(), image.numpy())


def test_gamma_is_applied_to_the_patch_rescaled_to_unit_range():
    image = _patch().numpy()
    out = aug.random_gamma(image, 1.0, (2.0, 2.0), (1, 2)).numpy()
    low, high = image.min(), image.max()
    expected = low + (high - low) * ((image - low) / (high - low)) ** 2
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert out.min() == pytest.approx(low) and out.max() == pytest.approx(high)
    constant = np.full((4, 4, 4), 3.0, np.float32)
    np.testing.assert_allclose(aug.random_gamma(constant, 1.0, (2.0, 2.0), (1, 2)), constant)


def test_contrast_scales_about_the_mean_and_brightness_multiplies():
    image = _patch().numpy()
    contrast = aug.random_contrast(image, 1.0, (0.5, 0.5), (1, 2)).numpy()
    assert contrast.mean() == pytest.approx(image.mean(), abs=1e-5)
    assert contrast.std() == pytest.approx(0.5 * image.std(), rel=1e-4)
    brightness = aug.random_brightness(image, 1.0, (1.5, 1.5), (1, 2)).numpy()
    np.testing.assert_allclose(brightness, 1.5 * image, rtol=1e-6)


def test_intensity_factors_follow_probability_range_and_seed():
    image = tf.ones((2, 2, 2))
    factors = np.array([aug.random_brightness(image, 0.5, (0.8, 1.2), (seed, 5)).numpy()[0, 0, 0]
                        for seed in range(200)])
    applied = factors != 1.0
    assert 0.35 < applied.mean() < 0.65
    assert factors.min() >= 0.8 and factors.max() <= 1.2 and np.ptp(factors[applied]) > 0.3
    again = aug.random_brightness(image, 0.5, (0.8, 1.2), (7, 5)).numpy()[0, 0, 0]
    assert again == factors[7]


def _two_organ_patch() -> tuple[np.ndarray, np.ndarray]:
    """A patch of constant 2.0 with a liver block (label 1) and a spleen block (label 2)."""
    image = np.full((12, 12, 16), 2.0, np.float32)
    label = np.zeros(image.shape, np.uint8)
    label[2:10, 2:10, 1:7] = 1
    label[2:10, 2:10, 10:15] = 2
    return image, label


def test_organ_intensity_scales_each_organ_by_its_own_factor_and_keeps_the_background():
    image, label = _two_organ_patch()
    out = aug.random_organ_intensity(image, label, 1.0, (0.1, 1.25), (4, 2)).numpy()
    liver = out[4:8, 4:8, 3:5] / 2.0  # interiors: the 3x3x3 softening does not reach them
    spleen = out[4:8, 4:8, 11:14] / 2.0
    np.testing.assert_allclose(liver, liver.flat[0], rtol=1e-6)
    np.testing.assert_allclose(spleen, spleen.flat[0], rtol=1e-6)
    assert 0.1 <= liver.flat[0] <= 1.25 and 0.1 <= spleen.flat[0] <= 1.25
    assert abs(liver.flat[0] - spleen.flat[0]) > 1e-3  # independent factors
    np.testing.assert_array_equal(out[:, :, 8], image[:, :, 8])  # background between the organs
    np.testing.assert_array_equal(out[11], image[11])
    # The border changes gradually: a voxel just outside the liver is between 2 and the inside.
    edge = out[5, 5, 0] / 2.0
    assert min(1.0, liver.flat[0]) < edge < max(1.0, liver.flat[0])


def test_organ_intensity_follows_probability_and_seed():
    image, label = _two_organ_patch()
    np.testing.assert_array_equal(
        aug.random_organ_intensity(image, label, 0.0, (0.1, 1.25), (1, 2)), image)
    applied = [not np.array_equal(aug.random_organ_intensity(image, label, 0.5, (0.1, 1.25),
                                                              (seed, 9)).numpy(), image)
               for seed in range(60)]
    assert 0.25 < np.mean(applied) < 0.75
    first = aug.random_organ_intensity(image, label, 1.0, (0.1, 1.25), (3, 3)).numpy()
    np.testing.assert_array_equal(
        first, aug.random_organ_intensity(image, label, 1.0, (0.1, 1.25), (3, 3)).numpy())
    empty = aug.random_organ_intensity(image, np.zeros_like(label), 1.0, (0.1, 1.25), (3, 3))
    np.testing.assert_array_equal(empty.numpy(), image)


def test_augmentation_config_new_fields_default_off_and_validated():
    config = aug.AugmentationConfig()
    for name in ("gamma_probability", "contrast_probability", "brightness_probability",
                 "organ_intensity_probability", "scale_probability", "rotation_probability"):
        assert getattr(config, name) == 0.0
    assert not config.spatial
    assert aug.AugmentationConfig(rotation_probability=0.2).spatial
    assert aug.AugmentationConfig(gamma_range=[0.5, 2]).gamma_range == (0.5, 2.0)
    for bad in ({"gamma_probability": 1.5}, {"scale_probability": -0.1},
                {"contrast_range": (1.2, 0.8)}, {"gamma_range": (0.0, 1.0)},
                {"brightness_range": (1.0,)}, {"rotation_degrees": -1.0},
                {"tilt_degrees": 200.0}, {"organ_intensity_range": (0.0, 1.0)},
                {"organ_intensity_probability": 2.0}):
        with pytest.raises(ConfigurationError):
            aug.AugmentationConfig(**bad)


def test_every_field_has_a_one_sentence_flag_help():
    docs = attribute_docs(aug.AugmentationConfig)
    for field in dataclasses.fields(aug.AugmentationConfig):
        assert docs.get(field.name), field.name
