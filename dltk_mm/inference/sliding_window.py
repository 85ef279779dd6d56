"""Sliding-window inference over a whole volume.

Valindria et al. (WACV 2018) segment a whole preprocessed volume with the patch-trained FCN by
sliding a 64^3 window over it; class probabilities are averaged where windows overlap, then the
argmax gives the labels. The authors' code used 50 % overlap for validation and no overlap at test
time; dltk_mm defaults to 50 % (``overlap=0.5``) and ``overlap=0.0`` reproduces the code's test-time
setting (docs/paper.md, section 6). Callers go through
:func:`dltk_mm.inference.segment.segment_volume`, which adds mirroring, the argmax and
post-processing.

Memory: windows are visited z-major and the blended probabilities are given out slab by slab
(:func:`blended_slabs`) as soon as no later window reaches them, so the accumulator is only one
patch deep: ``(pz, y, x, C)`` float32 plus a ``(pz, y, x)`` float32 weight map, and one batch of
windows is alive at a time. The peak host memory in bytes is about::

    4 * (D * (C + 1)            # accumulator + weight map (D = pz * y * x of the padded volume)
         + V_in * c_in          # padded copy of the input, only when the volume is padded
         + B * P * (c_in + C)   # one batch of input windows and predict_fn's output
         + P * (C + 1))         # window weights and, for gaussian blending, one weighted window

with ``P`` the voxels of one patch, ``B`` the batch size, ``c_in`` the input channels and ``C`` the
number of classes; plus whatever ``predict_fn`` itself holds (e.g. the network's activations on the
accelerator) and what the caller keeps of each slab (:func:`~dltk_mm.inference.segment.
segment_volume`: a uint8 label map). :func:`sliding_window_inference` returns the whole
``(z, y, x, C)`` volume, so its accumulator is the whole padded volume (``D = V``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from absl import logging

PredictFn = Callable[[np.ndarray], np.ndarray]
ProgressFn = Callable[[int, int], None]


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices of the windows along one axis.

    Windows advance by ``stride = max(1, round(patch * (1 - overlap)))``; the last window is placed
    flush with the end (``size - patch``), so the windows cover ``[0, size)`` exactly and never
    leave it. With ``size <= patch`` there is one window at 0 (the caller pads the volume).

    Args:
        size: Length of the (padded) axis, at least ``patch``.
        patch: Window length.
        overlap: Fraction of a window shared with the next one, in ``[0, 1)``.

    Returns:
        The sorted, distinct start indices.
    """
    if patch < 1:
        raise ValueError(f"patch size must be positive, got {patch}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if size <= patch:
        return [0]
    stride = max(1, int(round(patch * (1.0 - overlap))))
    starts = list(range(0, size - patch, stride))
    starts.append(size - patch)
    return starts


def gaussian_weights(patch_size: Sequence[int], sigma_scale: float = 1.0 / 8.0) -> np.ndarray:
    """Separable Gaussian window weights, maximum 1 at the patch centre.

    The standard deviation along each axis is ``sigma_scale * patch`` (default patch / 8, as in
    common practice, e.g. nnU-Net), so a voxel near a window's border counts less than one near the
    centre of an overlapping window, where the network sees more context.

    Args:
        patch_size: Window shape ``(pz, py, px)``.
        sigma_scale: Standard deviation as a fraction of the patch length.

    Returns:
        float32 array of shape ``patch_size`` with strictly positive entries.
    """
    weights = np.ones((), dtype=np.float64)
    for length in patch_size:
        centre = (length - 1) / 2.0
        sigma = max(sigma_scale * length, 1e-6)
        axis = np.exp(-0.5 * ((np.arange(length) - centre) / sigma) ** 2)
        weights = np.multiply.outer(weights, axis)
    weights /= weights.max()
    # Keep every weight strictly positive (and float32-representable) so no voxel gets weight 0.
    return np.maximum(weights, 1e-12).astype(np.float32)


def sliding_window_inference(
    volume: np.ndarray,
    predict_fn: PredictFn,
    patch_size: Sequence[int] = (64, 64, 64),
    overlap: float = 0.5,
    batch_size: int = 4,
    weighting: str = "uniform",
    num_classes: int | None = None,
    pad_value: float = 0.0,
    pad_last_batch: bool = True,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Class probabilities of a whole volume from a patch-wise ``predict_fn``.

    The whole-volume form of :func:`blended_slabs` (same arguments): the volume is padded
    (centred, with ``pad_value``; 0 is the mean of a z-scored image) along every axis shorter than
    the patch; windows (:func:`window_starts` per axis) are cut, sent to ``predict_fn`` in
    batches, weighted (``"uniform"``: 1; ``"gaussian"``: :func:`gaussian_weights`, sigma =
    patch / 8) and summed in float32 on the host together with a weight map; the sum is divided
    by the weight map and the padding cropped off (docs/paper.md, section 6: windows over the
    whole volume, overlapping probabilities averaged).

    Args:
        volume: float32 image ``(z, y, x)`` or ``(z, y, x, c)``; a 3-D volume gets one channel.
        predict_fn: Maps a batch of windows ``(b, pz, py, px, c)`` float32 to probabilities
            ``(b, pz, py, px, C)`` (NumPy array or eager tensor), e.g. a ``tf.function`` wrapping a
            Keras stream's ``"probabilities"`` output.
        patch_size: Window shape ``(pz, py, px)``; 64^3 in the paper.
        overlap: Fraction of a window shared with its neighbour along each axis, in ``[0, 1)``;
            0.5 by default, 0.0 is the authors' test-time setting (no overlap).
        batch_size: Windows per ``predict_fn`` call.
        weighting: ``"uniform"`` (plain average, the paper) or ``"gaussian"``.
        num_classes: Expected number of output channels ``C``; inferred from the first batch when
            None.
        pad_value: Value of the padding added to axes shorter than the patch.
        pad_last_batch: Fill the last batch up to ``batch_size`` with zero windows (their output
            is discarded), so that a compiled ``predict_fn`` always sees one input shape and is not
            retraced.
        progress: Called as ``progress(windows_done, windows_total)`` after every batch.

    Returns:
        float32 probabilities ``(z, y, x, C)`` on the grid of ``volume``.

    Raises:
        ValueError: On a bad argument, or if ``predict_fn`` returns the wrong shape.
    """
    ((_, probabilities),) = blended_slabs(
        volume, predict_fn, patch_size, overlap=overlap, batch_size=batch_size,
        weighting=weighting, num_classes=num_classes, pad_value=pad_value,
        pad_last_batch=pad_last_batch, progress=progress, whole=True)
    return np.ascontiguousarray(probabilities)


def blended_slabs(
    volume: np.ndarray,
    predict_fn: PredictFn,
    patch_size: Sequence[int] = (64, 64, 64),
    overlap: float = 0.5,
    batch_size: int = 4,
    weighting: str = "uniform",
    num_classes: int | None = None,
    pad_value: float = 0.0,
    pad_last_batch: bool = True,
    progress: ProgressFn | None = None,
    whole: bool = False,
) -> Iterator[tuple[int, np.ndarray]]:
    """The blended probabilities of :func:`sliding_window_inference`, slab by slab along z.

    Windows are visited z-major; when the first window of the next z start comes, no later
    window reaches the rows before that start: they are divided by their weights and given out,
    and the accumulator (``patch_z`` rows deep) moves on. So the host holds a ``patch_z``-deep
    accumulator instead of the whole ``(z, y, x, C)`` volume, and every voxel's sum (same
    windows, same order) and quotient are those of the whole-volume accumulator, bit for bit.

    Args:
        volume, predict_fn, patch_size, overlap, batch_size, weighting, num_classes, pad_value,
            pad_last_batch, progress: as for :func:`sliding_window_inference`.
        whole: accumulate the whole volume and give it out as one slab (what
            :func:`sliding_window_inference` returns).

    Returns:
        An iterator of ``(z, probabilities)``: float32 ``(rows, y, x, C)`` slabs of the grid of
        ``volume`` starting at row ``z``, in order, covering it once. A slab is a view of the
        accumulator, valid until the next slab is asked for (copy what is kept).

    Raises:
        ValueError: On a bad argument (at once), or if ``predict_fn`` returns the wrong shape.
    """
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim == 3:
        volume = volume[..., np.newaxis]
    if volume.ndim != 4:
        raise ValueError(f"volume must be (z, y, x) or (z, y, x, c), got shape {volume.shape}")
    patch = tuple(int(p) for p in patch_size)
    if len(patch) != 3 or min(patch) < 1:
        raise ValueError(f"patch_size must be three positive integers, got {tuple(patch_size)}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    weights = _window_weights(weighting, patch)
    spatial = volume.shape[:3]
    volume, pad_before = _pad_to_patch(volume, patch, pad_value)
    crop = _Crop(pad_before, spatial)
    starts = [window_starts(s, p, overlap) for s, p in zip(volume.shape[:3], patch, strict=True)]
    corners = [(z, y, x) for z in starts[0] for y in starts[1] for x in starts[2]]
    logging.debug("sliding window: volume %s (padded %s), patch %s, overlap %s, %d windows",
                  spatial, volume.shape[:3], patch, overlap, len(corners))
    return _slabs(volume, predict_fn, patch, corners, weights, weighting == "uniform",
                  batch_size, num_classes, pad_last_batch, progress, whole, crop)


def _slabs(volume: np.ndarray, predict_fn: PredictFn, patch: tuple[int, ...],
           corners: list[tuple[int, int, int]], weights: np.ndarray, uniform: bool,
           batch_size: int, num_classes: int | None, pad_last_batch: bool,
           progress: ProgressFn | None, whole: bool, crop: _Crop
           ) -> Iterator[tuple[int, np.ndarray]]:
    """The loop of :func:`blended_slabs` (arguments checked there)."""
    total = len(corners)
    depth = volume.shape[0] if whole else patch[0]
    sums: _RollingSums | None = None
    batch = np.zeros((batch_size, *patch, volume.shape[3]), dtype=np.float32)
    for first in range(0, total, batch_size):
        chunk = corners[first : first + batch_size]
        for i, (z, y, x) in enumerate(chunk):
            batch[i] = volume[z : z + patch[0], y : y + patch[1], x : x + patch[2]]
        if pad_last_batch:
            batch[len(chunk) :] = 0.0
            inputs = batch
        else:
            inputs = batch[: len(chunk)]
        outputs = _checked_output(predict_fn(inputs), inputs.shape, patch, num_classes)
        if sums is None:
            num_classes = int(outputs.shape[4])
            sums = _RollingSums(depth, volume.shape[1:3], patch, num_classes, uniform)
        for i, corner in enumerate(chunk):
            if not whole and corner[0] > sums.base:  # every window above it has been added
                yield from crop.slab(sums.base, sums.finish(corner[0]))
                sums.advance(corner[0])
            sums.add(corner, outputs[i], weights)
        if progress is not None:
            progress(first + len(chunk), total)
    assert sums is not None  # total >= 1 always
    yield from crop.slab(sums.base, sums.finish(volume.shape[0]))


class _RollingSums:
    """Weighted sums of window outputs and of their weights over the padded grid's rows
    ``[base, base + depth)``, all columns."""

    def __init__(self, depth: int, plane: tuple[int, ...], patch: tuple[int, ...],
                 num_classes: int, uniform: bool) -> None:
        self.base = 0
        self.patch = patch
        self.sums = np.zeros((depth, *plane, num_classes), dtype=np.float32)
        self.weights = np.zeros((depth, *plane), dtype=np.float32)
        # The weighted window of a gaussian blending, computed here, never a new array.
        self.scratch = None if uniform else np.empty((*patch, num_classes), dtype=np.float32)

    def add(self, corner: tuple[int, int, int], output: np.ndarray, weights: np.ndarray) -> None:
        """Adds one window's output (in place; ``weights`` are the window weights)."""
        z, y, x = corner
        region = (slice(z - self.base, z - self.base + self.patch[0]),
                  slice(y, y + self.patch[1]), slice(x, x + self.patch[2]))
        target = self.sums[region]
        if self.scratch is not None:
            output = np.multiply(output, weights[..., np.newaxis], out=self.scratch)
        np.add(target, output, out=target)
        target_weights = self.weights[region]
        np.add(target_weights, weights, out=target_weights)

    def finish(self, stop: int) -> np.ndarray:
        """Rows ``[base, stop)`` divided by their weights (in place), as a view."""
        rows = stop - self.base
        done = self.sums[:rows]
        done /= self.weights[:rows, ..., np.newaxis]
        return done

    def advance(self, base: int) -> None:
        """Moves the rows to ``[base, base + depth)`` (rows above ``base`` are dropped)."""
        shift, depth = base - self.base, self.sums.shape[0]
        for array in (self.sums, self.weights):
            for row in range(0, depth - shift, shift):  # blocks that never overlap: no temporary
                rows = min(shift, depth - shift - row)
                array[row : row + rows] = array[row + shift : row + shift + rows]
            array[max(depth - shift, 0) :] = 0.0
        self.base = base


class _Crop:
    """The volume's grid inside the padded grid."""

    def __init__(self, pad_before: Sequence[int], spatial: Sequence[int]) -> None:
        self.before = tuple(pad_before)
        self.spatial = tuple(spatial)

    def slab(self, base: int, rows: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """``(z, slab)`` of padded rows ``[base, base + len(rows))`` on the volume's grid (none
        when they are all padding)."""
        first = max(base, self.before[0])
        stop = min(base + rows.shape[0], self.before[0] + self.spatial[0])
        if first < stop:
            yield first - self.before[0], rows[
                first - base : stop - base,
                self.before[1] : self.before[1] + self.spatial[1],
                self.before[2] : self.before[2] + self.spatial[2]]


def _window_weights(weighting: str, patch: tuple[int, ...]) -> np.ndarray:
    if weighting == "uniform":
        return np.ones(patch, dtype=np.float32)
    if weighting == "gaussian":
        return gaussian_weights(patch)
    raise ValueError(f"weighting must be 'uniform' or 'gaussian', got {weighting!r}")


def _pad_to_patch(volume: np.ndarray, patch: tuple[int, ...], pad_value: float
                  ) -> tuple[np.ndarray, list[int]]:
    """``volume`` padded (centred) along every axis shorter than the patch, and the padding
    added before each axis."""
    spatial = volume.shape[:3]
    pad_before = [max(0, p - s) // 2 for s, p in zip(spatial, patch, strict=True)]
    pad_after = [max(0, p - s) - b for s, p, b in zip(spatial, patch, pad_before, strict=True)]
    if any(pad_before) or any(pad_after):
        volume = np.pad(volume, [*zip(pad_before, pad_after, strict=True), (0, 0)],
                        mode="constant", constant_values=pad_value)
    return volume, pad_before


def _checked_output(output: object, input_shape: tuple[int, ...], patch: tuple[int, ...],
                    num_classes: int | None) -> np.ndarray:
    outputs = np.asarray(output, dtype=np.float32)
    if (
        outputs.ndim != 5
        or outputs.shape[0] != input_shape[0]
        or outputs.shape[1:4] != patch
        or (num_classes is not None and outputs.shape[4] != num_classes)
    ):
        expected_classes = "C" if num_classes is None else num_classes
        raise ValueError(
            f"predict_fn returned shape {outputs.shape} for windows {input_shape}; expected "
            f"({input_shape[0]}, {patch[0]}, {patch[1]}, {patch[2]}, {expected_classes})"
        )
    return outputs


def count_windows(
    shape: Sequence[int], patch_size: Sequence[int] = (64, 64, 64), overlap: float = 0.5
) -> int:
    """Number of windows :func:`sliding_window_inference` cuts from a volume of ``shape``.

    Args:
        shape: Spatial shape ``(z, y, x)``.
        patch_size: Window shape.
        overlap: Overlap fraction in ``[0, 1)``.

    Returns:
        The window count (the number of ``predict_fn`` calls is ``ceil(count / batch_size)``).
    """
    return math.prod(
        len(window_starts(max(int(s), int(p)), int(p), overlap))
        for s, p in zip(shape, patch_size, strict=True)
    )
