"""The evaluation of one trained run on its held-out fold (Dice, HD95, ASSD per organ).

Each held-out volume of each modality (the ``validation`` rows of the run's ``split.csv``) is
segmented on its preprocessed grid with that modality's stream through the one segmentation path
(:func:`dltk_mm.inference.segment_volume`: sliding window of the training patch size, blending,
argmax; docs/paper.md, section 6) and compared with its label; distances use the preprocessed
spacing. The predictions are kept in ``<model_dir>/predictions/<modality>_<subject>.npz`` for the
figures.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from dltk_mm.benchmark.plan import BenchmarkSettings, RunSpec
from dltk_mm.benchmark.tables import RUN_RESULT_COLUMNS
from dltk_mm.core.label_map import organ_names
from dltk_mm.core.metrics import dice_per_class, organ_metrics
from dltk_mm.errors import InputDataError
from dltk_mm.inference import StreamProbabilities, segment_volume
from dltk_mm.io.files import atomic_write
from dltk_mm.io.manifest import load_manifest
from dltk_mm.io.preprocessing import PreprocessedVolume, preprocess_manifest
from dltk_mm.training import TrainConfig, load_trained_model, read_split

#: Folder of a run's predictions (``<modality>_<subject>.npz``, array ``prediction``).
PREDICTIONS_DIR = "predictions"


def prediction_file(model_dir: str | Path, modality: str, subject_id: str) -> Path:
    """Where the benchmark keeps a run's prediction of one held-out volume."""
    return Path(model_dir) / PREDICTIONS_DIR / f"{modality}_{subject_id}.npz"


def held_out_volumes(config: TrainConfig, model_dir: Path, cache_dir: Path
                     ) -> list[PreprocessedVolume]:
    """The run's held-out volumes (its split's ``validation`` rows), preprocessed as it was.

    Raises:
        InputDataError: a held-out subject that is no longer in the manifest.
    """
    split = read_split(model_dir)
    held_out = split[split["role"] == "validation"]
    wanted = {(str(s), str(m)) for s, m in zip(held_out["subject_id"], held_out["modality"],
                                                strict=True)}
    manifest = load_manifest(config.manifest)
    keys = list(zip(manifest["subject_id"].astype(str), manifest["modality"], strict=True))
    rows = manifest[[key in wanted for key in keys]]
    missing = sorted(wanted - set(keys))
    if missing:
        raise InputDataError(
            f"manifest {config.manifest} lacks the held-out subject(s) {missing} of the run in "
            f"{model_dir}; restore those rows or use another --results_dir")
    return preprocess_manifest(rows, config.preprocessing, cache_dir)


def _save_prediction(path: Path, labels: np.ndarray) -> None:
    def write(target: Path) -> None:
        with open(target, "wb") as stream:
            np.savez_compressed(stream, prediction=labels)

    atomic_write(path, write)


def _scores(prediction: np.ndarray, volume: PreprocessedVolume, num_classes: int,
            surface_metrics: bool) -> dict[str, dict[str, float]]:
    organs = organ_names(num_classes)
    if surface_metrics:
        return organ_metrics(prediction, volume.label, volume.geometry.spacing,
                             class_names=("background", *organs))
    dice = dice_per_class(prediction, volume.label, num_classes=num_classes,
                          include_background=True)
    return {organ: {"dice": float(dice[i + 1]), "hd95_mm": math.nan, "assd_mm": math.nan}
            for i, organ in enumerate(organs)}


def evaluate_run(spec: RunSpec, settings: BenchmarkSettings) -> pd.DataFrame:
    """Segments the run's held-out subjects and scores them (see the module docstring).

    Returns:
        One row per subject and organ (:data:`~dltk_mm.benchmark.tables.RUN_RESULT_COLUMNS`).
    """
    import keras

    config = spec.config
    num_classes = config.network.num_classes
    loaded = load_trained_model(spec.model_dir, weights=settings.weights)
    probabilities = StreamProbabilities(loaded.model)
    (spec.model_dir / PREDICTIONS_DIR).mkdir(exist_ok=True)
    rows = []
    for volume in held_out_volumes(config, spec.model_dir, settings.cache_dir):
        segmentation = segment_volume(
            volume.image, lambda windows, m=volume.modality: probabilities(windows, m),
            patch_size=config.pipeline.patch_size, config=spec.inference, num_classes=num_classes)
        _save_prediction(prediction_file(spec.model_dir, volume.modality, volume.subject_id),
                         segmentation.labels)
        scores = _scores(segmentation.labels, volume, num_classes, settings.surface_metrics)
        for organ, values in scores.items():
            rows.append({"scheme": spec.scheme, "fold": spec.fold, "seed": spec.seed,
                         "subject_id": volume.subject_id, "modality": volume.modality,
                         "organ": organ, "dice": values["dice"],
                         "hd95_mm": values["hd95_mm"], "assd_mm": values["assd_mm"]})
    keras.backend.clear_session()
    return pd.DataFrame(rows, columns=list(RUN_RESULT_COLUMNS))
