"""Validation during training: the held-out volumes segmented by the one segmentation path and
scored with the hard Dice per organ and modality.

Each volume is segmented with its modality's stream by
:func:`dltk_mm.inference.segment.segment_volume` (windows of the training patch size, blending,
argmax; docs/paper.md, sections 4.5 and 6), then compared with its label on the preprocessed grid by
:func:`dltk_mm.core.metrics.dice_per_class`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dltk_mm.core.label_map import organ_names
from dltk_mm.core.metrics import dice_per_class
from dltk_mm.inference.segment import InferenceConfig, StreamProbabilities, segment_volume
from dltk_mm.io.preprocessing import PreprocessedVolume
from dltk_mm.networks.multistream import MultiStreamModel
from dltk_mm.training.results import ValidationResult, nanmean


def _score_volume(volume: PreprocessedVolume, modality: str,
                  probabilities: StreamProbabilities, patch_size: Sequence[int],
                  inference: InferenceConfig, num_classes: int) -> np.ndarray:
    segmentation = segment_volume(
        volume.image, lambda windows: probabilities(windows, modality),
        patch_size=patch_size, config=inference, num_classes=num_classes,
    )
    return dice_per_class(segmentation.labels, volume.label, num_classes=num_classes)


def validate(
    model: MultiStreamModel,
    volumes: Mapping[str, Sequence[PreprocessedVolume]],
    patch_size: Sequence[int],
    inference: InferenceConfig | None = None,
    step: int = 0,
    probabilities: StreamProbabilities | None = None,
) -> ValidationResult:
    """Hard Dice per organ and modality of the segmentations of held-out volumes.

    Args:
        model: the network.
        volumes: modality -> preprocessed volumes with labels.
        patch_size: window shape (the training patch size).
        inference: how to segment (default: :class:`InferenceConfig`, the paper's protocol).
        step: training step (recorded in the result).
        probabilities: the model's :class:`StreamProbabilities`; pass the same object at every
            validation of a run so that each stream's function is traced once.

    Returns:
        The :class:`ValidationResult`.
    """
    inference = InferenceConfig() if inference is None else inference
    probabilities = StreamProbabilities(model) if probabilities is None else probabilities
    organs = organ_names(model.num_classes)
    per_volume: list[dict[str, Any]] = []
    dice: dict[str, dict[str, float]] = {}
    for modality in model.modalities:
        scores = []
        for volume in volumes.get(modality, ()):
            values = _score_volume(volume, modality, probabilities, patch_size, inference,
                                   model.num_classes)
            scores.append(values)
            per_volume.append({"subject_id": volume.subject_id, "modality": modality,
                               "dice": [float(v) for v in values]})
        if scores:
            stacked = np.asarray(scores, dtype=np.float64)
            dice[modality] = {organ: nanmean(list(stacked[:, i]))
                              for i, organ in enumerate(organs)}
    mean = nanmean([v for organs_ in dice.values() for v in organs_.values()])
    return ValidationResult(step=step, organs=organs, per_volume=per_volume, dice=dice, mean=mean)


__all__ = ["validate"]
