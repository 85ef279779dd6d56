"""Tests of dltk_mm.io.pipeline: batch contract, strict modality alternation, seeding, mixing."""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from dltk_mm.errors import ConfigurationError, InputDataError  # noqa: E402
from dltk_mm.io.augmentation import AugmentationConfig  # noqa: E402
from dltk_mm.io.pipeline import (  # noqa: E402
    PipelineConfig,
    interleaved_dataset,
    modality_dataset,
)

PATCH = (16, 16, 16)
NO_AUGMENTATION = AugmentationConfig(noise_sigma=0.0, offset_sigma=0.0)


def _volume(shape, seed: int, base: float = 0.0):
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    z, y, x = (s // 2 for s in shape)
    label[z - 2:z + 2, 2:6, 2:6] = 1
    label[z, y, -3] = 2
    label[1:3, -4:-2, 1:3] = 3
    label[1:3, -4:-2, -3:-1] = 4
    image = (base + rng.normal(0, 1, shape)).astype(np.float32)
    return image, label


def _volumes(count: int, base: float = 0.0):
    shapes = [(20, 24, 28), (18, 30, 22), (12, 20, 20)]  # the last is thinner than a patch
    return [_volume(shapes[i % 3], i, base) for i in range(count)]


def _config(**kwargs) -> PipelineConfig:
    defaults = {"patch_size": PATCH, "batch_size": 4, "seed": 3, "shuffle_buffer": 32}
    defaults.update(kwargs)
    return PipelineConfig(**defaults)


def _take(dataset: tf.data.Dataset, count: int):
    return [tuple(t.numpy() for t in element) for element in dataset.take(count)]


def test_batch_contract():
    dataset = modality_dataset(_volumes(3), 1, _config())
    image_spec, label_spec, modality_spec = dataset.element_spec
    assert image_spec.shape == (4,) + PATCH + (1,) and image_spec.dtype == tf.float32
    assert label_spec.shape == (4,) + PATCH and label_spec.dtype == tf.int32
    assert modality_spec.shape == (4,) and modality_spec.dtype == tf.int32
    for image, label, modality in _take(dataset, 3):
        assert image.shape == (4,) + PATCH + (1,) and image.dtype == np.float32
        assert label.dtype == np.int32 and label.min() >= 0 and label.max() <= 4
        np.testing.assert_array_equal(modality, [1, 1, 1, 1])


def test_default_order_alternates_mr_then_ct():
    volumes = {"mr": _volumes(2), "ct": _volumes(3, base=100.0)}
    batches = _take(interleaved_dataset(volumes, ("mr", "ct"), config=_config()), 6)
    assert [int(m[0]) for _, _, m in batches] == [0, 1, 0, 1, 0, 1]
    for image, _, modality in batches:
        assert np.all(modality == modality[0])
        # CT volumes are centred at 100: each batch holds one modality only.
        assert np.all(image > 50) == (modality[0] == 1)
        assert np.all(image < 50) == (modality[0] == 0)


def test_custom_order_with_three_modalities():
    volumes = {"mr": _volumes(1), "ct": _volumes(1), "mr_t1": _volumes(1)}
    config = _config(sampling="uniform", patches_per_volume=4)
    dataset = interleaved_dataset(volumes, ("mr", "ct", "mr_t1"), ("ct", "mr_t1", "mr", "mr"),
                                  config)
    indices = [int(m[0]) for _, _, m in _take(dataset, 8)]
    assert indices == [1, 2, 0, 0, 1, 2, 0, 0]


def test_single_modality():
    dataset = interleaved_dataset({"ct": _volumes(2), "mr": _volumes(1)}, ("ct",),
                                  config=_config())
    assert [int(m[0]) for _, _, m in _take(dataset, 3)] == [0, 0, 0]


def test_same_seed_same_batches_other_seed_differs():
    volumes = {"mr": _volumes(2), "ct": _volumes(3)}
    config = _config(augmentation=AugmentationConfig(flip_axes=(0, 2)))
    first = _take(interleaved_dataset(volumes, ("mr", "ct"), config=config), 4)
    again = _take(interleaved_dataset(volumes, ("mr", "ct"), config=config), 4)
    for a, b in zip(first, again, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    other_seed = dataclasses.replace(config, seed=4)
    other = _take(modality_dataset(volumes["mr"], 0, other_seed), 1)
    assert not np.array_equal(first[0][0], other[0][0])
    assert not np.array_equal(first[0][1], other[0][1])


def test_offset_shared_per_read_and_batches_mix_volumes():
    # Constant volumes (value 10 * i) and no noise: each patch is one constant, 10 * i plus the
    # offset of its read, so patches with equal values come from one read.
    volumes = []
    for i in range(3):
        _, label = _volume((20, 24, 28), i)
        volumes.append((np.full(label.shape, 10.0 * i, np.float32), label))
    config = _config(augmentation=AugmentationConfig(noise_sigma=0.0, offset_sigma=0.1))
    batches = _take(modality_dataset(volumes, 0, config), 20)
    values = []
    mixed = 0
    for image, _, _ in batches:
        per_patch = image.reshape(4, -1)
        assert np.all(per_patch == per_patch[:, :1])
        values.extend(per_patch[:, 0])
        mixed += len(np.unique(np.round(per_patch[:, 0] / 10))) > 1
    values = np.asarray(values)
    volume_of = np.round(values / 10)
    offsets = values - 10 * volume_of
    assert np.all(np.abs(offsets) < 0.5) and np.any(offsets != 0)
    # 80 patches from reads of 18 patches: few distinct offsets, each shared by many patches.
    distinct, counts = np.unique(values, return_counts=True)
    assert len(distinct) <= 8 and counts.max() >= 10
    assert mixed >= 5  # the shuffle buffer spreads reads over batches


def test_balanced_sampling_enriches_foreground_over_uniform():
    volumes = [_volume((40, 40, 40), i) for i in range(2)]
    base = {"augmentation": NO_AUGMENTATION, "batch_size": 8, "jitter": (-4, 3)}
    balanced = _take(modality_dataset(volumes, 0, _config(**base)), 8)
    uniform = _take(modality_dataset(volumes, 0, _config(sampling="uniform", **base)), 8)
    balanced_fraction = np.mean([np.mean(label > 0) for _, label, _ in balanced])
    uniform_fraction = np.mean([np.mean(label > 0) for _, label, _ in uniform])
    volume_fraction = np.mean([np.mean(label > 0) for _, label in volumes])
    assert balanced_fraction > 3 * uniform_fraction
    assert balanced_fraction > 3 * volume_fraction
    classes = np.unique(np.concatenate([label.ravel() for _, label, _ in balanced]))
    np.testing.assert_array_equal(classes, [0, 1, 2, 3, 4])


def test_pipeline_lr_flip_keeps_right_kidney_on_the_right():
    # x is exactly one patch wide, so every patch spans the whole left-right extent; image = x.
    shape = (20, 20, 16)
    label = np.zeros(shape, np.uint8)
    label[4:8, 4:8, 1:4] = 3
    label[4:8, 4:8, 12:15] = 4
    label[12:16, 10:14, 5:10] = 1
    image = np.broadcast_to(np.arange(16, dtype=np.float32), shape).copy()
    aug = AugmentationConfig(noise_sigma=0.0, offset_sigma=0.0, flip_axes=(2,))
    batches = _take(modality_dataset([(image, label)], 0, _config(augmentation=aug)), 10)
    flipped = 0
    for images, labels, _ in batches:
        for patch_image, patch_label in zip(images[..., 0], labels, strict=True):
            is_flipped = patch_image[0, 0, 0] == 15
            assert is_flipped or patch_image[0, 0, 0] == 0
            flipped += is_flipped
            assert np.all(np.nonzero(patch_label == 3)[2] < 8)
            assert np.all(np.nonzero(patch_label == 4)[2] >= 8)
    assert 5 < flipped < 35


def test_bad_input_is_reported():
    image, label = _volume((20, 20, 20), 0)
    bad_label = label.copy()
    bad_label[0, 0, 0] = 7
    with pytest.raises(InputDataError, match="volume 1"):
        modality_dataset([(image, label), (image, bad_label)], 0, _config())
    with pytest.raises(InputDataError, match="shape"):
        modality_dataset([(image, label[:10])], 0, _config())
    with pytest.raises(InputDataError, match="ct"):
        interleaved_dataset({"mr": [(image, label)]}, ("mr", "ct"), config=_config())
    with pytest.raises(ConfigurationError):
        interleaved_dataset({"mr": [(image, label)]}, ("mr",), ("ct",), _config())
    with pytest.raises(ConfigurationError):
        _config(sampling="random")
    with pytest.raises(ConfigurationError):
        _config(batch_size=0)


def test_iterator_checkpoint_resumes_exactly(tmp_path):
    volumes = {"mr": _volumes(1), "ct": _volumes(2)}
    iterator = iter(interleaved_dataset(volumes, ("mr", "ct"), config=_config()))
    for _ in range(3):
        next(iterator)
    path = tf.train.Checkpoint(iterator=iterator).write(str(tmp_path / "pipeline"))
    expected = [next(iterator) for _ in range(3)]
    restored = iter(interleaved_dataset(volumes, ("mr", "ct"), config=_config()))
    tf.train.Checkpoint(iterator=restored).read(path).assert_consumed()
    for want in expected:
        got = next(restored)
        for a, b in zip(want, got, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


# --------------------------------------------------------------------------------------------
# Augmentation beyond the paper inside the pipeline
ALL_OFF_OTHER_RANGES = AugmentationConfig(
    noise_sigma=0.0, offset_sigma=0.0, gamma_range=(0.5, 2.0), contrast_range=(0.5, 1.5),
    brightness_range=(0.5, 1.5), scale_range=(0.5, 2.0), rotation_degrees=90.0,
    tilt_degrees=30.0)
SPATIAL = dataclasses.replace(ALL_OFF_OTHER_RANGES, scale_probability=1.0,
                              rotation_probability=1.0, scale_range=(0.75, 1.3),
                              rotation_degrees=30.0, tilt_degrees=10.0)


def _label_shaped_volumes():
    """Image exactly 1 on the organs, 0 elsewhere: alignment is readable from the batch."""
    volumes = []
    for i in range(2):
        _, label = _volume((20, 24, 28), i)
        volumes.append(((label > 0).astype(np.float32), label))
    return volumes


def _assert_same(first, second):
    for a, b in zip(first, second, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)


def test_augmentations_with_probability_zero_are_the_identity():
    volumes = _volumes(2)
    plain = _take(modality_dataset(volumes, 0, _config(augmentation=NO_AUGMENTATION)), 4)
    off = _take(modality_dataset(volumes, 0, _config(augmentation=ALL_OFF_OTHER_RANGES)), 4)
    _assert_same(plain, off)


def test_spatial_augmentation_keeps_image_and_label_aligned():
    volumes = _label_shaped_volumes()
    augmented = _take(modality_dataset(volumes, 0, _config(augmentation=SPATIAL)), 6)
    plain = _take(modality_dataset(volumes, 0, _config(augmentation=NO_AUGMENTATION)), 6)
    changed = 0
    for (image, label, _), (plain_image, _, _) in zip(augmented, plain, strict=True):
        image = image[..., 0]
        assert set(np.unique(label)) <= {0, 1, 2, 3, 4}
        # Nearest-neighbour tolerance of trilinear interpolation: the nearest voxel weighs >= 1/8.
        assert np.all(image[label > 0] >= 0.125 - 1e-5)
        assert np.all(image[label == 0] <= 0.875 + 1e-5)
        changed += not np.allclose(image, plain_image[..., 0], atol=1e-3)
        assert np.mean(image > 0) > 0  # balanced sampling still centres patches on organs
    assert changed == len(augmented)  # the patches were really transformed


def test_intensity_augmentation_keeps_labels_and_is_seeded():
    volumes = _volumes(2)
    intensity = dataclasses.replace(
        NO_AUGMENTATION, gamma_probability=1.0, contrast_probability=1.0,
        brightness_probability=1.0)
    plain = _take(modality_dataset(volumes, 0, _config(augmentation=NO_AUGMENTATION)), 3)
    config = _config(augmentation=intensity)
    augmented = _take(modality_dataset(volumes, 0, config), 3)
    for (image, label, _), (plain_image, plain_label, _) in zip(augmented, plain, strict=True):
        np.testing.assert_array_equal(label, plain_label)
        assert not np.allclose(image, plain_image)
    _assert_same(augmented, _take(modality_dataset(volumes, 0, config), 3))


def test_organ_intensity_rescales_organs_only_and_keeps_labels():
    volumes = _volumes(2)
    organs = dataclasses.replace(NO_AUGMENTATION, organ_intensity_probability=1.0,
                                 organ_intensity_range=(0.5, 0.5))
    plain = _take(modality_dataset(volumes, 0, _config(augmentation=NO_AUGMENTATION)), 3)
    augmented = _take(modality_dataset(volumes, 0, _config(augmentation=organs)), 3)
    for (image, label, _), (plain_image, plain_label, _) in zip(augmented, plain, strict=True):
        np.testing.assert_array_equal(label, plain_label)
        ratio = np.divide(image[..., 0], plain_image[..., 0], out=np.ones(label.shape, np.float32),
                          where=plain_image[..., 0] != 0)
        assert np.all((ratio > 0.5 - 1e-4) & (ratio < 1 + 1e-4))  # a factor between 0.5 and 1
        # Every organ voxel is darkened (its own factor weighs >= 1/27 after the softening) ...
        assert np.all(ratio[label > 0] < 1 - 0.5 / 27 + 1e-4) and ratio[label > 0].min() < 0.9
        # ... and background away from the organs is untouched.
        assert np.isclose(ratio[label == 0], 1.0, atol=1e-4).mean() > 0.5


def test_every_augmentation_on_is_repeatable_with_a_seed():
    everything = dataclasses.replace(
        SPATIAL, noise_sigma=0.1, offset_sigma=0.1, flip_axes=(0, 1, 2), gamma_probability=0.5,
        contrast_probability=0.5, brightness_probability=0.5, organ_intensity_probability=0.5)
    volumes = {"mr": _volumes(2), "ct": _volumes(1)}
    config = _config(augmentation=everything)
    first = _take(interleaved_dataset(volumes, ("mr", "ct"), config=config), 4)
    _assert_same(first, _take(interleaved_dataset(volumes, ("mr", "ct"), config=config), 4))
    other = _take(interleaved_dataset(volumes, ("mr", "ct"),
                                      config=dataclasses.replace(config, seed=9)), 1)
    assert not np.array_equal(first[0][0], other[0][0])
