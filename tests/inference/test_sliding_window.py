"""Tests of dltk_mm.inference.sliding_window."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from dltk_mm.inference.sliding_window import (
    blended_slabs,
    count_windows,
    gaussian_weights,
    sliding_window_inference,
    window_starts,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PATCH = (8, 12, 16)


def _pointwise_probabilities(x: np.ndarray) -> np.ndarray:
    """A voxel-wise (so translation-equivariant) softmax over three channels made from x."""
    x = np.asarray(x, dtype=np.float64)[..., 0]
    logits = np.stack([x, 2.0 * x - 1.0, -x + 0.5], axis=-1)
    logits -= logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def _threshold_one_hot(x: np.ndarray) -> np.ndarray:
    """One-hot of intensities thresholded into 4 classes."""
    labels = np.digitize(np.asarray(x)[..., 0], [-0.5, 0.0, 0.5])
    return np.eye(4, dtype=np.float32)[labels]


class _CountingFn:
    def __init__(self, fn):
        self.fn = fn
        self.batch_shapes: list[tuple[int, ...]] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.batch_shapes.append(batch.shape)
        return self.fn(batch)


@pytest.mark.parametrize("size", [17, 24, 40, 100])
@pytest.mark.parametrize("patch", [16, 7])
@pytest.mark.parametrize("overlap", [0.0, 0.5, 0.75])
def test_window_starts_cover_the_axis_exactly(size: int, patch: int, overlap: float) -> None:
    starts = window_starts(size, patch, overlap)
    assert starts[0] == 0
    assert starts[-1] == size - patch  # the last window is flush with the end
    assert starts == sorted(set(starts))
    covered = np.zeros(size, int)
    for s in starts:
        covered[s : s + patch] += 1
    assert covered.min() >= 1
    stride = max(1, round(patch * (1 - overlap)))
    assert all(b - a <= stride for a, b in zip(starts, starts[1:], strict=False))


def test_window_starts_without_overlap_tile_a_divisible_axis() -> None:
    assert window_starts(48, 16, 0.0) == [0, 16, 32]
    assert window_starts(48, 16, 0.5) == [0, 8, 16, 24, 32]
    assert window_starts(10, 16, 0.5) == [0]
    with pytest.raises(ValueError, match="overlap"):
        window_starts(48, 16, 1.0)


def test_gaussian_weights_peak_at_the_centre_and_are_positive() -> None:
    weights = gaussian_weights((8, 12, 16))
    assert weights.shape == (8, 12, 16)
    assert weights.dtype == np.float32
    assert weights.min() > 0
    assert weights.max() == pytest.approx(1.0)
    # sigma = patch / 8: one sigma (2 voxels) from the centre along z -> exp(-1/2).
    centre_profile = gaussian_weights((16,))
    assert centre_profile[9] / centre_profile[7] == pytest.approx(
        math.exp(-0.5 * ((9 - 7.5) / 2) ** 2) / math.exp(-0.5 * ((7 - 7.5) / 2) ** 2), rel=1e-5
    )


@pytest.mark.parametrize(
    "shape",
    [(5, 9, 11), (8, 12, 16), (19, 25, 33), (16, 24, 32), (3, 30, 7)],
    ids=["smaller", "exact", "not-divisible", "divisible", "mixed"],
)
@pytest.mark.parametrize("overlap", [0.0, 0.5])
@pytest.mark.parametrize("weighting", ["uniform", "gaussian"])
def test_stitched_pointwise_function_equals_whole_volume(shape, overlap, weighting) -> None:
    rng = np.random.default_rng(0)
    volume = rng.normal(size=shape).astype(np.float32)
    result = sliding_window_inference(
        volume,
        _pointwise_probabilities,
        patch_size=PATCH,
        overlap=overlap,
        batch_size=3,
        weighting=weighting,
        num_classes=3,
    )
    assert result.shape == (*shape, 3)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, _pointwise_probabilities(volume[..., None]), atol=1e-5)


def test_one_hot_of_thresholded_intensities_is_recovered_exactly() -> None:
    rng = np.random.default_rng(1)
    volume = rng.normal(size=(13, 21, 29)).astype(np.float32)
    result = sliding_window_inference(
        volume[..., None], _threshold_one_hot, patch_size=PATCH, overlap=0.5, batch_size=2
    )
    expected = _threshold_one_hot(volume[..., None])
    np.testing.assert_allclose(result, expected, atol=1e-6)
    np.testing.assert_array_equal(result.argmax(-1), expected.argmax(-1))


def test_overlapping_windows_are_averaged() -> None:
    """A non-pointwise fn (each window -> its own constant): the result is the window average.

    Axis z: size 16, patch 8, overlap 0.5 -> windows at 0, 4, 8; y and x fit one window each.
    """
    volume = np.zeros((16, 4, 4), np.float32)
    volume[:, 0, 0] = np.arange(16)  # the window's z start is recoverable from its first voxel

    def window_start_as_probability(batch: np.ndarray) -> np.ndarray:
        start = batch[:, 0, 0, 0, 0]
        out = np.zeros((*batch.shape[:4], 1), np.float32)
        out += start[:, None, None, None, None]
        return out

    result = sliding_window_inference(
        volume,
        window_start_as_probability,
        patch_size=(8, 4, 4),
        overlap=0.5,
        batch_size=2,
    )[:, 0, 0, 0]
    expected = np.array([0] * 4 + [2] * 4 + [6] * 4 + [8] * 4, np.float32)
    np.testing.assert_allclose(result, expected)


def test_every_voxel_is_covered_and_padding_is_cropped() -> None:
    shape = (6, 31, 17)  # shorter than the patch along z, longer along y and x

    def ones(batch: np.ndarray) -> np.ndarray:
        return np.ones((*batch.shape[:4], 2), np.float32)

    result = sliding_window_inference(np.zeros(shape, np.float32), ones, patch_size=PATCH)
    assert result.shape == (*shape, 2)
    np.testing.assert_array_equal(result, 1.0)


@pytest.mark.parametrize("pad_last_batch", [True, False])
def test_number_of_calls_and_batch_shapes(pad_last_batch: bool) -> None:
    shape = (19, 25, 33)
    windows = count_windows(shape, PATCH, 0.5)
    # z: 19, patch 8, stride 4 -> 0,4,8,11; y: 25/12/6 -> 0,6,12,13; x: 33/16/8 -> 0,8,16,17
    assert windows == 4 * 4 * 4
    batch_size = 5
    counting = _CountingFn(_pointwise_probabilities)
    progress: list[tuple[int, int]] = []
    sliding_window_inference(
        np.zeros(shape, np.float32),
        counting,
        patch_size=PATCH,
        overlap=0.5,
        batch_size=batch_size,
        pad_last_batch=pad_last_batch,
        progress=lambda done, total: progress.append((done, total)),
    )
    assert len(counting.batch_shapes) == math.ceil(windows / batch_size)
    if pad_last_batch:
        assert set(counting.batch_shapes) == {(batch_size, *PATCH, 1)}
    else:
        assert counting.batch_shapes[-1] == (windows % batch_size, *PATCH, 1)
    assert progress[-1] == (windows, windows)
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)


def test_overlap_zero_visits_each_voxel_once_on_a_divisible_volume() -> None:
    counting = _CountingFn(_pointwise_probabilities)
    sliding_window_inference(
        np.zeros((16, 24, 32), np.float32), counting, patch_size=PATCH, overlap=0.0, batch_size=1
    )
    assert len(counting.batch_shapes) == 2 * 2 * 2


def test_multi_channel_input_reaches_predict_fn() -> None:
    volume = np.random.default_rng(2).normal(size=(9, 12, 16, 2)).astype(np.float32)

    def channel_difference(batch: np.ndarray) -> np.ndarray:
        return (batch[..., :1] - batch[..., 1:]).astype(np.float32)

    result = sliding_window_inference(volume, channel_difference, patch_size=PATCH)
    np.testing.assert_allclose(result[..., 0], volume[..., 0] - volume[..., 1], atol=1e-6)


def test_bad_predict_fn_output_and_arguments_are_rejected() -> None:
    volume = np.zeros((8, 12, 16), np.float32)
    with pytest.raises(ValueError, match="predict_fn returned shape"):
        sliding_window_inference(volume, lambda b: b[:, :4], patch_size=PATCH)
    with pytest.raises(ValueError, match="predict_fn returned shape"):
        sliding_window_inference(volume, _pointwise_probabilities, PATCH, num_classes=5)
    with pytest.raises(ValueError, match="weighting"):
        sliding_window_inference(volume, _pointwise_probabilities, PATCH, weighting="cosine")
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_inference(volume, _pointwise_probabilities, PATCH, overlap=-0.1)


def test_compiled_tf_function_is_traced_once() -> None:
    tf = pytest.importorskip("tensorflow")
    traces = []

    @tf.function
    def predict(batch):
        traces.append(1)
        return tf.nn.softmax(tf.concat([batch, -batch], axis=-1), axis=-1)

    volume = np.random.default_rng(4).normal(size=(19, 25, 33)).astype(np.float32)
    result = sliding_window_inference(volume, predict, patch_size=PATCH, batch_size=7)
    assert len(traces) == 1  # 64 windows = 9 full batches + one padded batch, one input shape
    expected = 1.0 / (1.0 + np.exp(-2.0 * volume))
    np.testing.assert_allclose(result[..., 0], expected, atol=1e-5)


def _window_mean_and_position(batch: np.ndarray) -> np.ndarray:
    """Not pointwise: each output voxel mixes its intensity, its x in the window and the
    window's mean, so any change of which windows are summed, or in what order, shows."""
    position = np.arange(batch.shape[3], dtype=np.float32) / batch.shape[3]
    mean = batch.mean(axis=(1, 2, 3, 4), keepdims=True)[..., 0]
    first = batch[..., 0] + position * mean
    return np.stack([first, 1.0 - first, position + 0 * first], axis=-1).astype(np.float32)


@pytest.mark.parametrize("shape", [(5, 9, 11), (19, 25, 33), (40, 13, 20)],
                         ids=["padded", "not-divisible", "tall"])
@pytest.mark.parametrize("overlap", [0.0, 0.5, 0.75])
@pytest.mark.parametrize("weighting", ["uniform", "gaussian"])
def test_slabs_are_the_whole_volume_bit_for_bit(shape, overlap, weighting) -> None:
    volume = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    options = {"patch_size": PATCH, "overlap": overlap, "batch_size": 3, "weighting": weighting}
    whole = sliding_window_inference(volume, _window_mean_and_position, **options)
    starts, slabs = [], []
    for start, slab in blended_slabs(volume, _window_mean_and_position, **options):
        assert slab.shape[1:] == (*shape[1:], 3) and slab.dtype == np.float32
        starts.append(start)
        slabs.append(slab.copy())  # a slab is valid until the next one
    assert starts == list(np.cumsum([0] + [len(s) for s in slabs[:-1]]))  # in order, once
    np.testing.assert_array_equal(np.concatenate(slabs), whole)
    if shape[0] > 2 * PATCH[0]:
        assert len(slabs) > 1
