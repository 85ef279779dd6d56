"""Tests of dltk_mm.io.spatial_augmentation: scaling and rotation about the patch centre."""

from __future__ import annotations

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from dltk_mm.io import spatial_augmentation as spatial  # noqa: E402


def _blobs(shape=(21, 23, 25), seed=0):
    """Labels {0, 1, 3} as a few boxes, and an image that is exactly 1 on them, 0 elsewhere."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    for value in (1, 3, 1, 3):
        corner = rng.integers(0, np.asarray(shape) - 6)
        size = rng.integers(3, 7, 3)
        label[tuple(slice(c, c + s) for c, s in zip(corner, size, strict=True))] = value
    return (label > 0).astype(np.float32), label


def _resample(image, label, start, patch, matrix):
    out_image, out_label = spatial.resample_patch(image, label, tf.constant(start, tf.int32),
                                                  patch, matrix)
    return out_image.numpy(), out_label.numpy()


def test_identity_is_the_plain_cut():
    image, label = _blobs()
    image = image + np.random.default_rng(1).normal(size=image.shape).astype(np.float32)
    start, patch = (3, 2, 5), (12, 15, 11)
    out_image, out_label = _resample(image, label, start, patch, tf.eye(3))
    window = tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))
    np.testing.assert_array_equal(out_image, image[window])
    np.testing.assert_array_equal(out_label, label[window])
    matrix = spatial.random_affine_matrix((4, 5), scale_probability=0.0, rotation_probability=0.0,
                                          rotation_degrees=30, tilt_degrees=10)
    np.testing.assert_array_equal(matrix.numpy(), np.eye(3))


def test_quarter_turn_about_z_is_rot90_of_the_axial_plane():
    image, label = _blobs((9, 11, 11))
    out_image, out_label = _resample(image, label, (0, 0, 0), (9, 11, 11),
                                     spatial.affine_matrix([math.pi / 2, 0.0, 0.0], 1.0))
    np.testing.assert_array_equal(out_label, np.rot90(label, k=-1, axes=(1, 2)))
    np.testing.assert_allclose(out_image, np.rot90(image, k=-1, axes=(1, 2)), atol=1e-5)


def test_zoom_about_the_centre_interpolates_linearly():
    ramp = np.broadcast_to(np.arange(9, dtype=np.float32), (9, 9, 9)).copy()
    label = np.zeros(ramp.shape, np.uint8)
    out_image, _ = _resample(ramp, label, (0, 0, 0), (9, 9, 9),
                             spatial.affine_matrix([0.0, 0.0, 0.0], 2.0))
    np.testing.assert_allclose(out_image[4, 4], 4 + (np.arange(9) - 4) / 2, atol=1e-6)


def test_random_transforms_keep_image_and_label_aligned_and_labels_in_the_set():
    image, label = _blobs((40, 40, 40), seed=2)
    patch, start = (17, 17, 17), (11, 12, 10)
    centre = tuple(s + p // 2 for s, p in zip(start, patch, strict=True))
    mismatched = []
    for seed in range(12):
        matrix = spatial.random_affine_matrix(
            (seed, 7), scale_probability=1.0, scale_range=(0.7, 1.4), rotation_probability=1.0,
            rotation_degrees=40, tilt_degrees=15)
        assert not np.allclose(matrix.numpy(), np.eye(3))
        out_image, out_label = _resample(image, label, start, patch, matrix)
        assert set(np.unique(out_label)) <= {0, 1, 3}
        # Trilinear weight of the nearest voxel is >= 1/8: an exact nearest-neighbour bound.
        assert np.all(out_image[out_label > 0] >= 0.125 - 1e-5)
        assert np.all(out_image[out_label == 0] <= 0.875 + 1e-5)
        mismatched.append(np.mean((out_image > 0.5) != (out_label > 0)))
        # The patch centre reads the volume at the unaugmented patch centre.
        assert out_label[8, 8, 8] == label[centre]
    assert np.mean(mismatched) < 0.05


def test_random_matrix_is_seeded_and_within_its_ranges():
    draws = [spatial.random_affine_matrix((seed, 1), 1.0, (0.8, 1.25), 1.0, 20.0, 5.0).numpy()
             for seed in range(50)]
    np.testing.assert_array_equal(
        draws[3], spatial.random_affine_matrix((3, 1), 1.0, (0.8, 1.25), 1.0, 20.0, 5.0).numpy())
    zooms = np.array([1 / np.cbrt(np.linalg.det(m)) for m in draws])
    assert zooms.min() >= 0.8 - 1e-4 and zooms.max() <= 1.25 + 1e-4
    assert zooms.max() - zooms.min() > 0.2
    # The z axis tilts by at most 5 degrees about y and about x.
    tilts = [np.degrees(np.arccos(abs(m[0, 0]) * z)) for m, z in zip(draws, zooms, strict=True)]
    assert max(tilts) <= 5 * math.sqrt(2) + 1e-3
    half = [spatial.random_affine_matrix((seed, 2), 0.5, (0.8, 1.25), 0.0, 20.0, 5.0).numpy()
            for seed in range(200)]
    scaled = np.mean([not np.allclose(m, np.eye(3)) for m in half])
    assert 0.35 < scaled < 0.65
