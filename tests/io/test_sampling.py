"""Tests of dltk_mm.io.sampling: class-balanced and uniform patch sampling, padding, jitter."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from dltk_mm.errors import ConfigurationError  # noqa: E402
from dltk_mm.io import sampling  # noqa: E402

PATCH = (16, 16, 16)


def _volume(shape=(24, 28, 32)) -> tuple[np.ndarray, np.ndarray]:
    """Label: classes 1 (a block), 2 (3 voxels), 3 (1 voxel), no class 4; image = voxel index."""
    label = np.zeros(shape, np.uint8)
    label[4:12, 5:15, 6:16] = 1
    label[20, 3, 30] = 2
    label[0, 27, 0] = 2
    label[23, 0, 31] = 2
    label[10, 20, 25] = 3
    image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    return image, label


def _cut(image, label, starts, patch_size=PATCH):
    """The image and label patches at ``starts`` (NumPy slicing)."""
    windows = [tuple(slice(int(b), int(b) + p) for b, p in zip(start, patch_size, strict=True))
               for start in np.asarray(starts)]
    return (np.stack([np.asarray(image)[w] for w in windows]),
            np.stack([np.asarray(label)[w] for w in windows]))


def _balanced(image, label, patch_size=PATCH, seed=(0, 0), **options):
    """Pads, indexes and samples one read as the pipeline does; returns the cut patches."""
    image, label, _ = sampling.pad_to_patch_size(image, label, patch_size)
    starts = sampling.balanced_starts(label, sampling.class_row_cumsum(label, 5), patch_size,
                                      seed=seed, **options)
    return _cut(image.numpy(), label.numpy(), starts.numpy(), patch_size)


def test_class_row_cumsum_matches_numpy():
    _, label = _volume()
    cumsum = sampling.class_row_cumsum(label, 5).numpy()
    rows = label.reshape(-1, label.shape[-1])
    expected = np.stack([np.cumsum((rows == c).sum(1)) for c in range(5)])
    np.testing.assert_array_equal(cumsum, expected)


def test_balanced_centres_counts_classes_and_distinct():
    _, label = _volume()
    cumsum = sampling.class_row_cumsum(label, 5)
    for seed in range(5):
        centres, classes = sampling.balanced_centres(label, cumsum, 6, (seed, 7))
        centres, classes = centres.numpy(), classes.numpy()
        # Up to 6 per class present: background and class 1 -> 6, class 2 -> 3, class 3 -> 1.
        np.testing.assert_array_equal(np.bincount(classes, minlength=5), [6, 6, 3, 1, 0])
        # Every centre is a voxel of its class, and no voxel is picked twice.
        np.testing.assert_array_equal(label[tuple(centres.T)], classes)
        assert len({tuple(c) for c in centres}) == len(centres)


def test_balanced_centres_uniform_over_class_voxels():
    label = np.zeros((6, 7, 9), np.uint8)
    voxels = [(0, 0, 0), (0, 0, 8), (1, 3, 4), (2, 6, 1), (3, 3, 3), (3, 3, 7), (5, 6, 8),
              (4, 1, 2), (5, 0, 0), (2, 2, 2)]
    for voxel in voxels:
        label[voxel] = 1
    cumsum = sampling.class_row_cumsum(label, 2)
    counts = dict.fromkeys(voxels, 0)
    trials = 300
    draw = tf.function(lambda seed: sampling.balanced_centres(label, cumsum, 6, seed))
    for seed in range(trials):
        centres, classes = draw(tf.constant([seed, 1], tf.int64))
        for centre in centres.numpy()[classes.numpy() == 1]:
            counts[tuple(int(c) for c in centre)] += 1
    # 6 of 10 without replacement: each voxel chosen with probability 0.6 (sd 0.028 here).
    frequencies = np.array(list(counts.values())) / trials
    assert np.all(np.abs(frequencies - 0.6) < 0.1), frequencies


def test_balanced_starts_enrich_foreground():
    rng = np.random.default_rng(0)
    label = np.zeros((48, 48, 48), np.uint8)
    label[30:36, 8:14, 20:26] = 1  # 216 voxels: 0.2 % of the volume
    label[10:12, 40:42, 5:7] = 4
    image = rng.normal(size=label.shape).astype(np.float32)
    _, labels = _balanced(image, label, jitter=(-4, 3), seed=(3, 3))
    assert labels.shape == (18,) + PATCH
    volume_fraction = np.mean(label > 0)
    patch_fraction = np.mean(labels > 0)
    assert patch_fraction > 5 * volume_fraction
    # Every present class appears in some patch.
    assert set(np.unique(labels)) == {0, 1, 4}


def test_jittered_patches_stay_inside_the_volume():
    image, label = _volume()
    cumsum = sampling.class_row_cumsum(label, 5)
    centres, _ = sampling.balanced_centres(label, cumsum, 6, (1, 2))
    starts = sampling.jittered_starts(centres, label.shape, PATCH, (-16, 15), (4, 5)).numpy()
    assert np.all(starts >= 0)
    assert np.all(starts + PATCH <= np.array(label.shape))


def test_edge_voxels_without_jitter_are_inside_their_patch():
    # Classes only at the volume's corners: clamping must keep each centre inside its patch.
    label = np.zeros((20, 20, 20), np.uint8)
    label[0, 0, 0] = 3
    label[-1, -1, -1] = 4
    label[0, -1, 0] = 2
    image = np.zeros(label.shape, np.float32)
    _, labels = _balanced(image, label, jitter=(0, 0), seed=(0, 9))
    assert labels.shape[0] == 6 + 3
    # Patches come grouped by class: the last three were centred on the corner voxels.
    for patch, value in zip(labels[6:], (2, 3, 4), strict=True):
        assert np.sum(patch == value) == 1


def test_jitter_range_is_inclusive_and_respected():
    centres = tf.fill([3000, 3], 100)
    shape = tf.constant([300, 300, 300])
    starts = sampling.jittered_starts(centres, shape, PATCH, (-16, 15), (2, 2)).numpy()
    offsets = starts - (100 - np.array(PATCH) // 2)
    assert offsets.min() == -16 and offsets.max() == 15
    for axis in range(3):
        assert len(np.unique(offsets[:, axis])) == 32
    fixed = sampling.jittered_starts(centres, shape, PATCH, (0, 0), (2, 2)).numpy()
    np.testing.assert_array_equal(fixed, np.full((3000, 3), 92))


def test_clamping_at_both_ends():
    centres = tf.constant([[0, 0, 0], [19, 19, 19], [10, 0, 19]])
    starts = sampling.jittered_starts(centres, [20, 20, 20], PATCH, (-16, 15), (0, 1)).numpy()
    assert np.all((starts >= 0) & (starts <= 4))


@pytest.mark.parametrize(
    "shape", [(10, 40, 40), (40, 12, 40), (40, 40, 7), (5, 9, 11), (16, 16, 16)]
)
def test_padding_smaller_volumes(shape):
    rng = np.random.default_rng(1)
    image = rng.normal(size=shape).astype(np.float32) + 3.0
    label = np.zeros(shape, np.uint8)
    label[tuple(s // 2 for s in shape)] = 2
    padded_image, padded_label, before = sampling.pad_to_patch_size(image, label, PATCH)
    padded_shape = np.maximum(shape, PATCH)
    assert padded_image.shape == tuple(padded_shape)
    before = before.numpy()
    np.testing.assert_array_equal(before, (padded_shape - shape) // 2)
    window = tuple(slice(b, b + s) for b, s in zip(before, shape, strict=True))
    np.testing.assert_array_equal(padded_image.numpy()[window], image)
    np.testing.assert_array_equal(padded_label.numpy()[window], label)
    outside = np.ones(padded_shape, bool)
    outside[window] = False
    assert np.all(padded_image.numpy()[outside] == image.min())
    assert np.all(padded_label.numpy()[outside] == 0)
    images, labels = _balanced(image, label, seed=(5, 5))
    assert images.shape[1:] == PATCH and labels.shape[0] == 7


def test_padding_with_constant():
    image = np.ones((4, 20, 20), np.float32)
    label = np.ones((4, 20, 20), np.uint8)
    padded, padded_label, _ = sampling.pad_to_patch_size(image, label, PATCH, image_pad_value=-7)
    assert set(np.unique(padded.numpy())) == {-7.0, 1.0}
    assert set(np.unique(padded_label.numpy())) == {0, 1}


def test_real_size_thin_slab_is_padded():
    # A 5 mm, 11-slice CT slab resampled to 2 mm is ~28 slices: thinner than a 64^3 patch.
    shape = (28, 200, 200)
    label = np.zeros(shape, np.uint8)
    label[5:25, 40:120, 30:110] = 1
    label[10:20, 130:150, 150:170] = 2
    label[12:18, 150:165, 40:55] = 3
    label[12:18, 150:165, 150:165] = 4
    image = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    images, labels = _balanced(image, label, (64, 64, 64), seed=(1, 1))
    assert images.shape == (30, 64, 64, 64) and labels.shape == (30, 64, 64, 64)
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4}


def test_same_seed_same_patches_different_seed_different():
    image, label = _volume()
    a = _balanced(image, label, seed=(1, 2))[0]
    b = _balanced(image, label, seed=(1, 2))[0]
    c = _balanced(image, label, seed=(1, 3))[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_uniform_starts_cover_range():
    starts = sampling.uniform_starts([20, 17, 16], PATCH, 2000, (0, 0)).numpy()
    np.testing.assert_array_equal(starts.min(0), [0, 0, 0])
    np.testing.assert_array_equal(starts.max(0), [4, 1, 0])


def test_bad_arguments():
    image, label = _volume()
    with pytest.raises(ConfigurationError):
        sampling.pad_to_patch_size(image, label, (16, 16))
    with pytest.raises(ConfigurationError):
        _balanced(image, label, jitter=(3, -3))
    with pytest.raises(ConfigurationError):
        _balanced(image, label, max_centres_per_class=0)


def test_runs_inside_tf_function():
    image, label = _volume()

    cumsum = sampling.class_row_cumsum(label, 5)

    @tf.function
    def sample(seed):
        return sampling.balanced_starts(label, cumsum, PATCH, seed=seed)

    eager = sampling.balanced_starts(label, cumsum, PATCH, seed=(8, 8)).numpy()
    graph = sample(tf.constant([8, 8], tf.int64)).numpy()
    np.testing.assert_array_equal(eager, graph)
