"""Whole-volume segmentation in TensorFlow ops: the ``segment_<modality>`` serving signatures.

A SavedModel user (TF Serving, Triton, ``tf.saved_model.load`` without dltk_mm) gives a volume
of raw intensities with its geometry and gets the label map on the same grid, with every step of
``dltk-mm-predict`` inside the graph (docs/paper.md, sections 5 and 6):

1. the CT clip (CT modalities), then linear resampling onto the isotropic grid of the training's
   ``spacing_mm`` that covers the volume's world bounding box, with identity (LPS) direction
   (the grid of :func:`dltk_mm.io.preprocessing.canonical_grid`; outside the source the nearest
   voxel's value, as SimpleITK's nearest-neighbour extrapolation gives it);
2. the z-score of the training (``per_volume`` or ``per_slice``);
3. the sliding window (windows of the training patch with the export's overlap, centred zero
   padding of axes shorter than the patch, ``uniform`` or ``gaussian`` blending), optionally
   with test-time mirroring (every combination of flips of the export's ``mirror_axes``, the
   right/left kidney channels of left-right flips swapped when its ``mirror_swap`` is on);
4. the argmax, optionally keeping only the largest face-connected component of each organ and /
   or removing components smaller than ``min_component_voxels``;
5. nearest-neighbour resampling of the labels back onto the input's grid.

Inputs: ``volume`` float32 ``(z, y, x)`` (the array order of SimpleITK's ``GetArrayFromImage``
and of nibabel's data transposed), ``spacing`` float64 ``(3,)`` and ``origin`` float64 ``(3,)``
in (x, y, z) order, ``direction`` float64 ``(9,)`` row-major direction cosines (ITK/LPS
convention), ``mirror`` bool, ``largest_component`` bool and ``min_component_voxels`` int32
scalars. Output: ``{"labels": uint8 (z, y, x)}``. The overlap, blending, window batch and the
mirroring's axes and kidney swap come from the export's
:class:`~dltk_mm.inference.segment.InferenceConfig` (recorded in its metadata); the ``mirror``
input turns that mirroring on or off.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from dltk_mm.core.label_map import MIRROR_SWAP_PAIRS, NUM_CLASSES
from dltk_mm.inference.segment import LEFT_RIGHT_AXIS, MIRROR_AXES, InferenceConfig
from dltk_mm.inference.sliding_window import gaussian_weights
from dltk_mm.io.preprocessing import PreprocessingConfig, is_ct

ProbabilitiesFn = Callable[[tf.Tensor], tf.Tensor]


def segment_input_signature() -> list[tf.TensorSpec]:
    """The inputs of a ``segment_<modality>`` signature (see the module docstring)."""
    return [tf.TensorSpec([None, None, None], tf.float32, name="volume"),
            tf.TensorSpec([3], tf.float64, name="spacing"),
            tf.TensorSpec([3], tf.float64, name="origin"),
            tf.TensorSpec([9], tf.float64, name="direction"),
            tf.TensorSpec([], tf.bool, name="mirror"),
            tf.TensorSpec([], tf.bool, name="largest_component"),
            tf.TensorSpec([], tf.int32, name="min_component_voxels")]


# ---------------------------------------------------------------------------------------------
# geometry


def _index_matrix(spacing: tf.Tensor, direction: tf.Tensor) -> tf.Tensor:
    """``M`` with continuous index (x, y, z) = ``M @ (world - origin)``."""
    return tf.linalg.inv(tf.reshape(direction, (3, 3)) * spacing[tf.newaxis, :])


def canonical_grid(shape_zyx: tf.Tensor, spacing: tf.Tensor, origin: tf.Tensor,
                   direction: tf.Tensor, spacing_mm: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Origin (x, y, z) and size (x, y, z) of the isotropic identity-direction grid covering the
    source's voxel edges (the grid of :func:`dltk_mm.io.preprocessing.canonical_grid`)."""
    size = tf.cast(tf.reverse(shape_zyx, [0]), tf.float64)
    corners = tf.constant(list(itertools.product((0.0, 1.0), repeat=3)), tf.float64)
    index = corners * size[tf.newaxis, :] - 0.5
    matrix = tf.reshape(direction, (3, 3)) * spacing[tf.newaxis, :]
    world = origin[tf.newaxis, :] + tf.linalg.matmul(index, matrix, transpose_b=True)
    low, high = tf.reduce_min(world, axis=0), tf.reduce_max(world, axis=0)
    grid_size = tf.maximum(tf.math.ceil((high - low) / spacing_mm - 1e-3), 1.0)
    grid_origin = (low + high) / 2.0 - (grid_size - 1.0) / 2.0 * spacing_mm
    return grid_origin, tf.cast(grid_size, tf.int32)


def _slice_points(z: tf.Tensor, size_xy: tf.Tensor, origin: tf.Tensor,
                  spacing: tf.Tensor) -> tf.Tensor:
    """World points ``(y, x, 3)`` of slice ``z`` of an identity-direction grid."""
    j, i = tf.meshgrid(tf.range(size_xy[1], dtype=tf.float64),
                       tf.range(size_xy[0], dtype=tf.float64), indexing="ij")
    k = tf.fill(tf.shape(i), tf.cast(z, tf.float64))
    return origin + tf.stack([i, j, k], axis=-1) * spacing


def _source_points(z: tf.Tensor, shape_zyx: tf.Tensor, origin: tf.Tensor, spacing: tf.Tensor,
                   direction: tf.Tensor) -> tf.Tensor:
    """World points ``(y, x, 3)`` of slice ``z`` of the source grid."""
    j, i = tf.meshgrid(tf.range(shape_zyx[1], dtype=tf.float64),
                       tf.range(shape_zyx[2], dtype=tf.float64), indexing="ij")
    k = tf.fill(tf.shape(i), tf.cast(z, tf.float64))
    index = tf.stack([i, j, k], axis=-1) * spacing
    return origin + tf.linalg.matvec(tf.reshape(direction, (3, 3)), index)


def _flat_index(index_xyz: tf.Tensor, shape_zyx: tf.Tensor) -> tf.Tensor:
    shape = tf.cast(shape_zyx, tf.int64)
    return (index_xyz[..., 2] * shape[1] + index_xyz[..., 1]) * shape[2] + index_xyz[..., 0]


def _linear_at(volume: tf.Tensor, continuous: tf.Tensor) -> tf.Tensor:
    """Values of ``volume`` (z, y, x) at continuous indices (..., 3) in (x, y, z) as SimpleITK's
    linear resampling with nearest-neighbour extrapolation gives them: trilinear inside the
    buffer (indices in ``[-0.5, n - 0.5)``, neighbours clamped to the volume), the nearest voxel
    (rounded half up, clamped) outside it."""
    shape = tf.shape(volume, out_type=tf.int64)
    size = tf.cast(tf.reverse(shape, [0]), tf.float64)
    upper = size - 1.0
    flat = tf.reshape(tf.cast(volume, tf.float64), [-1])
    clamped = tf.clip_by_value(continuous, 0.0, upper)
    low = tf.minimum(tf.floor(clamped), upper)
    weight = clamped - low
    low = tf.cast(low, tf.int64)
    high = tf.minimum(low + 1, tf.cast(upper, tf.int64))
    total = tf.zeros(tf.shape(continuous)[:-1], tf.float64)
    for corner in itertools.product((0, 1), repeat=3):
        index = tf.stack([high[..., a] if c else low[..., a] for a, c in enumerate(corner)], -1)
        factor = tf.ones_like(total)
        for axis, c in enumerate(corner):
            factor *= weight[..., axis] if c else 1.0 - weight[..., axis]
        total += factor * tf.gather(flat, _flat_index(index, shape))
    inside = tf.reduce_all(tf.logical_and(continuous >= -0.5, continuous < size - 0.5), -1)
    nearest = tf.clip_by_value(tf.floor(continuous + 0.5), 0.0, upper)
    outside = tf.gather(flat, _flat_index(tf.cast(nearest, tf.int64), shape))
    return tf.where(inside, total, outside)


def resample_linear(volume: tf.Tensor, spacing: tf.Tensor, origin: tf.Tensor,
                    direction: tf.Tensor, grid_origin: tf.Tensor, grid_size: tf.Tensor,
                    spacing_mm: float) -> tf.Tensor:
    """``volume`` resampled linearly onto the identity-direction grid, float32 ``(z, y, x)``."""
    matrix = _index_matrix(spacing, direction)
    grid_spacing = tf.constant([spacing_mm] * 3, tf.float64)

    def one_slice(z: tf.Tensor) -> tf.Tensor:
        points = _slice_points(z, grid_size, grid_origin, grid_spacing)
        continuous = tf.linalg.matvec(matrix, points - origin)
        return tf.cast(_linear_at(volume, continuous), tf.float32)

    return tf.map_fn(one_slice, tf.range(grid_size[2]), fn_output_signature=tf.float32)


def restore_nearest(labels: tf.Tensor, grid_origin: tf.Tensor, spacing_mm: float,
                    shape_zyx: tf.Tensor, spacing: tf.Tensor, origin: tf.Tensor,
                    direction: tf.Tensor) -> tf.Tensor:
    """Labels on the grid mapped back onto the source grid (nearest neighbour, clamped)."""
    grid_shape = tf.shape(labels, out_type=tf.int64)
    upper = tf.reverse(grid_shape, [0]) - 1
    flat = tf.reshape(labels, [-1])

    def one_slice(z: tf.Tensor) -> tf.Tensor:
        points = _source_points(z, shape_zyx, origin, spacing, direction)
        continuous = (points - grid_origin) / spacing_mm
        index = tf.clip_by_value(tf.cast(tf.floor(continuous + 0.5), tf.int64), 0, upper)
        return tf.gather(flat, _flat_index(index, grid_shape))

    return tf.map_fn(one_slice, tf.range(shape_zyx[0]), fn_output_signature=labels.dtype)


# ---------------------------------------------------------------------------------------------
# intensities and windows


def normalise(image: tf.Tensor, mode: str, epsilon: float) -> tf.Tensor:
    """The z-score of :func:`dltk_mm.io.preprocessing.normalise_intensities`, float32."""
    data = tf.cast(image, tf.float64)
    axes = None if mode == "per_volume" else [1, 2]
    mean = tf.reduce_mean(data, axis=axes, keepdims=True)
    std = tf.sqrt(tf.reduce_mean(tf.square(data - mean), axis=axes, keepdims=True))
    return tf.cast((data - mean) / tf.maximum(std, epsilon), tf.float32)


def window_starts(size: tf.Tensor, patch: int, stride: int) -> tf.Tensor:
    """The starts of :func:`dltk_mm.inference.sliding_window.window_starts` (``size >= patch``)."""
    last = size - patch
    starts = tf.range(0, last, stride)
    return tf.concat([starts, tf.reshape(last, [1])], axis=0)


def _corners(shape: tf.Tensor, patch: Sequence[int], stride: Sequence[int]) -> tf.Tensor:
    starts = [window_starts(shape[a], patch[a], stride[a]) for a in range(3)]
    grids = tf.meshgrid(*starts, indexing="ij")
    return tf.reshape(tf.stack(grids, axis=-1), [-1, 3])


def mirrored(probabilities_fn: ProbabilitiesFn, num_classes: int,
             axes: Sequence[int] = MIRROR_AXES, swap: bool = True) -> ProbabilitiesFn:
    """Test-time mirroring (:func:`dltk_mm.inference.segment.mirrored`) in TensorFlow ops.

    Args:
        probabilities_fn: windows -> probabilities.
        num_classes: classes of the label map (the kidneys are swapped only in the project's).
        axes: the flipped axes (``InferenceConfig.mirror_axes``), every combination of them.
        swap: swap the right/left kidney channels of flips of the left-right axis
            (``InferenceConfig.mirror_swap``).
    """
    pairs = MIRROR_SWAP_PAIRS if swap and num_classes == NUM_CLASSES else ()
    order = list(range(num_classes))
    for first, second in pairs:
        order[first], order[second] = second, first
    flips = [combo for count in range(len(axes) + 1)
             for combo in itertools.combinations(axes, count)]

    def mirrored_probabilities(windows: tf.Tensor) -> tf.Tensor:
        total = None
        for flip in flips:
            axes = [axis + 1 for axis in flip]
            output = probabilities_fn(tf.reverse(windows, axes) if axes else windows)
            output = tf.reverse(output, axes) if axes else output
            if LEFT_RIGHT_AXIS in flip and pairs:
                output = tf.gather(output, order, axis=-1)
            total = output if total is None else total + output
        return total / float(len(flips))

    return mirrored_probabilities


def sliding_window(image: tf.Tensor, probabilities_fn: ProbabilitiesFn, patch: Sequence[int],
                   config: InferenceConfig, num_classes: int) -> tf.Tensor:
    """Blended probabilities ``(z, y, x, C)`` (:func:`~dltk_mm.inference.sliding_window.
    sliding_window_inference`: the same windows, padding, weights and order of sums)."""
    shape = tf.shape(image)
    pad_before = tf.maximum(0, tf.constant(patch) - shape) // 2
    pad_after = tf.maximum(0, tf.constant(patch) - shape) - pad_before
    padded = tf.pad(image, tf.stack([pad_before, pad_after], axis=1))
    padded_shape = tf.shape(padded)
    stride = [max(1, int(round(p * (1.0 - config.overlap)))) for p in patch]
    corners = _corners(padded_shape, patch, stride)
    weights = (np.ones(patch, np.float32) if config.weighting == "uniform"
               else gaussian_weights(patch))
    offsets = tf.constant(np.stack(np.meshgrid(*[np.arange(p) for p in patch], indexing="ij"),
                                   -1).reshape(-1, 3), tf.int32)
    flat_weights = tf.constant(weights.reshape(-1))
    batch = int(config.batch_size)

    def add_batch(first: tf.Tensor, totals: tuple[tf.Tensor, tf.Tensor]) -> Any:
        chunk = corners[first:first + batch]
        windows = tf.map_fn(lambda c: tf.slice(padded, c, patch), chunk,
                            fn_output_signature=tf.float32)
        outputs = probabilities_fn(windows[..., tf.newaxis])
        accumulator, weight_map = totals
        for i in range(batch):  # unrolled: windows added in order, as on the host
            def add(acc=accumulator, wmap=weight_map, i=i) -> Any:
                index = offsets + chunk[i]
                values = tf.reshape(outputs[i], [-1, num_classes]) * flat_weights[:, tf.newaxis]
                return (tf.tensor_scatter_nd_add(acc, index, values),
                        tf.tensor_scatter_nd_add(wmap, index, flat_weights))

            accumulator, weight_map = tf.cond(i < tf.shape(chunk)[0], add,
                                              lambda a=accumulator, w=weight_map: (a, w))
        return first + batch, (accumulator, weight_map)

    totals = (tf.zeros(tf.concat([padded_shape, [num_classes]], 0), tf.float32),
              tf.zeros(padded_shape, tf.float32))
    _, (accumulator, weight_map) = tf.while_loop(
        lambda first, _: first < tf.shape(corners)[0], add_batch, (tf.constant(0), totals))
    probabilities = accumulator / weight_map[..., tf.newaxis]
    return tf.slice(probabilities, tf.concat([pad_before, [0]], 0),
                    tf.concat([shape, [num_classes]], 0))


# ---------------------------------------------------------------------------------------------
# connected components


def _component_ids(mask: tf.Tensor) -> tf.Tensor:
    """Face-connected components of ``mask``: each voxel gets the linear index + 1 of its
    component's first voxel in raster order (x fastest, as ITK numbers components), found by
    propagating the minimum to the 6 neighbours (with pointer jumping) until nothing changes;
    outside: ``size + 1``."""
    size = tf.size(mask, out_type=tf.int64)
    outside = tf.fill(tf.shape(mask, out_type=tf.int64), size + 1)
    ids = tf.where(mask, tf.reshape(tf.range(1, size + 1), tf.shape(mask, out_type=tf.int64)),
                   outside)

    def body(current: tf.Tensor, _: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        padded = tf.pad(current, [[1, 1]] * 3, constant_values=size + 1)
        best = current
        for axis in range(3):
            for shift in (0, 2):
                begin = [1, 1, 1]
                begin[axis] = shift
                best = tf.minimum(best, tf.slice(padded, begin, tf.shape(current)))
        # Pointer jumping: take the label of the voxel a label names (same component, smaller
        # or equal label), so that long components converge in far fewer sweeps.
        jumped = tf.gather(tf.reshape(best, [-1]), tf.reshape(tf.minimum(best, size) - 1,
                                                              [-1]))
        new = tf.where(mask, tf.minimum(best, tf.reshape(jumped, tf.shape(best))), outside)
        return new, tf.reduce_any(tf.not_equal(new, current))

    ids, _ = tf.while_loop(lambda _, changed: changed, body, (ids, tf.constant(True)))
    return ids


def keep_components(labels: tf.Tensor, num_classes: int, largest: tf.Tensor,
                    min_voxels: tf.Tensor) -> tf.Tensor:
    """:func:`dltk_mm.inference.segment.keep_components` in TensorFlow ops: of equally large
    largest components, the one whose first voxel comes first in raster order is kept (ITK's
    order)."""
    for organ in range(1, num_classes):
        mask = tf.equal(labels, organ)
        ids = tf.reshape(_component_ids(mask), [-1])
        unique, index, counts = tf.unique_with_counts(ids)
        counts = tf.where(unique > tf.size(ids, out_type=tf.int64), tf.zeros_like(counts),
                          counts)
        biggest = tf.reduce_max(counts)
        first_biggest = tf.reduce_min(tf.where(tf.equal(counts, biggest), unique,
                                               tf.reduce_max(unique)))
        voxel_counts = tf.gather(counts, index)
        keep = tf.logical_or(tf.logical_not(largest), tf.equal(ids, first_biggest))
        keep = tf.logical_and(keep, voxel_counts >= tf.cast(min_voxels, counts.dtype))
        drop = tf.reshape(tf.logical_not(keep), tf.shape(labels))
        labels = tf.where(tf.logical_and(mask, drop), tf.zeros_like(labels), labels)
    return labels


# ---------------------------------------------------------------------------------------------
# the signature


def segment_endpoint(probabilities_fn: ProbabilitiesFn, modality: str,
                     preprocessing: PreprocessingConfig, patch: Sequence[int],
                     config: InferenceConfig, num_classes: int) -> Callable[..., dict[str, Any]]:
    """The function of a ``segment_<modality>`` signature (inputs: the module docstring)."""
    spacing_mm = float(preprocessing.spacing_mm)
    clip = preprocessing.ct_clip_min if is_ct(modality) else None
    plain = probabilities_fn
    with_mirror = mirrored(probabilities_fn, num_classes, axes=config.mirror_axes,
                           swap=config.mirror_swap)

    def segment(volume: tf.Tensor, spacing: tf.Tensor, origin: tf.Tensor, direction: tf.Tensor,
                mirror: tf.Tensor, largest_component: tf.Tensor,
                min_component_voxels: tf.Tensor) -> dict[str, tf.Tensor]:
        shape = tf.shape(volume)
        source = volume if clip is None else tf.maximum(volume, float(clip))
        grid_origin, grid_size = canonical_grid(shape, spacing, origin, direction, spacing_mm)
        image = resample_linear(source, spacing, origin, direction, grid_origin, grid_size,
                                spacing_mm)
        image = normalise(image, preprocessing.normalisation, preprocessing.std_epsilon)
        probabilities = tf.cond(
            mirror, lambda: sliding_window(image, with_mirror, patch, config, num_classes),
            lambda: sliding_window(image, plain, patch, config, num_classes))
        labels = tf.cast(tf.argmax(probabilities, axis=-1), tf.uint8)
        labels = tf.cond(
            tf.logical_or(largest_component, min_component_voxels > 0),
            lambda: keep_components(labels, num_classes, largest_component,
                                    min_component_voxels),
            lambda: labels)
        return {"labels": restore_nearest(labels, grid_origin, spacing_mm, shape, spacing,
                                          origin, direction)}

    return segment
