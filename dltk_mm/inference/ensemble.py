"""Ensembles: several trained models of one configuration segmenting as one.

:class:`EnsemblePredictor` averages the softmax probabilities of its members (e.g. the seeds of
one scheme and fold, or the folds of a cross-validation) window by window, so a volume is
segmented by the one segmentation path (:func:`~dltk_mm.inference.segment.segment_volume`) as if
by a single model: sliding window, blending, mirroring, argmax and post-processing are unchanged.
Blending and mirroring are linear in the probabilities, so the per-window mean equals the mean of
the members' whole-volume probabilities. Beyond the paper (docs/paper.md, section 9); the cost is
one network pass per member and window.

Members must read their inputs the same way: the same modalities, classes and preprocessing (a
model trained on 4 mm volumes cannot share windows with one trained at 2 mm). The sliding window
is the first member's training patch unless the caller gives one; it must be a multiple of every
member's stride product.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import logging

from dltk_mm.errors import ConfigurationError
from dltk_mm.inference.predictor import Predictor


class EnsemblePredictor(Predictor):
    """The mean of several predictors' probabilities.

    Attributes:
        members: the ensembled predictors, in the order given.
    """

    def __init__(self, members: Sequence[Predictor]) -> None:
        """Checks that ``members`` can be averaged and wraps them.

        Args:
            members: one or more predictors with the same modalities, number of classes and
                preprocessing.

        Raises:
            ConfigurationError: no member, or members that differ (naming both sources and what
                differs).
        """
        members = tuple(members)
        if not members:
            raise ConfigurationError("an ensemble needs at least one model")
        first = members[0]
        for other in members[1:]:
            _check_compatible(first, other)
        factor = tuple(math.lcm(*axis) for axis in zip(*(m.size_factor for m in members),
                                                       strict=True))
        patches = {m.patch_size for m in members}
        if len(patches) > 1:
            logging.info("ensemble members were trained on patches %s; windows default to the "
                         "first's, %s", sorted(patches), first.patch_size)
        super().__init__(first.modalities, first.num_classes, first.preprocessing,
                         first.patch_size, factor,
                         source=" + ".join(m.source for m in members))
        self.members = members
        self.check_patch_size(None)  # the first's patch must suit every member's strides

    def _probabilities(self, batch: np.ndarray, modality: str) -> Any:
        total = None
        for member in self.members:
            output = member.predict_probabilities(batch, modality)
            if total is None:
                total = np.array(output, dtype=np.float32)  # a copy: summed in place
            else:
                total += output
        total /= np.float32(len(self.members))
        return total


def _check_compatible(first: Predictor, other: Predictor) -> None:
    """ConfigurationError naming what differs between two members."""
    where = f"ensemble members {first.source} and {other.source}"
    if set(first.modalities) != set(other.modalities):
        raise ConfigurationError(
            f"{where} have streams for different modalities ({list(first.modalities)} and "
            f"{list(other.modalities)}); ensemble models of one configuration")
    if first.num_classes != other.num_classes:
        raise ConfigurationError(
            f"{where} predict {first.num_classes} and {other.num_classes} classes; ensemble "
            "models trained on the same label map")
    if first.preprocessing != other.preprocessing:
        differing = {
            field.name: (getattr(first.preprocessing, field.name),
                         getattr(other.preprocessing, field.name))
            for field in dataclasses.fields(first.preprocessing)
            if getattr(first.preprocessing, field.name) != getattr(other.preprocessing,
                                                                   field.name)}
        raise ConfigurationError(
            f"{where} were trained with different preprocessing {differing}; their windows "
            "cannot be averaged: ensemble models preprocessed alike")


__all__ = ["EnsemblePredictor"]
