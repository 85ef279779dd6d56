"""A trained model as prediction sees it: preprocessing, window size and per-stream probabilities.

A :class:`Predictor` exposes ``modalities``, ``num_classes``, ``preprocessing`` (the training
run's :class:`~dltk_mm.io.preprocessing.PreprocessingConfig`), ``patch_size`` and
``predict_probabilities(batch, modality)``. :class:`KerasPredictor` wraps the Keras streams of a
:class:`~dltk_mm.networks.MultiStreamModel` through
:class:`~dltk_mm.inference.segment.StreamProbabilities`; the SavedModel predictor of an export
lives with the export (:mod:`dltk_mm.export`). Loading a training run's folder is the training
package's job (:func:`dltk_mm.training.load_trained_model`); :meth:`KerasPredictor.from_loaded`
wraps what it returns.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import numpy as np

from dltk_mm.errors import ConfigurationError, InputDataError
from dltk_mm.inference.segment import StreamProbabilities
from dltk_mm.io.preprocessing import PreprocessingConfig


class Predictor(abc.ABC):
    """A trained multi-modal network that maps preprocessed patches to class probabilities.

    Attributes:
        modalities: the model's ordered modalities.
        num_classes: number of classes (background included).
        preprocessing: preprocessing used in training (applied again at prediction time).
        patch_size: training patch size ``(z, y, x)``: the default sliding window.
        size_factor: product of the network's strides per axis; windows must be multiples of it.
        source: where the model was loaded from (for messages).
    """

    def __init__(self, modalities: Sequence[str], num_classes: int,
                 preprocessing: PreprocessingConfig, patch_size: Sequence[int],
                 size_factor: Sequence[int], source: str) -> None:
        self.modalities = tuple(modalities)
        self.num_classes = int(num_classes)
        self.preprocessing = preprocessing
        self.patch_size = _triple(patch_size)
        self.size_factor = tuple(int(f) for f in size_factor)
        self.source = source

    def check_modality(self, modality: str) -> str:
        """The lower-case ``modality`` if the model has a stream for it.

        Raises:
            ConfigurationError: naming the model's modalities.
        """
        name = str(modality).strip().lower()
        if name not in self.modalities:
            raise ConfigurationError(
                f"unknown modality {modality!r}: the model {self.source} has streams for "
                f"{list(self.modalities)}; give one of those"
            )
        return name

    def check_patch_size(self, patch_size: Sequence[int] | None) -> tuple[int, int, int]:
        """The window size to use: ``patch_size`` or the training patch, checked for divisibility.

        Raises:
            ConfigurationError: if a size is not a positive multiple of :attr:`size_factor`.
        """
        patch = self.patch_size if patch_size is None else tuple(int(p) for p in patch_size)
        if len(patch) == 1:
            patch = patch * 3
        if len(patch) != 3 or any(
            p < 1 or p % f for p, f in zip(patch, self.size_factor, strict=True)
        ):
            raise ConfigurationError(
                f"window size {patch} must be 3 positive multiples of the network's stride "
                f"product {self.size_factor} (z, y, x)"
            )
        return patch

    def predict_probabilities(self, batch: np.ndarray, modality: str) -> np.ndarray:
        """Softmax probabilities ``(b, z, y, x, C)`` float32 of preprocessed patches.

        Args:
            batch: ``(b, z, y, x, 1)`` float32 preprocessed patches (sizes multiples of
                :attr:`size_factor`).
            modality: which stream.
        """
        modality = self.check_modality(modality)
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != 5 or batch.shape[-1] != 1:
            raise InputDataError(f"patches must be (batch, z, y, x, 1), got shape {batch.shape}")
        return np.asarray(self._probabilities(batch, modality), dtype=np.float32)

    @abc.abstractmethod
    def _probabilities(self, batch: np.ndarray, modality: str) -> Any:
        """Probabilities of a checked float32 batch (a tensor or array)."""


def _triple(size: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(size, (int, np.integer)):
        return (int(size),) * 3
    values = tuple(int(s) for s in size)
    return values * 3 if len(values) == 1 else values


def _model_size_factor(model: Any) -> tuple[int, ...]:
    # MultiStreamModel keeps its stride product as ``_size_factor`` (no public name yet).
    factor = getattr(model, "size_factor", None)
    return tuple(getattr(model, "_size_factor", (1, 1, 1)) if factor is None else factor)


class KerasPredictor(Predictor):
    """Prediction with the Keras streams of a :class:`~dltk_mm.networks.MultiStreamModel`.

    Each stream runs in one ``tf.function`` traced once for any 5-D input
    (:class:`~dltk_mm.inference.segment.StreamProbabilities`), batch norm in inference mode.
    """

    def __init__(self, model: Any, preprocessing: PreprocessingConfig,
                 patch_size: int | Sequence[int] = (64, 64, 64),
                 source: str = "<in-memory model>") -> None:
        """Wraps ``model``.

        Args:
            model: a :class:`~dltk_mm.networks.MultiStreamModel`.
            preprocessing: preprocessing used in training.
            patch_size: training patch size ``(z, y, x)``.
            source: a description for messages (e.g. the model_dir).
        """
        super().__init__(model.modalities, model.num_classes, preprocessing, patch_size,
                         _model_size_factor(model), source)
        self.model = model
        self.stream_probabilities = StreamProbabilities(model)

    @classmethod
    def from_loaded(cls, loaded: Any) -> KerasPredictor:
        """Wraps a loaded training run (:func:`dltk_mm.training.load_trained_model`'s result).

        Args:
            loaded: has ``model``, ``model_dir`` and ``config`` (a training configuration with
                ``preprocessing`` and ``pipeline.patch_size``).
        """
        config = loaded.config
        return cls(loaded.model, config.preprocessing, config.pipeline.patch_size,
                   source=str(loaded.model_dir))

    def _probabilities(self, batch: np.ndarray, modality: str) -> Any:
        return self.stream_probabilities(batch, modality)


__all__ = ["KerasPredictor", "Predictor"]
