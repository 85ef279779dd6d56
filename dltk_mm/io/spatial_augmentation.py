"""Random scaling and rotation of training patches, in TensorFlow ops (runs inside tf.data).

docs/paper.md, section 9 (an addition beyond the paper, which uses no spatial augmentation).

A patch is resampled from its whole volume through an affine map about the PATCH CENTRE: output
voxel ``o`` reads the volume at ``c + M (o - h)``, where ``h = (patch - 1) / 2`` is the patch's
centre index and ``c = start + h`` the centre of the patch cut without augmentation. The centre of
the patch (where class-balanced sampling put a jittered organ voxel) therefore stays the centre:
rotating or scaling never moves the organ out of the patch, and the region read is not limited to
the unaugmented patch (a zoom-out or a rotated corner reads the volume around it). Reads beyond the
volume repeat its border voxels.

The image is interpolated trilinearly, the label by nearest neighbour (so labels stay in the label
set) at exactly the same source coordinates, so image and label stay aligned. The identity map
reproduces the plain cut exactly. Spatial axes are ``(z, y, x)``; the preprocessed volumes have
isotropic voxels (docs/paper.md, section 5.1), so rotations in voxel space are rigid in mm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from dltk_mm.io.seeds import SeedLike, as_seed


def rotation_matrix(angles: tf.Tensor) -> tf.Tensor:
    """The rotation by ``angles = (about z, about y, about x)`` radians, in ``(z, y, x)`` order.

    The rotation about z turns the axial ``(y, x)`` plane; those about y and x tilt it.

    Args:
        angles: float ``(3,)``.

    Returns:
        float32 ``(3, 3)``, ``R_z @ R_y @ R_x``.
    """
    angles = tf.cast(tf.convert_to_tensor(angles), tf.float32)
    cos, sin = tf.cos(angles), tf.sin(angles)
    one, zero = tf.ones([], tf.float32), tf.zeros([], tf.float32)

    def matrix(rows):
        return tf.stack([tf.stack(row) for row in rows])

    about_z = matrix([[one, zero, zero], [zero, cos[0], -sin[0]], [zero, sin[0], cos[0]]])
    about_y = matrix([[cos[1], zero, -sin[1]], [zero, one, zero], [sin[1], zero, cos[1]]])
    about_x = matrix([[cos[2], -sin[2], zero], [sin[2], cos[2], zero], [zero, zero, one]])
    return about_z @ about_y @ about_x


def affine_matrix(angles: tf.Tensor, zoom: float | tf.Tensor) -> tf.Tensor:
    """The map from output offsets to source offsets: a rotation and an isotropic ``zoom``.

    ``zoom > 1`` magnifies (reads a smaller region), ``zoom < 1`` shows more context.
    """
    return rotation_matrix(angles) / tf.cast(zoom, tf.float32)


def random_affine_matrix(
    seed: SeedLike,
    scale_probability: float = 0.0,
    scale_range: Sequence[float] = (1.0, 1.0),
    rotation_probability: float = 0.0,
    rotation_degrees: float = 0.0,
    tilt_degrees: float = 0.0,
) -> tf.Tensor:
    """A random scaling-and-rotation matrix for :func:`resample_patch`.

    Args:
        seed: Stateless seed, shape ``[2]``.
        scale_probability: Chance of a zoom, drawn uniformly in ``scale_range``.
        scale_range: ``(low, high)`` zoom factors (> 0; above 1 magnifies).
        rotation_probability: Chance of a rotation: uniform in ``+-rotation_degrees`` about z and
            in ``+-tilt_degrees`` about y and about x.
        rotation_degrees: Largest rotation about the z axis (in the axial plane).
        tilt_degrees: Largest tilt about each of the y and x axes.

    Returns:
        float32 ``(3, 3)``; the identity when neither transform is drawn.
    """
    draws = tf.random.stateless_uniform([6], as_seed(seed))
    low, high = float(scale_range[0]), float(scale_range[1])
    zoom = tf.where(draws[0] < scale_probability, low + (high - low) * draws[1], 1.0)
    limits = tf.constant([rotation_degrees, tilt_degrees, tilt_degrees], tf.float32)
    angles = (2.0 * draws[3:] - 1.0) * limits * (math.pi / 180.0)
    angles = tf.where(draws[2] < rotation_probability, angles, tf.zeros([3]))
    return affine_matrix(angles, zoom)


def _offsets(patch_size: Sequence[int]) -> np.ndarray:
    """``(3, N)`` float32 offsets of every patch voxel (C order) from the patch centre, per axis."""
    grid = np.stack(np.meshgrid(*(np.arange(p) for p in patch_size), indexing="ij"))
    centre = (np.asarray(patch_size, np.float64) - 1) / 2.0
    return (grid.reshape(3, -1) - centre[:, None]).astype(np.float32)


def _source_coordinates(centre: tf.Tensor, matrix: tf.Tensor, offsets: tf.Tensor,
                        shape: tf.Tensor) -> list[tf.Tensor]:
    """Per axis, the ``(N,)`` source coordinate ``centre + matrix @ offset``, clamped into the
    volume (written out axis by axis: exact for the identity and fast on ``(N,)`` vectors)."""
    last = tf.cast(shape - 1, tf.float32)
    coordinates = []
    for axis in range(3):
        value = (centre[axis] + matrix[axis, 0] * offsets[0] + matrix[axis, 1] * offsets[1]
                 + matrix[axis, 2] * offsets[2])
        coordinates.append(tf.clip_by_value(value, 0.0, last[axis]))
    return coordinates


def resample_patch(
    image: tf.Tensor,
    label: tf.Tensor,
    start: tf.Tensor,
    patch_size: Sequence[int],
    matrix: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The patch at ``start`` transformed by ``matrix`` about its centre (module docstring).

    Args:
        image: float volume ``(z, y, x)``.
        label: Integer label volume ``(z, y, x)``, same shape.
        start: int ``(3,)`` start corner of the unaugmented patch.
        patch_size: ``(pz, py, px)``.
        matrix: float32 ``(3, 3)`` from output to source offsets, e.g. :func:`affine_matrix`.

    Returns:
        ``(image patch, label patch)`` of shape ``patch_size``: trilinear image, nearest label.
    """
    patch = tuple(int(p) for p in patch_size)
    shape = tf.shape(label, out_type=tf.int32)
    strides = [shape[1] * shape[2], shape[2], 1]
    centre = tf.cast(start, tf.float32) + tf.constant((np.asarray(patch) - 1) / 2.0, tf.float32)
    source = _source_coordinates(centre, tf.cast(matrix, tf.float32),
                                 tf.constant(_offsets(patch)), shape)
    nearest = sum(tf.cast(tf.round(c), tf.int32) * s for c, s in zip(source, strides, strict=True))
    labels = tf.gather(tf.reshape(label, [-1]), nearest)
    base, steps, fractions = 0, [], []
    for axis, coordinate in enumerate(source):
        lower = tf.floor(coordinate)
        low = tf.cast(lower, tf.int32)
        base += low * strides[axis]
        steps.append(tf.where(low < shape[axis] - 1, strides[axis], 0))  # 0 on the last voxel
        fractions.append(tf.cast(coordinate - lower, image.dtype))
    sz, sy, sx = steps
    flat = tf.reshape(image, [-1])
    fz, fy, fx = fractions

    def along_x(row: tf.Tensor) -> tf.Tensor:
        first = tf.gather(flat, row)
        return first + fx * (tf.gather(flat, row + sx) - first)

    def along_y(plane: tf.Tensor) -> tf.Tensor:
        first = along_x(plane)
        return first + fy * (along_x(plane + sy) - first)

    first = along_y(base)
    values = first + fz * (along_y(base + sz) - first)
    return tf.reshape(values, patch), tf.reshape(labels, patch)
