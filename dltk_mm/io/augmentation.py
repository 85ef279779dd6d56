"""Intensity and geometric augmentation of training patches, in stateless TensorFlow ops.

docs/paper.md, section 4.2 (flips, gamma, contrast, brightness, scaling and rotation: section 9).

Valindria et al. (WACV 2018) augment with additive Gaussian noise (sigma 0.1 per voxel) and a
random intensity offset (sigma 0.1). Their code drew one offset per volume read, shared by all
patches cut from it; :mod:`dltk_mm.io.pipeline` does the same by seeding the offset with the read's
seed. The paper uses no flips. Flips are offered here, off by default; a left-right flip (the last
array axis, x, in the canonical ``(z, y, x)`` LPS layout) always swaps the right and left kidney
labels (3 and 4): the swap is part of :func:`flip` itself, so it cannot be forgotten.

Beyond the paper, also off by default: per-patch random gamma, contrast and brightness
(:func:`random_gamma`, :func:`random_contrast`, :func:`random_brightness`; the label is never
touched), per-organ intensity scaling (:func:`random_organ_intensity`: each labelled organ's
intensities multiplied by its own factor, so that an organ darker or brighter than usual, as in
iron overload or fatty liver, is still found by its shape and place) and random scaling and
rotation about the patch centre
(:mod:`dltk_mm.io.spatial_augmentation`; image trilinear, label nearest neighbour). Elastic
deformation is not offered.

Spatial axes are numbered ``0, 1, 2`` = ``(z, y, x)`` and always refer to the LAST three array
axes, so the same functions work on a patch ``(z, y, x)`` and on a stack ``(n, z, y, x)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import tensorflow as tf

from dltk_mm.errors import ConfigurationError
from dltk_mm.io.seeds import SeedLike, as_seed, fold_in_seed

#: Spatial axis of left-right (x) in ``(z, y, x)``.
LEFT_RIGHT_AXIS = 2


@dataclasses.dataclass(frozen=True)
class AugmentationConfig:
    """Training-time augmentation (defaults: the paper's noise and offset only).

    Every probability is per patch; 0 (the default) disables that augmentation.

    Attributes:
        noise_sigma: Standard deviation of the per-voxel additive Gaussian noise (paper: 0.1);
            0 disables it.
        offset_sigma: Standard deviation of the random intensity offset, one per volume read
            (paper: 0.1); 0 disables it.
        flip_axes: Spatial axes (0=z, 1=y, 2=x) each flipped independently with probability 1/2;
            empty (default, as in the paper) disables flips. A flip of axis 2 (left-right) swaps
            the labels in ``swap_lr_labels``.
        swap_lr_labels: The (right, left) label pair exchanged by a left-right flip: (3, 4), the
            right and left kidney.
        gamma_probability: Chance of a random gamma applied to the patch rescaled to [0, 1].
        gamma_range: Range (low, high) of the gamma exponent, drawn uniformly.
        contrast_probability: Chance of scaling the patch's intensities about its mean.
        contrast_range: Range (low, high) of the contrast factor, drawn uniformly.
        brightness_probability: Chance of multiplying the patch's intensities by a factor.
        brightness_range: Range (low, high) of the brightness factor, drawn uniformly.
        organ_intensity_probability: Chance of scaling each labelled organ's intensities by its
            own factor (the label is never touched).
        organ_intensity_range: Range (low, high) of each organ's factor, drawn uniformly and
            independently per organ.
        scale_probability: Chance of zooming the patch about its centre (image linear, label
            nearest).
        scale_range: Range (low, high) of the zoom factor (above 1 magnifies), drawn uniformly.
        rotation_probability: Chance of rotating the patch about its centre (image linear, label
            nearest).
        rotation_degrees: Largest rotation about the z axis (in the axial plane), in degrees.
        tilt_degrees: Largest rotation about each of the y and x axes (a tilt), in degrees.
    """

    noise_sigma: float = 0.1
    offset_sigma: float = 0.1
    flip_axes: tuple[int, ...] = ()
    swap_lr_labels: tuple[int, int] = (3, 4)
    gamma_probability: float = 0.0
    gamma_range: tuple[float, float] = (0.7, 1.5)
    contrast_probability: float = 0.0
    contrast_range: tuple[float, float] = (0.75, 1.25)
    brightness_probability: float = 0.0
    brightness_range: tuple[float, float] = (0.75, 1.25)
    organ_intensity_probability: float = 0.0
    organ_intensity_range: tuple[float, float] = (0.1, 1.25)
    scale_probability: float = 0.0
    scale_range: tuple[float, float] = (0.85, 1.25)
    rotation_probability: float = 0.0
    rotation_degrees: float = 15.0
    tilt_degrees: float = 5.0

    def __post_init__(self) -> None:
        if self.noise_sigma < 0 or self.offset_sigma < 0:
            raise ConfigurationError(
                f"noise_sigma and offset_sigma must be >= 0, got {self.noise_sigma} and "
                f"{self.offset_sigma}"
            )
        axes = tuple(int(a) for a in self.flip_axes)
        if any(a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes):
            raise ConfigurationError(
                f"flip_axes must be distinct spatial axes among 0 (z), 1 (y), 2 (x), got "
                f"{self.flip_axes}"
            )
        object.__setattr__(self, "flip_axes", axes)
        _check_swap_pair(self.swap_lr_labels)
        for name in _PROBABILITIES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigurationError(f"{name} must lie in [0, 1], got {value}")
        for name in _RANGES:
            object.__setattr__(self, name, _check_range(name, getattr(self, name)))
        for name in ("rotation_degrees", "tilt_degrees"):
            if not 0.0 <= getattr(self, name) <= 180.0:
                raise ConfigurationError(f"{name} must lie in [0, 180], got {getattr(self, name)}")

    @property
    def spatial(self) -> bool:
        """Whether scaling or rotation is on (the pipeline then resamples every patch)."""
        return self.scale_probability > 0 or self.rotation_probability > 0


_PROBABILITIES = ("gamma_probability", "contrast_probability", "brightness_probability",
                  "organ_intensity_probability", "scale_probability", "rotation_probability")
_RANGES = ("gamma_range", "contrast_range", "brightness_range", "organ_intensity_range",
           "scale_range")


def _check_range(name: str, value: Sequence[float]) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError) as error:
        raise ConfigurationError(f"{name} must be two numbers (low, high), got {value}") from error
    if not 0.0 < low <= high:
        raise ConfigurationError(f"{name} must be (low, high) with 0 < low <= high, got {value}")
    return low, high


def _check_swap_pair(pair: Sequence[int]) -> tuple[int, int]:
    if pair is None or len(pair) != 2 or int(pair[0]) == int(pair[1]):
        raise ConfigurationError(
            "a left-right flip must swap the right/left labels: swap_lr_labels must be two "
            f"different labels (default (3, 4), right and left kidney), got {pair}"
        )
    return int(pair[0]), int(pair[1])


def add_gaussian_noise(image: tf.Tensor, sigma: float, seed: SeedLike) -> tf.Tensor:
    """Adds independent zero-mean Gaussian noise to every voxel (paper: sigma 0.1).

    Args:
        image: float tensor of any shape.
        sigma: Noise standard deviation.
        seed: Stateless seed, shape ``[2]``.

    Returns:
        ``image + sigma * N(0, 1)``, same shape and dtype.
    """
    image = tf.convert_to_tensor(image)
    if sigma == 0:
        return image
    noise = tf.random.stateless_normal(
        tf.shape(image), as_seed(seed), stddev=sigma, dtype=image.dtype, alg="philox"
    )
    return image + noise


def sample_intensity_offset(
    sigma: float, seed: SeedLike, dtype: tf.DType = tf.float32
) -> tf.Tensor:
    """One random intensity offset ``~ N(0, sigma^2)`` (a scalar)."""
    return tf.random.stateless_normal([], as_seed(seed), stddev=sigma, dtype=dtype)


def add_intensity_offset(image: tf.Tensor, sigma: float, seed: SeedLike) -> tf.Tensor:
    """Adds ONE random offset ``~ N(0, sigma^2)`` to the whole tensor (paper: sigma 0.1).

    Pass the patches of one volume read together (``(n, z, y, x)``), or each with the same seed,
    to share the offset among them, as the paper's code did.

    Args:
        image: float tensor of any shape.
        sigma: Offset standard deviation.
        seed: Stateless seed, shape ``[2]``; equal seeds give equal offsets.

    Returns:
        ``image + offset``, same shape and dtype.
    """
    image = tf.convert_to_tensor(image)
    if sigma == 0:
        return image
    return image + sample_intensity_offset(sigma, seed, image.dtype)


def swap_labels(label: tf.Tensor, pair: Sequence[int] = (3, 4)) -> tf.Tensor:
    """Exchanges two label values (e.g. right and left kidney), leaving all others unchanged."""
    first, second = _check_swap_pair(pair)
    label = tf.convert_to_tensor(label)
    a = tf.cast(first, label.dtype)
    b = tf.cast(second, label.dtype)
    return tf.where(tf.equal(label, a), b, tf.where(tf.equal(label, b), a, label))


def flip(
    image: tf.Tensor, label: tf.Tensor, axis: int, swap_lr_labels: Sequence[int] = (3, 4)
) -> tuple[tf.Tensor, tf.Tensor]:
    """Flips image and label along one spatial axis; a left-right flip also swaps labels 3 and 4.

    Args:
        image: ``(..., z, y, x)``.
        label: ``(..., z, y, x)``, same spatial shape.
        axis: Spatial axis, 0 (z), 1 (y) or 2 (x, left-right). It is counted from the last three
            array axes.
        swap_lr_labels: The (right, left) labels exchanged by a left-right flip; required (a
            left-right flip without the swap would teach the network wrong sides).

    Returns:
        ``(image, label)`` flipped.
    """
    axis = int(axis)
    if axis not in (0, 1, 2):
        raise ConfigurationError(f"axis must be a spatial axis 0 (z), 1 (y) or 2 (x), got {axis}")
    pair = _check_swap_pair(swap_lr_labels)
    array_axis = axis - 3
    image = tf.reverse(image, [array_axis])
    label = tf.reverse(label, [array_axis])
    if axis == LEFT_RIGHT_AXIS:
        label = swap_labels(label, pair)
    return image, label


def random_flip(
    image: tf.Tensor,
    label: tf.Tensor,
    axes: Sequence[int],
    seed: SeedLike,
    swap_lr_labels: Sequence[int] = (3, 4),
) -> tuple[tf.Tensor, tf.Tensor]:
    """Flips along each of ``axes`` independently with probability 1/2 (see :func:`flip`).

    The decision applies to the whole tensor (all patches of a stack flip together).

    Args:
        image: ``(..., z, y, x)``.
        label: ``(..., z, y, x)``.
        axes: Spatial axes among 0 (z), 1 (y), 2 (x); empty returns the inputs unchanged.
        seed: Stateless seed, shape ``[2]``.
        swap_lr_labels: See :func:`flip`.

    Returns:
        ``(image, label)``, possibly flipped.
    """
    image = tf.convert_to_tensor(image)
    label = tf.convert_to_tensor(label)
    axes = tuple(int(a) for a in axes)
    if not axes:
        return image, label
    coins = tf.random.stateless_uniform([len(axes)], as_seed(seed)) < 0.5
    for i, axis in enumerate(axes):
        image, label = tf.cond(
            coins[i],
            lambda a=axis, im=image, lb=label: flip(im, lb, a, swap_lr_labels),
            lambda im=image, lb=label: (im, lb),
        )
    return image, label


def _randomly(image: tf.Tensor, probability: float, value_range: Sequence[float],
              seed: SeedLike, transform: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
              ) -> tf.Tensor:
    """``transform(image, value)`` with chance ``probability``, else ``image``.

    ``value`` is uniform in ``value_range`` (in the image's dtype); the coin and the value are
    drawn from the stateless ``seed``. A probability of 0 returns ``image`` itself.
    """
    image = tf.convert_to_tensor(image)
    if probability == 0:
        return image
    draws = tf.random.stateless_uniform([2], as_seed(seed))
    low, high = float(value_range[0]), float(value_range[1])
    value = tf.cast(low + (high - low) * draws[1], image.dtype)
    return tf.cond(draws[0] < probability, lambda: transform(image, value), lambda: image)


def random_gamma(image: tf.Tensor, probability: float, gamma_range: Sequence[float],
                 seed: SeedLike) -> tf.Tensor:
    """With chance ``probability``: ``lo + (hi - lo) * ((image - lo) / (hi - lo)) ** gamma``.

    ``lo`` and ``hi`` are the tensor's minimum and maximum (kept), ``gamma`` uniform in
    ``gamma_range``; a constant tensor is left unchanged.

    Args:
        image: float tensor (one patch).
        probability: Chance of applying it; 0 returns ``image`` itself.
        gamma_range: ``(low, high)`` exponents.
        seed: Stateless seed, shape ``[2]``.
    """

    def transformed(image: tf.Tensor, gamma: tf.Tensor) -> tf.Tensor:
        low, high = tf.reduce_min(image), tf.reduce_max(image)
        span = tf.maximum(high - low, tf.constant(1e-6, image.dtype))
        unit = tf.clip_by_value((image - low) / span, 0.0, 1.0)
        return low + span * tf.pow(unit, gamma)

    return _randomly(image, probability, gamma_range, seed, transformed)


def random_contrast(image: tf.Tensor, probability: float, contrast_range: Sequence[float],
                    seed: SeedLike) -> tf.Tensor:
    """With chance ``probability``: ``mean + factor * (image - mean)``, ``mean`` the tensor's.

    Args:
        image: float tensor (one patch).
        probability: Chance of applying it; 0 returns ``image`` itself.
        contrast_range: ``(low, high)`` of ``factor``, drawn uniformly.
        seed: Stateless seed, shape ``[2]``.
    """

    def transformed(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
        mean = tf.reduce_mean(image)
        return mean + factor * (image - mean)

    return _randomly(image, probability, contrast_range, seed, transformed)


def random_brightness(image: tf.Tensor, probability: float, brightness_range: Sequence[float],
                      seed: SeedLike) -> tf.Tensor:
    """With chance ``probability``: ``factor * image``, ``factor`` uniform in the range.

    Args:
        image: float tensor (one patch).
        probability: Chance of applying it; 0 returns ``image`` itself.
        brightness_range: ``(low, high)`` of ``factor``.
        seed: Stateless seed, shape ``[2]``.
    """
    return _randomly(image, probability, brightness_range, seed,
                     lambda image, factor: image * factor)


def random_organ_intensity(image: tf.Tensor, label: tf.Tensor, probability: float,
                           factor_range: Sequence[float], seed: SeedLike) -> tf.Tensor:
    """With chance ``probability``: every organ's voxels multiplied by that organ's own factor.

    Each label value above 0 draws a factor uniform in ``factor_range``; background keeps 1. The
    map of factors is averaged over each voxel's 3x3x3 neighbourhood, so that an organ's border
    changes gradually, as partial-volume voxels do, rather than in a step the network could learn
    as a cue.

    Args:
        image: float patch ``(z, y, x)``.
        label: integer label patch ``(z, y, x)`` (non-negative), the same shape.
        probability: Chance of applying it; 0 returns ``image`` itself.
        factor_range: ``(low, high)`` of each organ's factor.
        seed: Stateless seed, shape ``[2]``.

    Returns:
        The image with its organs rescaled (or unchanged); the label is not touched.
    """
    image = tf.convert_to_tensor(image)
    if probability == 0:
        return image
    label = tf.cast(label, tf.int32)
    seed = as_seed(seed)
    low, high = float(factor_range[0]), float(factor_range[1])

    def transformed() -> tf.Tensor:
        count = tf.reduce_max(label) + 1
        factors = low + (high - low) * tf.random.stateless_uniform(
            [count], fold_in_seed(seed, 1), dtype=image.dtype)
        factors = tf.concat([tf.ones([1], image.dtype), factors[1:]], axis=0)
        factor_map = tf.gather(factors, label)[None, ..., None]
        factor_map = tf.nn.avg_pool3d(factor_map, 3, 1, "SAME")[0, ..., 0]
        return image * factor_map

    coin = tf.random.stateless_uniform([], fold_in_seed(seed, 0))
    return tf.cond(coin < probability, transformed, lambda: image)


def random_intensity(image: tf.Tensor, config: AugmentationConfig, seed: SeedLike) -> tf.Tensor:
    """Gamma, then contrast, then brightness, as ``config`` sets them (each independently)."""
    image = random_gamma(image, config.gamma_probability, config.gamma_range,
                         fold_in_seed(seed, 0))
    image = random_contrast(image, config.contrast_probability, config.contrast_range,
                            fold_in_seed(seed, 1))
    return random_brightness(image, config.brightness_probability, config.brightness_range,
                             fold_in_seed(seed, 2))
