"""Patch sampling from whole volumes, in TensorFlow ops (runs inside a tf.data graph).

docs/paper.md, section 4.1.

Valindria et al. (WACV 2018) train on patches of 64^3 voxels. Their code sampled them
class-balanced: per volume read, for each class present (background included) it picked up to 6
random voxels of that class (without replacement), jittered each centre by an integer in [-16, 15]
per axis, clamped the patch into the volume and cut the image and label patches. Volumes smaller
than a patch along an axis crashed the original code; here they are padded first
(:func:`pad_to_patch_size`).

All randomness is stateless: every sampler takes a ``seed`` of shape ``[2]`` (a
``tf.random.stateless_*`` seed), so the same seed always gives the same patches.

Finding the voxels of each class is done through per-row cumulative class counts
(:func:`class_row_cumsum`): for a volume of shape ``(z, y, x)`` it holds, per class, the number of
voxels of that class in the rows ``(z, y)`` up to and including each row (``(C, z * y)`` int32).
A uniformly drawn rank ``r`` of a class voxel is then located by a binary search over the rows and a
scan of one row of ``x`` voxels. This gives exactly uniform sampling among the voxels of a class at
a cost independent of the volume size, with an index ``x`` times smaller than a list of voxel
indices; :mod:`dltk_mm.io.pipeline` computes it once per volume when the dataset is built.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from dltk_mm.errors import ConfigurationError
from dltk_mm.io.seeds import SeedLike, as_seed, fold_in_seed


def _check_patch_size(patch_size: Sequence[int]) -> tuple[int, int, int]:
    patch = tuple(int(p) for p in patch_size)
    if len(patch) != 3 or any(p <= 0 for p in patch):
        raise ConfigurationError(
            f"patch_size must be three positive integers (z, y, x), got {tuple(patch_size)}"
        )
    return patch  # type: ignore[return-value]


def _check_jitter(jitter: Sequence[int]) -> tuple[int, int]:
    low, high = (int(j) for j in jitter)
    if low > high:
        raise ConfigurationError(f"jitter must be (low, high) with low <= high, got {jitter}")
    return low, high


def padding_for_patch(shape: tf.Tensor, patch_size: Sequence[int]) -> tf.Tensor:
    """Padding that makes a volume at least as large as a patch along every axis.

    Args:
        shape: Volume shape ``(z, y, x)``, int32.
        patch_size: Patch shape ``(pz, py, px)``.

    Returns:
        int32 ``(3, 2)``: voxels to add before and after each axis; the padding is split evenly
        (the extra voxel of an odd amount goes after), zero where the volume is large enough.
    """
    patch = tf.constant(_check_patch_size(patch_size), tf.int32)
    missing = tf.maximum(patch - tf.cast(shape, tf.int32), 0)
    before = missing // 2
    return tf.stack([before, missing - before], axis=1)


def pad_to_patch_size(
    image: tf.Tensor,
    label: tf.Tensor,
    patch_size: Sequence[int],
    image_pad_value: float | None = None,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Pads a volume that is smaller than a patch along some axis (the original code crashed).

    Args:
        image: float image ``(z, y, x)``.
        label: Integer label map ``(z, y, x)``.
        patch_size: Patch shape ``(pz, py, px)``.
        image_pad_value: Constant for the padded image voxels; ``None`` (default) uses the image's
            minimum, i.e. the darkest (air-like) value of that volume.

    Returns:
        ``(image, label, pad_before)``: the padded volumes (label padded with 0, background) and
        the int32 ``(3,)`` number of voxels added before each axis (add it to a voxel coordinate of
        the input to get the coordinate in the padded volume).
    """
    image = tf.convert_to_tensor(image)
    label = tf.convert_to_tensor(label)
    paddings = padding_for_patch(tf.shape(image), patch_size)
    if image_pad_value is None:
        fill = tf.reduce_min(image)
    else:
        fill = tf.cast(image_pad_value, image.dtype)
    image = tf.pad(image, paddings, constant_values=fill)
    label = tf.pad(label, paddings, constant_values=tf.cast(0, label.dtype))
    return image, label, paddings[:, 0]


def class_row_cumsum(label: tf.Tensor, num_classes: int) -> tf.Tensor:
    """Per-class cumulative voxel counts over the rows ``(z, y)`` of a label map.

    Args:
        label: Integer label map ``(z, y, x)`` with values in ``[0, num_classes)`` (larger values
            are not counted).
        num_classes: Number of classes ``C``.

    Returns:
        int32 ``(C, z * y)``; entry ``[c, r]`` is the number of voxels of class ``c`` in rows
        ``0..r`` (row ``r`` = ``z * size_y + y``). The last column is the class's voxel count.
    """
    label = tf.convert_to_tensor(label)
    rows = tf.reshape(tf.cast(label, tf.int32), [-1, tf.shape(label)[-1]])
    counts = tf.math.bincount(rows, minlength=num_classes, maxlength=num_classes, axis=-1)
    return tf.cumsum(tf.transpose(counts), axis=1)


def _distinct_ranks(counts: tf.Tensor, k: int, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Up to ``k`` distinct uniform ranks in ``[0, counts[c])`` per class (Floyd's algorithm).

    Returns ``(ranks (C, k) int32, valid (C, k) bool)``: ``min(k, counts[c])`` valid ranks per
    class, without replacement; invalid entries hold 0.
    """
    counts = tf.cast(counts, tf.int64)
    num = tf.minimum(counts, k)
    uniform = tf.random.stateless_uniform(
        tf.stack([tf.shape(counts)[0], k]), seed, dtype=tf.float64
    )
    chosen: list[tf.Tensor] = []
    valid: list[tf.Tensor] = []
    for i in range(k):
        upper = counts - num + i  # draw in [0, upper]
        draw = tf.minimum(tf.cast(tf.floor(uniform[:, i] * tf.cast(upper + 1, tf.float64)),
                                  tf.int64), upper)
        if chosen:
            taken = tf.reduce_any(tf.equal(tf.stack(chosen, axis=1), draw[:, None]), axis=1)
            draw = tf.where(taken, upper, draw)
        is_valid = i < num
        chosen.append(tf.where(is_valid, draw, -1))
        valid.append(is_valid)
    ranks = tf.maximum(tf.stack(chosen, axis=1), 0)
    return tf.cast(ranks, tf.int32), tf.stack(valid, axis=1)


def balanced_centres(
    label: tf.Tensor,
    row_cumsum: tf.Tensor,
    max_centres_per_class: int,
    seed: SeedLike,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Draws up to ``max_centres_per_class`` random voxels of every class present.

    This is the class-balanced sampling of Valindria et al.'s code: classes absent from the volume
    get no centre, classes with fewer voxels than ``max_centres_per_class`` get all of them.

    Args:
        label: Integer label map ``(z, y, x)``.
        row_cumsum: ``class_row_cumsum(label, num_classes)``, shape ``(C, z * y)``.
        max_centres_per_class: At most this many distinct voxels per class (paper code: 6).
        seed: Stateless seed, shape ``[2]``.

    Returns:
        ``(centres, classes)``: int32 ``(n, 3)`` voxel coordinates ``(z, y, x)`` and int32 ``(n,)``
        their classes, grouped by class in increasing order; ``n = sum_c min(k, count_c)``.
    """
    label = tf.convert_to_tensor(label)
    row_cumsum = tf.convert_to_tensor(row_cumsum, tf.int32)
    k = int(max_centres_per_class)
    if k <= 0:
        raise ConfigurationError(f"max_centres_per_class must be positive, got {k}")
    shape = tf.shape(label)
    size_y, size_x = shape[1], shape[2]
    num_classes = tf.shape(row_cumsum)[0]
    ranks, valid = _distinct_ranks(row_cumsum[:, -1], k, as_seed(seed))
    row = tf.searchsorted(row_cumsum, ranks, side="right")  # first row with cumsum > rank
    row = tf.minimum(row, tf.shape(row_cumsum)[1] - 1)  # only for invalid entries
    before = tf.where(
        row > 0, tf.gather(row_cumsum, tf.maximum(row - 1, 0), batch_dims=1), 0
    )
    within = ranks - before  # rank of the voxel inside its row
    rows = tf.gather(tf.reshape(label, [-1, size_x]), row)  # (C, k, x)
    class_ids = tf.range(num_classes, dtype=tf.int32)
    is_class = tf.cast(tf.equal(tf.cast(rows, tf.int32), class_ids[:, None, None]), tf.int32)
    x = tf.reduce_sum(tf.cast(tf.cumsum(is_class, axis=-1) <= within[..., None], tf.int32), -1)
    centres = tf.stack([row // size_y, row % size_y, x], axis=-1)
    classes = tf.broadcast_to(class_ids[:, None], tf.shape(ranks))
    return tf.boolean_mask(centres, valid), tf.boolean_mask(classes, valid)


def jittered_starts(
    centres: tf.Tensor,
    volume_shape: tf.Tensor,
    patch_size: Sequence[int],
    jitter: Sequence[int] = (-16, 15),
    seed: SeedLike = (0, 0),
) -> tf.Tensor:
    """Patch start corners around jittered centres, clamped so every patch lies in the volume.

    Args:
        centres: int32 ``(n, 3)`` centre voxels ``(z, y, x)``.
        volume_shape: ``(z, y, x)`` of the (padded) volume; each axis must be >= the patch's.
        patch_size: ``(pz, py, px)``; a centre sits at index ``p // 2`` of its patch.
        jitter: Inclusive integer range ``(low, high)`` added to each centre coordinate (paper code:
            ``(-16, 15)``); ``(0, 0)`` disables it.
        seed: Stateless seed, shape ``[2]``.

    Returns:
        int32 ``(n, 3)`` start corners in ``[0, volume_shape - patch_size]``.
    """
    patch = tf.constant(_check_patch_size(patch_size), tf.int32)
    low, high = _check_jitter(jitter)
    centres = tf.cast(centres, tf.int32)
    offsets = tf.random.stateless_uniform(
        tf.shape(centres), as_seed(seed), minval=low, maxval=high + 1, dtype=tf.int32
    )
    starts = centres + offsets - patch // 2
    return tf.clip_by_value(starts, 0, tf.maximum(tf.cast(volume_shape, tf.int32) - patch, 0))


def uniform_starts(
    volume_shape: tf.Tensor,
    patch_size: Sequence[int],
    num_patches: int | tf.Tensor,
    seed: SeedLike,
) -> tf.Tensor:
    """Uniformly random patch start corners inside a volume (each axis independently).

    Args:
        volume_shape: ``(z, y, x)`` of the (padded) volume.
        patch_size: ``(pz, py, px)``.
        num_patches: Number of corners.
        seed: Stateless seed, shape ``[2]``.

    Returns:
        int32 ``(num_patches, 3)`` start corners in ``[0, volume_shape - patch_size]``.
    """
    patch = tf.constant(_check_patch_size(patch_size), tf.int32)
    room = tf.maximum(tf.cast(volume_shape, tf.int32) - patch + 1, 1)
    uniform = tf.random.stateless_uniform(
        tf.stack([tf.cast(num_patches, tf.int32), 3]), as_seed(seed), dtype=tf.float64
    )
    starts = tf.cast(tf.floor(uniform * tf.cast(room, tf.float64)), tf.int32)
    return tf.minimum(starts, room - 1)


def balanced_starts(
    label: tf.Tensor,
    row_cumsum: tf.Tensor,
    patch_size: Sequence[int],
    max_centres_per_class: int = 6,
    jitter: Sequence[int] = (-16, 15),
    seed: SeedLike = (0, 0),
) -> tf.Tensor:
    """Start corners of the class-balanced patches of one volume read (docs/paper.md, section 4.1).

    For each class present (background included) up to ``max_centres_per_class`` distinct random
    voxels of that class are chosen (:func:`balanced_centres`); each is jittered by an integer in
    ``jitter`` per axis and the patch is clamped into the volume (:func:`jittered_starts`). The
    volume must be at least a patch large along every axis (:func:`pad_to_patch_size`).

    Args:
        label: Integer label map ``(z, y, x)``, values in ``[0, num_classes)``.
        row_cumsum: :func:`class_row_cumsum` of ``label``.
        patch_size: ``(pz, py, px)``, e.g. ``(64, 64, 64)``.
        max_centres_per_class: The authors' code: 6.
        jitter: Inclusive range of the integer centre jitter per axis; the authors' code
            ``(-16, 15)``.
        seed: Stateless seed of the read, shape ``[2]``.

    Returns:
        int32 ``(n, 3)`` start corners, ``n = sum_c min(max_centres_per_class, count_c)``, grouped
        by class in increasing order.
    """
    seed = as_seed(seed)
    centres, _ = balanced_centres(label, row_cumsum, max_centres_per_class, fold_in_seed(seed, 0))
    return jittered_starts(centres, tf.shape(label), patch_size, jitter, fold_in_seed(seed, 1))
