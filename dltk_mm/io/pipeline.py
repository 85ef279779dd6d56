"""tf.data training pipelines: in-memory volumes -> augmented patch batches, one modality per batch.

Valindria et al. (WACV 2018) train on batches of 16 class-balanced 64^3 patches with Gaussian noise
and a random intensity offset, and the multi-modal schemes alternate batches strictly: one step
all-MR, the next all-CT (their code started with MR). This module builds that input:

* :func:`modality_dataset` - infinite batches of one modality;
* :func:`interleaved_dataset` - several modality datasets alternated in a fixed, deterministic
  order (``choose_from_datasets`` over a cycled choice dataset).

Dataset elements follow the project contract: ``(image (B, z, y, x, 1) float32, label (B, z, y, x)
int32, modality_index (B,) int32)`` where the modality index is the position of the modality in the
model's ``modalities`` tuple.

How it works (per modality):

1. At build time the volumes are padded to at least one patch (:func:`~dltk_mm.io.sampling.
   pad_to_patch_size`), flattened into one aligned buffer per dtype (so cutting a volume out of it
   is a zero-copy slice) and, for balanced sampling, indexed once with
   :func:`~dltk_mm.io.sampling.class_row_cumsum` (``C * z * y`` int32 per volume).
2. A stream of volume reads: the volume order is a seeded shuffle, reshuffled every epoch. Each read
   gets a stateless seed ``fold_in_seed(seed, read_counter)``.
3. Each read is planned (parallel map): patch start corners (class-balanced or uniform). Only these
   small descriptors go through the seeded shuffle buffer, so patches of one read are spread over
   several batches at almost no memory cost.
4. Each descriptor is cut into an image/label patch (parallel map): optionally scaled and rotated
   about the patch centre (:mod:`~dltk_mm.io.spatial_augmentation`: the patch is then resampled
   from the whole volume, image trilinear, label nearest), an optional per-organ intensity
   factor, optional random gamma, contrast and brightness, the read's intensity offset (seeded
   by the read's seed, hence shared by all patches of that read) and optional flips.
5. Batches get per-voxel Gaussian noise (seeded by the batch counter), the channel axis, int32
   labels and the modality index, and are prefetched.

All random ops are stateless and keyed by counters, the shuffles are seeded and the parallel maps
keep their order when a seed is given, so the same seed yields the same batches.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from dltk_mm.errors import ConfigurationError, InputDataError
from dltk_mm.io import sampling
from dltk_mm.io.augmentation import (
    AugmentationConfig,
    add_gaussian_noise,
    add_intensity_offset,
    random_flip,
    random_intensity,
    random_organ_intensity,
)
from dltk_mm.io.seeds import derive_seed, fold_in_seed
from dltk_mm.io.spatial_augmentation import random_affine_matrix, resample_patch

#: Start offsets of volumes inside the flat buffers are multiples of this many elements, which lets
#: TensorFlow slice a volume out of the buffer without copying it (an implementation detail, not a
#: hyperparameter).
_ALIGNMENT = 64

VolumePair = tuple[np.ndarray, np.ndarray]


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Training input pipeline settings (defaults: the paper's).

    Attributes:
        patch_size: Patch shape ``(z, y, x)``; paper 64^3.
        batch_size: Patches per batch; paper 16.
        sampling: ``"balanced"`` (paper code: up to ``max_centres_per_class`` centres per class
            present, jittered) or ``"uniform"`` (``patches_per_volume`` uniformly placed patches).
        num_classes: Number of label classes (background included).
        max_centres_per_class: Balanced sampling: centres per class and read (paper code: 6).
        jitter: Balanced sampling: inclusive integer range added to every centre coordinate
            (paper code: (-16, 15)).
        patches_per_volume: Uniform sampling: patches per volume read.
        augmentation: Noise / offset / flips / intensity / scaling and rotation, see
            :class:`AugmentationConfig`.
        shuffle_buffer: Patch descriptors in the shuffle buffer that spreads the patches of one
            read over several batches (descriptors are tiny; only the chosen ones are cut).
        seed: Integer seed; equal seeds give equal batches. ``None`` draws one (logged) and lets
            parallel maps run out of order.
        num_parallel_calls: Parallelism of the maps; ``None`` = ``tf.data.AUTOTUNE``.
        prefetch: Batches prefetched; ``None`` = ``tf.data.AUTOTUNE``.
        image_pad_value: Value of the image voxels added to volumes smaller than a patch; ``None``
            = the volume's minimum. Labels are padded with background (0).
    """

    patch_size: tuple[int, int, int] = (64, 64, 64)
    batch_size: int = 16
    sampling: str = "balanced"
    num_classes: int = 5
    max_centres_per_class: int = 6
    jitter: tuple[int, int] = (-16, 15)
    patches_per_volume: int = 30
    augmentation: AugmentationConfig = dataclasses.field(default_factory=AugmentationConfig)
    shuffle_buffer: int = 256
    seed: int | None = None
    num_parallel_calls: int | None = None
    prefetch: int | None = None
    image_pad_value: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", sampling._check_patch_size(self.patch_size))
        object.__setattr__(self, "jitter", sampling._check_jitter(self.jitter))
        if self.sampling not in ("balanced", "uniform"):
            raise ConfigurationError(
                f"sampling must be 'balanced' or 'uniform', got {self.sampling!r}"
            )
        for name in ("batch_size", "num_classes", "max_centres_per_class", "patches_per_volume",
                     "shuffle_buffer"):
            if int(getattr(self, name)) <= 0:
                raise ConfigurationError(f"{name} must be positive, got {getattr(self, name)}")
        if not isinstance(self.augmentation, AugmentationConfig):
            raise ConfigurationError(
                f"augmentation must be an AugmentationConfig, got {type(self.augmentation)}"
            )


def _aligned_offsets(sizes: Sequence[int]) -> tuple[np.ndarray, int]:
    offsets = []
    position = 0
    for size in sizes:
        offsets.append(position)
        position += -(-size // _ALIGNMENT) * _ALIGNMENT
    return np.asarray(offsets, np.int64), position


class _VolumeBank:
    """Volumes of one modality, padded and packed into aligned flat buffers (eager tensors)."""

    def __init__(self, volumes: Sequence[VolumePair], config: PipelineConfig, name: str) -> None:
        if len(volumes) == 0:
            raise InputDataError(f"{name}: no volumes given; pass at least one (image, label) pair")
        images, labels = [], []
        for i, pair in enumerate(volumes):
            image, label = _validated(pair, config.num_classes, f"{name}, volume {i}")
            image, label, _ = sampling.pad_to_patch_size(
                image, label, config.patch_size, config.image_pad_value
            )
            images.append(image.numpy())
            labels.append(label.numpy())
        sizes = [im.size for im in images]
        offsets, total = _aligned_offsets(sizes)
        image_buffer = np.zeros(total, np.float32)
        label_buffer = np.zeros(total, np.uint8)
        for image, label, offset in zip(images, labels, offsets, strict=True):
            image_buffer[offset:offset + image.size] = image.ravel()
            label_buffer[offset:offset + label.size] = label.ravel()
        self.num_volumes = len(images)
        self.shapes = tf.constant([im.shape for im in images], tf.int32)
        self.sizes = tf.constant(sizes, tf.int64)
        self.offsets = tf.constant(offsets, tf.int64)
        self.images = tf.constant(image_buffer)
        self.labels = tf.constant(label_buffer)
        self.index_offsets = None
        self.index = None
        if config.sampling == "balanced":
            cumsums = [
                sampling.class_row_cumsum(label, config.num_classes).numpy().ravel()
                for label in labels
            ]
            index_offsets, _ = _aligned_offsets([c.size for c in cumsums])
            index_buffer = np.zeros(int(index_offsets[-1]) + cumsums[-1].size, np.int32)
            for cumsum, offset in zip(cumsums, index_offsets, strict=True):
                index_buffer[offset:offset + cumsum.size] = cumsum
            self.index_offsets = tf.constant(index_offsets, tf.int64)
            self.index = tf.constant(index_buffer)
        logging.info(
            "%s: %d volumes in memory (%.1f MB of images)", name, self.num_volumes,
            image_buffer.nbytes / 1e6,
        )

    def shape(self, volume: tf.Tensor) -> tf.Tensor:
        return self.shapes[volume]

    def image(self, volume: tf.Tensor) -> tf.Tensor:
        start = self.offsets[volume]
        return tf.reshape(self.images[start:start + self.sizes[volume]], self.shapes[volume])

    def label(self, volume: tf.Tensor) -> tf.Tensor:
        start = self.offsets[volume]
        return tf.reshape(self.labels[start:start + self.sizes[volume]], self.shapes[volume])

    def row_cumsum(self, volume: tf.Tensor, num_classes: int) -> tf.Tensor:
        shape = tf.cast(self.shapes[volume], tf.int64)
        start = self.index_offsets[volume]
        rows = shape[0] * shape[1]
        flat = self.index[start:start + num_classes * rows]
        return tf.reshape(flat, tf.stack([num_classes, rows]))


def _validated(pair: VolumePair, num_classes: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        image, label = pair
    except (TypeError, ValueError) as error:
        raise InputDataError(f"{where}: expected an (image, label) pair of arrays") from error
    image = np.asarray(image)
    label = np.asarray(label)
    if image.ndim != 3 or label.shape != image.shape:
        raise InputDataError(
            f"{where}: image and label must be 3-D (z, y, x) arrays of one shape, got "
            f"{image.shape} and {label.shape}; preprocess the volume first"
        )
    if not np.issubdtype(label.dtype, np.integer):
        raise InputDataError(f"{where}: label must be an integer array, got {label.dtype}")
    image = image.astype(np.float32, copy=False)
    if not np.isfinite(image).all():
        raise InputDataError(f"{where}: image holds NaN or infinite values; fix the preprocessing")
    if label.size and (label.min() < 0 or label.max() >= num_classes):
        raise InputDataError(
            f"{where}: label values must lie in [0, {num_classes}), found "
            f"[{label.min()}, {label.max()}]; map the labels to 0 background, 1 liver, 2 spleen, "
            "3 right kidney, 4 left kidney"
        )
    return image, label.astype(np.uint8, copy=False)


def _resolve_seed(config: PipelineConfig) -> tuple[int, bool]:
    if config.seed is not None:
        return int(config.seed), True
    seed = secrets.randbelow(2**31)
    logging.info("input pipeline: no seed given, drew seed %d", seed)
    return seed, False


def modality_dataset(
    volumes: Sequence[VolumePair],
    modality_index: int,
    config: PipelineConfig | None = None,
) -> tf.data.Dataset:
    """Infinite batches of augmented training patches from the volumes of ONE modality.

    Args:
        volumes: ``(image, label)`` pairs, image float32 ``(z, y, x)`` and label integer
            ``(z, y, x)`` with values in ``[0, num_classes)``, after preprocessing; shapes may
            differ between volumes. They are copied into memory once.
        modality_index: Position of this modality in the model's ``modalities``; written to every
            element's ``modality_index`` and mixed into the seed (so modalities get independent
            random streams).
        config: Pipeline settings; default :class:`PipelineConfig()`.

    Returns:
        A ``tf.data.Dataset`` of ``(image (B, pz, py, px, 1) float32, label (B, pz, py, px) int32,
        modality_index (B,) int32)``, infinite, prefetched.
    """
    config = config or PipelineConfig()
    seed, deterministic = _resolve_seed(config)
    return _modality_dataset(volumes, int(modality_index), config, seed, deterministic)


def _plan_fn(bank: _VolumeBank, config: PipelineConfig,
             plan_seed: tf.Tensor) -> Callable[[tf.Tensor, tf.Tensor], dict[str, tf.Tensor]]:
    """The map of a volume read onto the descriptors of its patches (start corners and seeds)."""
    patch = config.patch_size

    @tf.autograph.experimental.do_not_convert
    def plan(read_index: tf.Tensor, volume: tf.Tensor) -> dict[str, tf.Tensor]:
        read_seed = fold_in_seed(plan_seed, read_index)
        if config.sampling == "balanced":
            starts = sampling.balanced_starts(
                bank.label(volume), bank.row_cumsum(volume, config.num_classes), patch,
                config.max_centres_per_class, config.jitter, read_seed)
        else:
            starts = sampling.uniform_starts(
                bank.shape(volume), patch, config.patches_per_volume, fold_in_seed(read_seed, 0))
        count = tf.shape(starts)[0]
        return {
            "volume": tf.fill([count], volume),
            "start": starts,
            "read_seed": tf.tile(read_seed[None], [count, 1]),
            "patch_index": tf.range(count, dtype=tf.int64),
        }

    return plan


def _cut_fn(bank: _VolumeBank, config: PipelineConfig
            ) -> Callable[[dict[str, tf.Tensor]], tuple[tf.Tensor, tf.Tensor]]:
    """The map of a patch descriptor onto its augmented image and label patch (not the noise)."""
    patch = config.patch_size
    augmentation = config.augmentation

    @tf.autograph.experimental.do_not_convert
    def cut(element: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        volume = element["volume"]
        start = element["start"]
        read_seed = element["read_seed"]
        patch_seed = fold_in_seed(read_seed, element["patch_index"])
        if augmentation.spatial:
            matrix = random_affine_matrix(
                fold_in_seed(patch_seed, 4), augmentation.scale_probability,
                augmentation.scale_range, augmentation.rotation_probability,
                augmentation.rotation_degrees, augmentation.tilt_degrees)
            image, label = tf.cond(
                tf.reduce_all(tf.equal(matrix, tf.eye(3))),
                lambda: (tf.slice(bank.image(volume), start, patch),
                         tf.slice(bank.label(volume), start, patch)),
                lambda: resample_patch(bank.image(volume), bank.label(volume), start, patch,
                                       matrix))
        else:
            image = tf.slice(bank.image(volume), start, patch)
            label = tf.slice(bank.label(volume), start, patch)
        image, label = tf.ensure_shape(image, patch), tf.ensure_shape(label, patch)
        image = random_organ_intensity(
            image, label, augmentation.organ_intensity_probability,
            augmentation.organ_intensity_range, fold_in_seed(patch_seed, 6))
        image = random_intensity(image, augmentation, fold_in_seed(patch_seed, 5))
        # One offset per volume read: every patch of the read uses the read's seed.
        image = add_intensity_offset(image, augmentation.offset_sigma, fold_in_seed(read_seed, 2))
        if augmentation.flip_axes:
            flip_seed = fold_in_seed(fold_in_seed(read_seed, 3), element["patch_index"])
            image, label = random_flip(
                image, label, augmentation.flip_axes, flip_seed, augmentation.swap_lr_labels
            )
        return image, label

    return cut


def _finish_fn(config: PipelineConfig, noise_seed: tf.Tensor, modality_index: int
               ) -> Callable[[tf.Tensor, tuple[tf.Tensor, tf.Tensor]],
                             tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
    """The map of a numbered batch onto the model's inputs: noise, channel axis, modality."""

    @tf.autograph.experimental.do_not_convert
    def finish(
        batch_index: tf.Tensor, batch: tuple[tf.Tensor, tf.Tensor]
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        images, labels = batch
        images = add_gaussian_noise(
            images, config.augmentation.noise_sigma, fold_in_seed(noise_seed, batch_index)
        )
        modality = tf.fill([config.batch_size], tf.constant(modality_index, tf.int32))
        return images[..., None], tf.cast(labels, tf.int32), modality

    return finish


def _modality_dataset(
    volumes: Sequence[VolumePair],
    modality_index: int,
    config: PipelineConfig,
    seed: int,
    deterministic: bool,
) -> tf.data.Dataset:
    bank = _VolumeBank(volumes, config, f"modality {modality_index}")
    base_seed = tf.constant([seed, modality_index], tf.int64)
    parallel = tf.data.AUTOTUNE if config.num_parallel_calls is None else config.num_parallel_calls
    volume_order = (
        tf.data.Dataset.range(bank.num_volumes)
        .shuffle(bank.num_volumes, seed=derive_seed(seed, modality_index, 1),
                 reshuffle_each_iteration=True)
        .repeat()
    )
    dataset = (
        volume_order.enumerate()
        .map(_plan_fn(bank, config, fold_in_seed(base_seed, 1)), num_parallel_calls=parallel,
             deterministic=deterministic)
        .unbatch()
        .shuffle(config.shuffle_buffer, seed=derive_seed(seed, modality_index, 2),
                 reshuffle_each_iteration=True)
        .map(_cut_fn(bank, config), num_parallel_calls=parallel, deterministic=deterministic)
        .batch(config.batch_size, drop_remainder=True)
        .enumerate()
        .map(_finish_fn(config, fold_in_seed(base_seed, 2), modality_index),
             num_parallel_calls=parallel, deterministic=deterministic)
    )
    prefetch = tf.data.AUTOTUNE if config.prefetch is None else config.prefetch
    return dataset.prefetch(prefetch)


def interleaved_dataset(
    volumes_by_modality: Mapping[str, Sequence[VolumePair]],
    modalities: Sequence[str],
    order: Sequence[str] | None = None,
    config: PipelineConfig | None = None,
) -> tf.data.Dataset:
    """Batches of several modalities, alternated strictly in a fixed cyclic order.

    The paper's multi-modal schemes alternate one all-MR batch and one all-CT batch, starting with
    MR (the default order, following ``modalities = ("mr", "ct")``). One modality gives that
    modality's batches only (Individual, or Joint on one modality); three or more work alike.

    Args:
        volumes_by_modality: ``{modality: [(image, label), ...]}``; modalities not in ``order`` are
            ignored.
        modalities: The model's ordered modalities; a batch's modality index is the position of its
            modality here.
        order: The cycle of modalities, e.g. ``("mr", "ct")`` or ``("ct", "mr", "mr")``; default
            ``modalities`` (MR, CT, MR, CT, ... for the paper's order).
        config: Pipeline settings shared by all modalities; default :class:`PipelineConfig()`.
            Each modality gets its own random stream derived from ``config.seed``.

    Returns:
        An infinite ``tf.data.Dataset`` of ``(image, label, modality_index)`` batches, see
        :func:`modality_dataset`; batch ``i`` is of modality ``order[i % len(order)]``.
    """
    config = config or PipelineConfig()
    modalities = tuple(modalities)
    if not modalities or len(set(modalities)) != len(modalities):
        raise ConfigurationError(f"modalities must be distinct and non-empty, got {modalities}")
    order = modalities if order is None else tuple(order)
    if not order:
        raise ConfigurationError("order must name at least one modality")
    for modality in order:
        if modality not in modalities:
            raise ConfigurationError(
                f"order names {modality!r}, which is not among the model's modalities {modalities}"
            )
        if not volumes_by_modality.get(modality):
            raise InputDataError(
                f"no training volumes for modality {modality!r} (have "
                f"{sorted(volumes_by_modality)}); add them or drop it from the order"
            )
    seed, deterministic = _resolve_seed(config)
    used = list(dict.fromkeys(order))  # distinct, first-appearance order
    datasets = [
        _modality_dataset(
            volumes_by_modality[m], modalities.index(m), config, seed, deterministic
        )
        for m in used
    ]
    if len(datasets) == 1:
        return datasets[0]
    choice = tf.data.Dataset.from_tensor_slices(
        tf.constant([used.index(m) for m in order], tf.int64)
    ).repeat()
    dataset = tf.data.Dataset.choose_from_datasets(datasets, choice)
    return dataset.prefetch(tf.data.AUTOTUNE if config.prefetch is None else config.prefetch)
