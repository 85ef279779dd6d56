"""The one segmentation path: a preprocessed volume -> labels (and probabilities).

Every caller segments through :func:`segment_volume`: validation during training,
``dltk-mm-predict``, the benchmark's evaluation and the SavedModel export. It runs, in order:

1. the sliding window (:func:`~dltk_mm.inference.sliding_window.sliding_window_inference`):
   windows of the training patch size with ``overlap``, batched, blended ``"uniform"`` (the
   paper: a plain average of overlapping probabilities) or ``"gaussian"`` (centre-weighted);
2. optional test-time mirroring (:func:`mirrored`): every window is also segmented flipped along
   each combination of the three axes, each output is flipped back and the probabilities are
   averaged; a flip of the x axis (the patient's left-right axis of the LPS-canonical ``(z, y, x)``
   array) exchanges the right and left kidney channels
   (:data:`~dltk_mm.core.label_map.MIRROR_SWAP_PAIRS`);
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
from dltk_mm.inference.sliding_window import sliding_window_inference

ProbabilitiesFn = Callable[[np.ndarray], np.ndarray]
ProgressFn = Callable[[int, int], None]

#: Window blendings: ``"uniform"`` (the paper) or ``"gaussian"``.
WEIGHTINGS: tuple[str, ...] = ("uniform", "gaussian")
#: Axes of a ``(z, y, x)`` volume that test-time mirroring flips (every combination of them).
MIRROR_AXES: tuple[int, ...] = (0, 1, 2)
#: The patient's left-right axis of an LPS-canonical ``(z, y, x)`` volume.
LEFT_RIGHT_AXIS: int = 2


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    """How a volume is segmented (defaults: the paper's protocol, docs/paper.md, section 6).

    Attributes:
        overlap: Fraction of a window shared with its neighbour along each axis, in [0, 1)
            (the authors' code: 0.5 in validation, 0.0 at test time).
        weighting: Blending of overlapping windows: uniform (a plain average, the paper) or
            gaussian (centre-weighted).
        batch_size: Windows per network call.
        mirror: Test-time mirroring: average the probabilities of the 8 flips of the three
            axes (a left-right flip swaps the right/left kidney channels); 8 times the work.
            Off in the paper.
        largest_component: Keep only the largest connected component of each organ. Off in
            the paper.
        min_component_voxels: Remove connected components of an organ smaller than this many
            voxels of the preprocessed grid (0: keep all, the paper).
    """

    overlap: float = 0.5
    weighting: str = "uniform"
    batch_size: int = 4
    mirror: bool = False
    largest_component: bool = False
    min_component_voxels: int = 0

    def __post_init__(self) -> None:
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
        """The fields as a JSON-serialisable mapping."""
        return dataclasses.asdict(self)

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
            total = output.copy() if total is None else total + output
        return total / np.float32(len(flips))

    return mirrored_probabilities


def keep_components(labels: np.ndarray, num_classes: int, largest: bool = False,
                    min_voxels: int = 0) -> np.ndarray:
    """Per organ, removes small or non-largest connected components (they become background).

    Components are face-connected (6-neighbourhood), found with SimpleITK's
    ``ConnectedComponent`` and ordered by size with ``RelabelComponent``.

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
        if not mask.any():
            continue
        components = sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)),
                                             False)
        ranked = sitk.GetArrayFromImage(sitk.RelabelComponent(
            components, minimumObjectSize=max(int(min_voxels), 0), sortByObjectSize=True))
        keep = ranked == 1 if largest else ranked > 0
        result[mask & ~keep] = 0
    return result


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
        keep_probabilities: also return the blended probabilities.
        progress: called as ``progress(windows_done, windows_total)`` after every batch.

    Returns:
        The :class:`Segmentation`.

    Raises:
        ValueError: if ``probabilities_fn`` returns the wrong shape.
    """
    function = probabilities_fn
    if config.mirror:
        function = mirrored(probabilities_fn, mirror_swap_pairs(num_classes))
    counted = {"total": 0}

    def counting_progress(done: int, total: int) -> None:
        counted["total"] = total
        if progress is not None:
            progress(done, total)

    probabilities = sliding_window_inference(
        image, function, patch_size=patch_size, overlap=config.overlap,
        batch_size=config.batch_size, weighting=config.weighting, num_classes=num_classes,
        progress=counting_progress,
    )
    labels = np.argmax(probabilities, axis=-1).astype(np.uint8)
    if config.post_processing:
        labels = keep_components(labels, num_classes, largest=config.largest_component,
                                 min_voxels=config.min_component_voxels)
    return Segmentation(labels, probabilities if keep_probabilities else None, counted["total"])


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
