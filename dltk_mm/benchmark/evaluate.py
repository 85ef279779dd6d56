"""The evaluation of one trained run on its held-out fold (Dice, HD95, ASSD per organ).

Each held-out volume of each modality (the ``test`` rows of the run's ``split.csv``, else its
``validation`` rows) is segmented on its preprocessed grid with that modality's stream through the
one segmentation path (:func:`dltk_mm.inference.segment_volume`: sliding window of the training
patch size, blending, argmax; docs/paper.md, section 6), once per evaluation protocol
(:mod:`dltk_mm.benchmark.protocols`; protocols with the same options share one segmentation).
:func:`evaluate_ensemble` scores several runs of one held-out fold as one model the same way
(their probabilities averaged; :mod:`dltk_mm.benchmark.ensemble`).

Scores are computed in the label's own geometry: the predicted labels are mapped back onto the
source image's grid (:func:`dltk_mm.io.preprocessing.restore_to_source`: crop undone,
nearest-neighbour resampling, orientation undone) and compared with the manifest's label file as
training read it (the row's label preset, else the run's; :func:`~dltk_mm.io.preprocessing.
read_source_label`); HD95 and ASSD use the source spacing. So runs preprocessed at different
``--spacing_mm`` are scored on the same voxels and can be compared (the paper's protocol,
docs/paper.md, section 7, names no grid).

The ``paper`` protocol's predictions on the preprocessed grid are kept in
``<model_dir>/predictions/<modality>_<subject>.npz`` for the figures. Each protocol's scores are
cached in the run folder (``evaluation_<protocol>.csv`` and the ``.json`` record of what was
evaluated: options, weights, scoring, the weights' file), so that a rerun, or another protocol,
never recomputes them; a record that differs (other weights, retrained weights, another scoring)
makes the protocol be evaluated again.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
from absl import logging

from dltk_mm.benchmark.plan import BenchmarkSettings, RunSpec
from dltk_mm.benchmark.protocols import (
    ENSEMBLE,
    PAPER,
    file_stem,
    protocol_rank,
    stored_inference,
)
from dltk_mm.benchmark.tables import RUN_RESULT_COLUMNS
from dltk_mm.core.label_map import organ_names
from dltk_mm.core.metrics import dice_per_class, organ_metrics
from dltk_mm.errors import InputDataError
from dltk_mm.inference import InferenceConfig, segment_volume
from dltk_mm.inference.ensemble import EnsemblePredictor
from dltk_mm.inference.predictor import KerasPredictor, Predictor
from dltk_mm.io.files import atomic_write, atomic_write_text
from dltk_mm.io.manifest import load_manifest
from dltk_mm.io.preprocessing import (
    PreprocessedVolume,
    preprocess_manifest,
    read_source_label,
    restore_to_source,
)
from dltk_mm.training import TrainConfig, latest_checkpoint, load_trained_model, read_split
from dltk_mm.training.checkpointing import best_weights_prefix

#: The ``seed`` of an ensemble's rows (the mean of every seed's model, not one seed).
ENSEMBLE_SEED = -1
#: Folder of a run's predictions (``<modality>_<subject>.npz``, array ``prediction``).
PREDICTIONS_DIR = "predictions"
#: Where the scores are computed (recorded with every evaluation: evaluations scored elsewhere,
#: e.g. on the preprocessed grid as before, are redone).
SCORING = "source_geometry"


def prediction_file(model_dir: str | Path, modality: str, subject_id: str) -> Path:
    """Where the benchmark keeps a run's prediction of one held-out volume."""
    return Path(model_dir) / PREDICTIONS_DIR / f"{modality}_{subject_id}.npz"


def protocol_file(model_dir: str | Path, protocol: str) -> Path:
    """The cached scores of one protocol (``evaluation_<protocol>.csv``; ``.json``: its record)."""
    return Path(model_dir) / f"evaluation_{file_stem(protocol)}.csv"


def held_out_volumes(config: TrainConfig, model_dir: Path, cache_dir: Path
                     ) -> list[PreprocessedVolume]:
    """The run's held-out fold, preprocessed as it was: its split's ``test`` rows where it
    validated on subjects of its training rows (``validation_holdout``), else its ``validation``
    rows.

    Raises:
        InputDataError: a held-out subject that is no longer in the manifest.
    """
    wanted = _held_out_rows(read_split(model_dir))
    manifest = load_manifest(config.manifest)
    keys = list(zip(manifest["subject_id"].astype(str), manifest["modality"], strict=True))
    rows = manifest[[key in wanted for key in keys]]
    missing = sorted(wanted - set(keys))
    if missing:
        raise InputDataError(
            f"manifest {config.manifest} lacks the held-out subject(s) {missing} of the run in "
            f"{model_dir}; restore those rows or use another --results_dir")
    return preprocess_manifest(rows, config.preprocessing, cache_dir)


def _held_out_rows(split: pd.DataFrame) -> set[tuple[str, str]]:
    """``(subject_id, modality)`` of a split's held-out fold: its ``test`` rows, else its
    ``validation`` rows."""
    role = "test" if (split["role"] == "test").any() else "validation"
    held_out = split[split["role"] == role]
    return {(str(s), str(m)) for s, m in zip(held_out["subject_id"], held_out["modality"],
                                              strict=True)}


def _save_prediction(path: Path, labels: np.ndarray) -> None:
    def write(target: Path) -> None:
        with open(target, "wb") as stream:
            np.savez_compressed(stream, prediction=labels)

    atomic_write(path, write)


def source_scores(prediction: np.ndarray, volume: PreprocessedVolume, truth: np.ndarray,
                  num_classes: int, surface_metrics: bool = True) -> dict[str, dict[str, float]]:
    """Scores of a prediction on the preprocessed grid, in the label's own geometry.

    Args:
        prediction: labels on ``volume.image``'s grid.
        volume: the preprocessed volume.
        truth: its label on the source grid (:func:`~dltk_mm.io.preprocessing.read_source_label`).
        num_classes: classes including background.
        surface_metrics: also HD95 and ASSD (mm, source spacing); else NaN.

    Returns:
        ``{organ: {"dice", "hd95_mm", "assd_mm"}}``.
    """
    restored = sitk.GetArrayFromImage(restore_to_source(prediction, volume))
    organs = organ_names(num_classes)
    if surface_metrics:
        return organ_metrics(restored, truth, volume.source_geometry.spacing,
                             class_names=("background", *organs))
    dice = dice_per_class(restored, truth, num_classes=num_classes, include_background=True)
    return {organ: {"dice": float(dice[i + 1]), "hd95_mm": math.nan, "assd_mm": math.nan}
            for i, organ in enumerate(organs)}


def _shared(protocols: Mapping[str, InferenceConfig]) -> dict[InferenceConfig, list[str]]:
    """Distinct options -> the protocols that use them (segmented once)."""
    shared: dict[InferenceConfig, list[str]] = {}
    for name, inference in protocols.items():
        shared.setdefault(inference, []).append(name)
    return shared


def evaluate_run(spec: RunSpec, settings: BenchmarkSettings,
                 protocols: Mapping[str, InferenceConfig]) -> pd.DataFrame:
    """Segments the run's held-out subjects under each protocol and scores them (module
    docstring); the ``paper`` protocol's predictions are saved.

    Returns:
        One row per protocol, subject and organ (:data:`~dltk_mm.benchmark.tables.
        RUN_RESULT_COLUMNS`; ``segment_s``: the volume's segmentation time).
    """
    loaded = load_trained_model(spec.model_dir, weights=settings.weights)
    (spec.model_dir / PREDICTIONS_DIR).mkdir(exist_ok=True)
    return _segment_and_score(KerasPredictor.from_loaded(loaded), spec, settings, protocols,
                              seed=spec.seed, predictions_dir=spec.model_dir)


def evaluate_ensemble(members: Sequence[RunSpec], settings: BenchmarkSettings,
                      inference: InferenceConfig) -> pd.DataFrame:
    """Scores the ensemble of ``members`` (runs of one scheme and fold, e.g. its seeds; their
    probabilities averaged, :class:`~dltk_mm.inference.ensemble.EnsemblePredictor`) on their
    common held-out fold, segmented with ``inference``.

    Returns:
        Rows of :data:`~dltk_mm.benchmark.tables.RUN_RESULT_COLUMNS` with protocol
        :data:`~dltk_mm.benchmark.protocols.ENSEMBLE` and seed :data:`ENSEMBLE_SEED`.

    Raises:
        InputDataError: members that held out different subjects.
    """
    held_out = {spec.name: _held_out_rows(read_split(spec.model_dir)) for spec in members}
    first = members[0]
    for spec in members[1:]:
        if held_out[spec.name] != held_out[first.name]:
            raise InputDataError(
                f"runs {first.name} and {spec.name} held out different subjects "
                f"({sorted(held_out[first.name])} and {sorted(held_out[spec.name])}); an "
                "ensemble is scored on one held-out fold")
    predictor = EnsemblePredictor([
        KerasPredictor.from_loaded(load_trained_model(spec.model_dir, weights=settings.weights))
        for spec in members])
    return _segment_and_score(predictor, first, settings, {ENSEMBLE: inference},
                              seed=ENSEMBLE_SEED, predictions_dir=None)


def _segment_and_score(predictor: Predictor, spec: RunSpec, settings: BenchmarkSettings,
                       protocols: Mapping[str, InferenceConfig], seed: int,
                       predictions_dir: Path | None) -> pd.DataFrame:
    """The scores of ``predictor`` on ``spec``'s held-out volumes under each protocol (the
    ``paper`` protocol's labels saved under ``predictions_dir`` when given)."""
    import keras

    config = spec.config
    num_classes = config.network.num_classes
    rows = []
    for volume in held_out_volumes(config, spec.model_dir, settings.cache_dir):
        truth = read_source_label(volume)
        for inference, names in _shared(protocols).items():
            started = time.monotonic()
            segmentation = segment_volume(
                volume.image,
                lambda windows, m=volume.modality: predictor.predict_probabilities(windows, m),
                patch_size=predictor.patch_size, config=inference, num_classes=num_classes)
            seconds = time.monotonic() - started
            if PAPER in names and predictions_dir is not None:
                _save_prediction(prediction_file(predictions_dir, volume.modality,
                                                 volume.subject_id), segmentation.labels)
            scores = source_scores(segmentation.labels, volume, truth, num_classes,
                                   settings.surface_metrics)
            rows += [{"scheme": spec.scheme, "fold": spec.fold, "seed": seed,
                      "protocol": name, "subject_id": volume.subject_id,
                      "modality": volume.modality, "organ": organ, **values,
                      "segment_s": seconds}
                     for name in names for organ, values in scores.items()]
    keras.backend.clear_session()
    frame = pd.DataFrame(rows, columns=list(RUN_RESULT_COLUMNS))
    order = frame["protocol"].map(protocol_rank)
    return frame.iloc[np.argsort(order.to_numpy(), kind="stable")].reset_index(drop=True)


def weights_identity(model_dir: str | Path, weights: str) -> dict[str, Any] | None:
    """The weights file a run is evaluated with (name, modification time), None without one:
    training more (or again) changes it."""
    prefix = best_weights_prefix(model_dir) if weights == "best" else latest_checkpoint(model_dir)
    if prefix is None:
        return None
    index = Path(f"{prefix}.index")
    return {"file": Path(prefix).name,
            "mtime_ns": index.stat().st_mtime_ns if index.is_file() else None}


def evaluation_record(spec: RunSpec, settings: BenchmarkSettings,
                      inference: InferenceConfig) -> dict[str, Any]:
    """What identifies one protocol's scores of a run (compared before reusing them)."""
    return {"inference": inference.to_dict(), "weights": settings.weights, "scoring": SCORING,
            "surface_metrics": settings.surface_metrics,
            "trained": weights_identity(spec.model_dir, settings.weights)}


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        logging.warning("ignoring unreadable %s (%s)", path, error)
        return None


def cached_frame(path: Path, wanted: Mapping[str, Any]) -> pd.DataFrame | None:
    """The scores cached in ``path`` if the ``.json`` record beside it holds ``wanted`` (its
    inference options read as today's, :func:`~dltk_mm.benchmark.protocols.stored_inference`),
    else None."""
    record_path = path.with_suffix(".json")
    if not (path.is_file() and record_path.is_file()):
        return None
    record = _read_record(record_path)
    stored = record.get("record") if isinstance(record, dict) else None
    if not isinstance(stored, dict):
        return None
    stored = {**stored, "inference": stored_inference(stored.get("inference"))}
    if json.loads(json.dumps(stored)) != json.loads(json.dumps(dict(wanted))):  # as stored
        return None
    return pd.read_csv(path, dtype={"subject_id": str})


def cached_scores(spec: RunSpec, settings: BenchmarkSettings, protocol: str,
                  inference: InferenceConfig) -> pd.DataFrame | None:
    """The cached scores of one protocol, or None (none, or evaluated otherwise)."""
    return cached_frame(protocol_file(spec.model_dir, protocol),
                        evaluation_record(spec, settings, inference))


def protocol_scores(spec: RunSpec, settings: BenchmarkSettings,
                    protocols: Mapping[str, InferenceConfig], compute: bool = True
                    ) -> pd.DataFrame:
    """The run's scores under ``protocols``: cached ones reused, the others evaluated (one
    model load for all of them) and cached, unless ``compute`` is False (then left out).

    Returns:
        Rows of :data:`~dltk_mm.benchmark.tables.RUN_RESULT_COLUMNS`, in ``protocols``' order.
    """
    frames: dict[str, pd.DataFrame] = {}
    missing: dict[str, InferenceConfig] = {}
    for name, inference in protocols.items():
        cached = cached_scores(spec, settings, name, inference)
        if cached is None:
            missing[name] = inference
        else:
            frames[name] = cached
    if missing and compute:
        logging.info("%s: evaluating %s", spec.name, ", ".join(missing))
        computed = evaluate_run(spec, settings, missing)
        for name, inference in missing.items():
            frame = computed[computed["protocol"] == name].reset_index(drop=True)
            path = protocol_file(spec.model_dir, name)
            atomic_write(path, lambda p, f=frame: f.to_csv(p, index=False))
            record = {"protocol": name, "run": spec.name,
                      "record": evaluation_record(spec, settings, inference)}
            atomic_write_text(path.with_suffix(".json"), json.dumps(record, indent=1))
            frames[name] = frame
    parts = [frames[name] for name in protocols if name in frames]
    if not parts:
        return pd.DataFrame(columns=list(RUN_RESULT_COLUMNS))
    return pd.concat(parts, ignore_index=True)
