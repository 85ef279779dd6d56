"""The one segmentation path: a preprocessed volume -> labels (and probabilities).

Every caller segments through :func:`segment_volume`: validation during training,
``dltk-mm-predict``, the benchmark's evaluation and the SavedModel export. It runs, in order:

1. the sliding window (:func:`~dltk_mm.inference.sliding_window.blended_slabs`):
   windows of the training patch size with ``overlap``, batched, blended ``"uniform"`` (the
   paper: a plain average of overlapping probabilities) or ``"gaussian"`` (centre-weighted);
2. optional test-time mirroring (:func:`mirrored`): every window is also segmented flipped along
   each combination of ``mirror_axes`` (all three by default), each output is flipped back and the
   probabilities are averaged; with ``mirror_swap`` (the default) the outputs of flips of the x
   axis (the patient's left-right axis of the LPS-canonical ``(z, y, x)`` array) exchange the
   right and left kidney channels (:data:`~dltk_mm.core.label_map.MIRROR_SWAP_PAIRS`);
3. the argmax;
4. optional post-processing of the labels (:func:`keep_components`): per organ, keep only the
   largest connected component and / or remove components below ``min_component_voxels``
   (removed voxels become background).

:class:`InferenceConfig` holds these options; its defaults are the paper's protocol (50 % overlap,
uniform blending, no mirroring, no post-processing; docs/paper.md, section 6; the additions:
section 9).
:class:`StreamProbabilities` turns a trained multi-stream model into the per-stream probability
function, one ``tf.function`` per stream traced once with a fixed input signature.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging

from dltk_mm.core.label_map import MIRROR_SWAP_PAIRS, NUM_CLASSES
from dltk_mm.errors import ConfigurationError
from dltk_mm.inference.sliding_window import blended_slabs

ProbabilitiesFn = Callable[[np.ndarray], np.ndarray]
ProgressFn = Callable[[int, int], None]

#: Window blendings: ``"uniform"`` (the paper) or ``"gaussian"``.
WEIGHTINGS: tuple[str, ...] = ("uniform", "gaussian")
#: Axes of a ``(z, y, x)`` volume that test-time mirroring may flip (every combination of those
#: of ``InferenceConfig.mirror_axes``; all three by default).
MIRROR_AXES: tuple[int, ...] = (0, 1, 2)
#: The patient's left-right axis of an LPS-canonical ``(z, y, x)`` volume.
LEFT_RIGHT_AXIS: int = 2
#: Voxels per chunk of the argmax and of component counting (their int64 temporaries: 8 MB).
_CHUNK_VOXELS = 1 << 20


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    """How a volume is segmented (defaults: the paper's protocol, docs/paper.md, section 6).

    Attributes:
        overlap: Fraction of a window shared with its neighbour along each axis, in [0, 1)
            (the authors' code: 0.5 in validation, 0.0 at test time).
        weighting: Blending of overlapping windows: uniform (a plain average, the paper) or
            gaussian (centre-weighted).
        batch_size: Windows per network call.
        mirror: Test-time mirroring: average the probabilities of every combination of flips
            of mirror_axes (8 for the three axes, 8 times the work). Off in the paper. Only for
            a model trained with random flips of the same axes (``--flip_axes``): a network
            that never saw a flipped volume segments one badly, and averaging those outputs
            ruined a model trained without flips (mean Dice 0.81 -> 0.24 on the dev folder;
            experiments/paper/README.md, "Accuracy on the dev folder").
        mirror_axes: Axes of the (z, y, x) preprocessed volume that test-time mirroring flips
            (0 z, 1 y, 2 x, the patient's left-right axis); every combination of them is
            segmented, the identity included (2 ** len(mirror_axes) passes).
        mirror_swap: With mirroring, swap the right/left kidney channels of the outputs of
            flips that include the left-right axis before averaging. Right for a network that
            tells the kidneys apart by absolute position or shape; an FCN that tells them apart
            by context (the liver beside the right kidney) still calls the kidney next to the
            liver "right kidney" in the flipped image, so for it flipping back without the swap
            is right. Which holds is measured (the benchmark's ablation), not assumed.
        largest_component: Keep only the largest connected component of each organ. Off in
            the paper.
        min_component_voxels: Remove connected components of an organ smaller than this many
            voxels of the preprocessed grid (0: keep all, the paper).
    """

    overlap: float = 0.5
    weighting: str = "uniform"
    batch_size: int = 4
    mirror: bool = False
    mirror_axes: tuple[int, ...] = MIRROR_AXES
    mirror_swap: bool = True
    largest_component: bool = False
    min_component_voxels: int = 0

    def __post_init__(self) -> None:
        # A JSON list (config.json, an export's metadata) or any sequence -> a sorted tuple.
        object.__setattr__(self, "mirror_axes", _checked_axes(self.mirror_axes, self.mirror))
        if not 0.0 <= float(self.overlap) < 1.0:
            raise ConfigurationError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.weighting not in WEIGHTINGS:
            raise ConfigurationError(
                f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if int(self.batch_size) < 1:
            raise ConfigurationError(f"batch_size must be positive, got {self.batch_size}")
        if int(self.min_component_voxels) < 0:
            raise ConfigurationError(
                f"min_component_voxels must be 0 or more, got {self.min_component_voxels}")

    @property
    def post_processing(self) -> bool:
        """Whether the labels are post-processed (:func:`keep_components`)."""
        return self.largest_component or self.min_component_voxels > 0

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serialisable mapping (``mirror_axes`` a list, as JSON reads it)."""
        values = dataclasses.asdict(self)
        values["mirror_axes"] = list(self.mirror_axes)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> InferenceConfig:
        """Builds a config from :meth:`to_dict`'s mapping (missing keys keep their defaults).

        Raises:
            ConfigurationError: on an unknown key or a bad value.
        """
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigurationError(
                f"unknown inference setting(s) {unknown}; known: {sorted(names)}")
        return cls(**dict(values))


def _checked_axes(axes: Any, mirror: bool) -> tuple[int, ...]:
    """``mirror_axes`` as a sorted tuple, or ConfigurationError: not a subset of 0..2, a repeat,
    or none while mirroring is on."""
    values = (axes,) if isinstance(axes, (int, str)) else tuple(axes)
    if not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in values):
        raise ConfigurationError(f"mirror_axes must be integers among {MIRROR_AXES}, got {axes!r}")
    values = tuple(int(a) for a in values)
    if not set(values) <= set(MIRROR_AXES) or len(set(values)) != len(values):
        raise ConfigurationError(
            f"mirror_axes must be distinct axes among {MIRROR_AXES} (0 z, 1 y, 2 x), got {axes!r}")
    if mirror and not values:
        raise ConfigurationError("mirror_axes is empty while mirror is on: give the axes to flip "
                                 "(e.g. 0,1,2) or turn mirroring off")
    return tuple(sorted(values))


@dataclasses.dataclass
class Segmentation:
    """The segmentation of one preprocessed volume.

    Attributes:
        labels: ``(z, y, x)`` uint8 label map (post-processed when the config asks).
        probabilities: ``(z, y, x, C)`` float32 blended (and mirrored) class probabilities, or
            None when not kept.
        num_windows: windows per pass of the sliding window.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None = None
    num_windows: int = 0


class StreamProbabilities:
    """Per-stream probability functions of a multi-stream model, each traced once.

    ``StreamProbabilities(model)(windows, modality)`` maps ``(b, z, y, x, 1)`` float32 windows to
    the stream's softmax probabilities ``(b, z, y, x, C)`` (batch norm in inference mode). Each
    stream gets one ``tf.function`` with the input signature ``[None, None, None, None, 1]``
    float32, so no window or batch size retraces it.
    """

    def __init__(self, model: Any, jit_compile: bool = False) -> None:
        """Wraps ``model``.

        Args:
            model: a :class:`~dltk_mm.networks.MultiStreamModel` (``streams``, ``modalities``).
            jit_compile: XLA-compile the functions.
        """
        import tensorflow as tf

        self.model = model
        self.modalities = tuple(model.modalities)
        spec = tf.TensorSpec([None, None, None, None, 1], tf.float32, name="images")
        self._functions = {
            # A partial per stream (no shared __code__): TensorFlow's frequent-retracing warning
            # counts traces per Python function, and a closure would pool every stream of every
            # model in the process under one count.
            modality: tf.function(functools.partial(_stream_probabilities, model.streams[modality]),
                                  input_signature=[spec], jit_compile=jit_compile,
                                  autograph=False)
            for modality in self.modalities
        }

    def function(self, modality: str) -> Any:
        """The ``tf.function`` of ``modality``'s stream (e.g. to export it).

        Raises:
            ConfigurationError: naming the model's modalities.
        """
        if modality not in self._functions:
            raise ConfigurationError(
                f"unknown modality {modality!r}: the model has streams for "
                f"{list(self.modalities)}")
        return self._functions[modality]

    def __call__(self, windows: np.ndarray, modality: str) -> np.ndarray:
        """Probabilities ``(b, z, y, x, C)`` float32 of ``windows`` ``(b, z, y, x, 1)``."""
        function = self.function(modality)
        return np.asarray(function(np.asarray(windows, dtype=np.float32)), dtype=np.float32)


def _stream_probabilities(stream: Any, images: Any) -> Any:
    return stream(images, training=False)["probabilities"]


def mirror_swap_pairs(num_classes: int) -> tuple[tuple[int, int], ...]:
    """Channel pairs a left-right flip exchanges: the kidneys for the project's label map.

    A label map that is not the project's (``num_classes != NUM_CLASSES``) has no known pairs; a
    warning says so, since a left-right flip is then averaged without any channel swap.
    """
    if num_classes == NUM_CLASSES:
        return MIRROR_SWAP_PAIRS
    logging.log_first_n(
        logging.WARNING,
        "test-time mirroring with %d classes (not the project's label map): no left/right "
        "channels are swapped", 1, num_classes)
    return ()


def _swap_channels(probabilities: np.ndarray, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    order = np.arange(probabilities.shape[-1])
    for first, second in pairs:
        order[first], order[second] = second, first
    return probabilities[..., order]


def mirrored(probabilities_fn: ProbabilitiesFn, swap_pairs: Sequence[tuple[int, int]],
             axes: Sequence[int] = MIRROR_AXES) -> ProbabilitiesFn:
    """Test-time mirroring of a window -> probabilities function.

    The returned function segments each batch of windows ``(b, z, y, x, c)`` once per
    combination of flips of ``axes`` (the identity included), flips every output back, swaps the
    ``swap_pairs`` channels of the outputs whose flips include the left-right axis
    (:data:`LEFT_RIGHT_AXIS`), and returns the mean.

    Args:
        probabilities_fn: windows -> probabilities ``(b, z, y, x, C)``.
        swap_pairs: channel pairs exchanged by a left-right flip.
        axes: spatial axes (0 z, 1 y, 2 x) to flip.
    """
    flips = [combo for count in range(len(axes) + 1)
             for combo in itertools.combinations(axes, count)]

    def mirrored_probabilities(windows: np.ndarray) -> np.ndarray:
        total = None
        for flip in flips:
            array_axes = tuple(axis + 1 for axis in flip)  # skip the batch axis
            flipped = np.ascontiguousarray(np.flip(windows, axis=array_axes))
            output = np.asarray(probabilities_fn(flipped), dtype=np.float32)
            output = np.flip(output, axis=array_axes)
            if LEFT_RIGHT_AXIS in flip and swap_pairs:
                output = _swap_channels(output, swap_pairs)
            if total is None:
                total = np.array(output, dtype=np.float32)  # a copy: the sum is made in place
            else:
                total += output
        total /= np.float32(len(flips))
        return total

    return mirrored_probabilities


def keep_components(labels: np.ndarray, num_classes: int, largest: bool = False,
                    min_voxels: int = 0) -> np.ndarray:
    """Per organ, removes small or non-largest connected components (they become background).

    Components are face-connected (6-neighbourhood), found with SimpleITK's
    ``ConnectedComponent`` (numbered in raster order) within the organ's bounding box, and
    counted with one ``bincount``; of equally large largest components the first in raster order
    is kept. After one comparison per organ, the work follows the organ's box, not the volume.

    Args:
        labels: ``(z, y, x)`` integer label map.
        num_classes: classes of the map (background 0 included).
        largest: keep only the largest component of each organ.
        min_voxels: remove components with fewer voxels than this.

    Returns:
        A new uint8 label map.
    """
    import SimpleITK as sitk

    result = np.asarray(labels).astype(np.uint8, copy=True)
    if not largest and min_voxels <= 0:
        return result
    for organ in range(1, num_classes):
        mask = result == organ
        box = _bounding_box(mask)
        if box is None:
            continue
        mask, region = mask[box], result[box]  # views: the region is edited in place
        image = sitk.ConnectedComponent(sitk.GetImageFromArray(mask.view(np.uint8)), False)
        ids = sitk.GetArrayViewFromImage(image)  # valid while image lives
        sizes = _component_sizes(ids)
        if largest:
            best = int(np.argmax(sizes))  # the first of the largest: raster order
            drop = mask if sizes[best] < min_voxels else mask & (ids != best)
        else:
            drop = mask & (sizes < min_voxels)[ids]
        region[drop] = 0
        del ids
    return result


def _component_sizes(ids: np.ndarray) -> np.ndarray:
    """Voxels per component id (id 0, outside the organ, counts 0), in chunks of the volume (no
    int64 copy of it)."""
    flat = ids.reshape(-1)
    sizes = np.zeros(int(flat.max()) + 1, dtype=np.int64)
    for start in range(0, flat.size, _CHUNK_VOXELS):
        sizes += np.bincount(flat[start : start + _CHUNK_VOXELS], minlength=sizes.size)
    sizes[0] = 0
    return sizes


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The slices of the smallest box holding every True voxel of ``mask`` (None: there is none)."""
    rows = np.flatnonzero(mask.any(axis=(1, 2)))
    if rows.size == 0:
        return None
    slab = mask[rows[0] : rows[-1] + 1]
    columns = [np.flatnonzero(slab.any(axis=axes)) for axes in ((0, 2), (0, 1))]
    return (slice(rows[0], rows[-1] + 1),
            *(slice(hits[0], hits[-1] + 1) for hits in columns))


def segment_volume(
    image: np.ndarray,
    probabilities_fn: ProbabilitiesFn,
    patch_size: Sequence[int],
    config: InferenceConfig,
    num_classes: int,
    keep_probabilities: bool = False,
    progress: ProgressFn | None = None,
) -> Segmentation:
    """Segments a preprocessed volume: sliding window, blending, mirroring, argmax, clean-up.

    Args:
        image: ``(z, y, x)`` float32 preprocessed volume (canonical LPS, z-scored).
        probabilities_fn: windows ``(b, pz, py, px, 1)`` -> probabilities ``(b, pz, py, px, C)``,
            e.g. ``lambda w: stream_probabilities(w, modality)``.
        patch_size: window shape ``(pz, py, px)`` (the training patch size).
        config: the :class:`InferenceConfig`.
        num_classes: ``C``.
        keep_probabilities: also return the blended probabilities (the host then holds the
            whole ``(z, y, x, C)`` float32 volume; without them it holds one patch-deep
            slab of it at a time, :func:`~dltk_mm.inference.sliding_window.blended_slabs`).
        progress: called as ``progress(windows_done, windows_total)`` after every batch.

    Returns:
        The :class:`Segmentation`.

    Raises:
        ValueError: if ``probabilities_fn`` returns the wrong shape.
    """
    function = probabilities_fn
    if config.mirror:
        pairs = mirror_swap_pairs(num_classes) if config.mirror_swap else ()
        function = mirrored(probabilities_fn, pairs, axes=config.mirror_axes)
    counted = {"total": 0}

    def counting_progress(done: int, total: int) -> None:
        counted["total"] = total
        if progress is not None:
            progress(done, total)

    image = np.asarray(image)
    labels = np.empty(image.shape[:3], dtype=np.uint8)
    probabilities = None
    # Without the probabilities, slab by slab: the host never holds the whole (z, y, x, C).
    for start, slab in blended_slabs(
            image, function, patch_size=patch_size, overlap=config.overlap,
            batch_size=config.batch_size, weighting=config.weighting, num_classes=num_classes,
            progress=counting_progress, whole=keep_probabilities):
        _argmax_into(slab, labels[start : start + slab.shape[0]])
        if keep_probabilities:
            probabilities = np.ascontiguousarray(slab)
    if config.post_processing:
        labels = keep_components(labels, num_classes, largest=config.largest_component,
                                 min_voxels=config.min_component_voxels)
    return Segmentation(labels, probabilities, counted["total"])


def _argmax_into(probabilities: np.ndarray, labels: np.ndarray) -> None:
    """``labels[...] = argmax(probabilities, -1)``, a few rows at a time (no int64 volume)."""
    rows = max(1, _CHUNK_VOXELS // max(1, int(np.prod(probabilities.shape[1:3]))))
    for row in range(0, probabilities.shape[0], rows):
        labels[row : row + rows] = np.argmax(probabilities[row : row + rows], axis=-1)


__all__ = [
    "LEFT_RIGHT_AXIS",
    "MIRROR_AXES",
    "WEIGHTINGS",
    "InferenceConfig",
    "Segmentation",
    "StreamProbabilities",
    "keep_components",
    "mirror_swap_pairs",
    "mirrored",
    "segment_volume",
]
