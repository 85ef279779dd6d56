"""What a training run reports: a validation pass, the run about to start, and its outcome.

These types are the vocabulary shared by the loop (:mod:`dltk_mm.training.trainer`), validation
(:mod:`dltk_mm.training.validation`) and the hooks (:mod:`dltk_mm.training.callbacks`); they
import nothing of those modules, so that every arrow points here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - imports for type hints only
    from dltk_mm.networks.multistream import MultiStreamModel
    from dltk_mm.training.config import TrainConfig


def nanmean(values: Sequence[float | None]) -> float:
    """Mean of the finite values (None and NaN ignored); NaN when there is none."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


@dataclasses.dataclass
class ValidationResult:
    """Sliding-window Dice of the held-out volumes.

    Attributes:
        step: the training step.
        organs: foreground class names.
        per_volume: one dict per volume: ``subject_id``, ``modality``, ``dice`` (list per organ;
            NaN where the organ is in neither prediction nor truth).
        dice: modality -> organ -> mean Dice over that modality's volumes.
        mean: mean of ``dice`` over organs and modalities (NaN entries ignored).
    """

    step: int
    organs: tuple[str, ...]
    per_volume: list[dict[str, Any]]
    dice: dict[str, dict[str, float]]
    mean: float

    def scores(self) -> dict[str, float]:
        """Flat scores: ``val_dice_<modality>_<organ>``, ``val_dice_<modality>_mean``,
        ``val_dice_mean``."""
        scores: dict[str, float] = {}
        for modality, organs in self.dice.items():
            for organ, value in organs.items():
                scores[f"val_dice_{modality}_{organ}"] = value
            scores[f"val_dice_{modality}_mean"] = nanmean(list(organs.values()))
        scores["val_dice_mean"] = self.mean
        return scores


@dataclasses.dataclass
class TrainingInfo:
    """What a run is about to do (given to ``TrainingCallback.on_train_begin``).

    Attributes:
        config: the configuration.
        model_dir: the model folder.
        model: the compiled model.
        num_parameters: trainable parameters (shared layers counted once).
        train_subjects: modality -> training subject ids.
        validation_subjects: modality -> held-out subject ids.
        initial_step: the step training starts from (0, or the restored checkpoint's).
        resumed_from: the restored checkpoint's prefix, or None.
        pipeline_restored: whether the input pipeline's position was restored too.
        cache_dir: the preprocessing cache.
        moved_previous: where restart=True moved an earlier run, or None.
        batches_per_step: batches one step trains: 1, or one per modality for ``individual``
            (every stream updated once per step with its own optimizer; see
            :mod:`dltk_mm.training.trainer`).
    """

    config: TrainConfig
    model_dir: Path
    model: MultiStreamModel
    num_parameters: int
    train_subjects: dict[str, list[str]]
    validation_subjects: dict[str, list[str]]
    initial_step: int
    resumed_from: str | None
    pipeline_restored: bool
    cache_dir: Path
    moved_previous: Path | None = None
    batches_per_step: int = 1


@dataclasses.dataclass
class TrainResult:
    """The outcome of :func:`dltk_mm.training.train`.

    Attributes:
        model_dir: the model folder.
        step: the step reached (``steps`` unless interrupted).
        steps: the target number of steps.
        initial_step: the step training started from.
        resumed_from: the restored checkpoint's prefix, or None.
        interrupted_by: the signal number (SIGINT 2, SIGTERM 15) that stopped the run, or None.
        checkpoint: the newest checkpoint's prefix.
        best: contents of ``best/best.json`` (step, score, scores) or None.
        last_validation: the last validation of this call, or None.
        elapsed_s: wall time of this call.
    """

    model_dir: Path
    step: int
    steps: int
    initial_step: int
    resumed_from: str | None
    interrupted_by: int | None
    checkpoint: str | None
    best: dict[str, Any] | None
    last_validation: ValidationResult | None
    elapsed_s: float

    @property
    def completed(self) -> bool:
        """Whether all ``steps`` were trained."""
        return self.step >= self.steps


__all__ = ["TrainResult", "TrainingInfo", "ValidationResult", "nanmean"]
