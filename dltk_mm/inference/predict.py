"""Whole-volume prediction written back in each input's own geometry (``dltk-mm-predict``).

For each input (a volume file or a DICOM series folder, with its modality), :func:`predict_volume`

1. preprocesses it exactly as in training (canonical LPS, ``spacing_mm`` isotropic with linear
   interpolation, CT clip, z-score) but without the organ crop (no label at prediction time: the
   whole volume is segmented);
2. segments it with the one segmentation path, :func:`~dltk_mm.inference.segment.segment_volume`
   (training patch size, 64^3 in the paper; the :class:`~dltk_mm.inference.segment.InferenceConfig`
   sets overlap, blending, batch size, test-time mirroring and post-processing);
3. maps the label map from the preprocessed grid back onto the input's own grid with
   nearest-neighbour resampling (:func:`~dltk_mm.io.preprocessing.restore_to_source`): the output
   has the input's size, spacing, origin and direction. Labels are resampled, never logits.
   Optional probability maps are resampled linearly
   (:func:`~dltk_mm.io.preprocessing.restore_probabilities_to_source`).

Windows over the whole volume with overlapping probabilities averaged follow docs/paper.md,
section 6; writing the result in the input's geometry is dltk_mm's addition.

:func:`predict_files` reads the next input on a second thread while the current one is
segmented, and writes ``<output_dir>/<subject_id>.nii.gz`` (uint8 labels, the name
``dltk-mm-evaluate`` expects) and, if asked, ``<output_dir>/probabilities/<subject_id>.nii.gz``
(:mod:`dltk_mm.inference.outputs`). Before predicting anything it checks every output (never an
input or a file the manifest names, existing outputs only with ``overwrite``, or skipped with
``skip_existing``) and reads every input in full (:func:`~dltk_mm.inference.inputs.check_inputs`).

Memory (host; probabilities are stitched in float32 on the CPU, one batch of windows at a time):
the peak is set by reading and reorienting the input, not by the sliding window. Measured for a
512 x 512 x 300 int16 CT at 0.78 x 0.78 x 1.25 mm (78.6 M voxels; 2 mm grid 200 x 200 x 188 =
7.5 M voxels, 180 windows of 64^3 at 50 % overlap, batch 4), TensorFlow 2.21 on CPU:

* peak resident memory 1.67 GB with a tiny network, of which 0.76 GB is the TensorFlow runtime and
  model before the volume is read: the volume costs ~0.9 GB (float32 copies of the source during
  reading, HU clip and reorientation, 315 MB each; the stitching accumulator of 5 classes plus the
  weight map is 0.18 GB; the restored uint8 label map 79 MB);
* the paper's full-width network (V4, two streams) with a batch of 4 windows of 64^3
  reaches 1.30 GB resident on CPU on its own (runtime, weights, activations), so the whole
  prediction peaks at about 2.2 GB on CPU (on a GPU the activations live in GPU memory);
* ``save_probabilities`` adds the source-grid probability image, ``C x 4`` bytes per source voxel
  (1.6 GB for this CT, 5 classes), plus a transient copy while it is written.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from absl import logging

from dltk_mm.errors import InputDataError
from dltk_mm.inference.inputs import (
    PredictionInput,
    check_inputs,
    inputs_from_manifest,
    inputs_from_paths,
    manifest_files,
    subject_id_from_path,
)
from dltk_mm.inference.outputs import PlannedOutput, plan_outputs, write_probabilities
from dltk_mm.inference.predictor import KerasPredictor, Predictor
from dltk_mm.inference.segment import WEIGHTINGS, InferenceConfig, segment_volume
from dltk_mm.io.preprocessing import (
    PreprocessedVolume,
    PreprocessingConfig,
    preprocess_volume,
    restore_probabilities_to_source,
    restore_to_source,
)
from dltk_mm.io.readers import write_volume


@dataclasses.dataclass
class VolumePrediction:
    """The prediction of one volume.

    Attributes:
        subject_id: the subject.
        modality: its modality.
        labels: uint8 label map on the input's grid.
        probabilities: float32 vector image (C components) on the input's grid, or None.
        preprocessed: the preprocessed input (its ``image`` has been released to save memory).
        num_windows: sliding windows evaluated (per mirroring pass).
    """

    subject_id: str
    modality: str
    labels: sitk.Image
    probabilities: sitk.Image | None
    preprocessed: PreprocessedVolume
    num_windows: int


def prediction_preprocessing(config: PreprocessingConfig) -> PreprocessingConfig:
    """Training's preprocessing without the organ crop (no label at prediction time).

    A model trained on organ-cropped volumes (the paper's protocol, ``crop_to_organs=True``) has
    never seen what lies outside the organ box; a warning says so, since its predictions there are
    unreliable (train with ``--nocrop_to_organs`` for whole-volume prediction).
    """
    if config.crop_to_organs:
        logging.log_first_n(
            logging.WARNING,
            "this model was trained on volumes cropped to the organ box (paper protocol); whole "
            "volumes are predicted, and false positives outside that box are likely. Train with "
            "--nocrop_to_organs for whole-volume prediction.",
            1,
        )
    return dataclasses.replace(config, crop_to_organs=False)


def preprocess_for_prediction(predictor: Predictor, image_path: str | os.PathLike, modality: str,
                              subject_id: str) -> PreprocessedVolume:
    """Reads ``image_path`` and preprocesses it as ``predictor``'s training did, without the crop.

    Raises:
        InputDataError: a missing or unreadable input.
    """
    return preprocess_volume(Path(image_path), None, modality,
                             prediction_preprocessing(predictor.preprocessing), subject_id)


def predict_volume(
    predictor: Predictor,
    image_path: str | os.PathLike,
    modality: str,
    subject_id: str | None = None,
    patch_size: Sequence[int] | None = None,
    config: InferenceConfig | None = None,
    with_probabilities: bool = False,
    progress: Callable[[int, int], None] | None = None,
    volume: PreprocessedVolume | None = None,
) -> VolumePrediction:
    """Segments one volume and maps the labels back onto its own grid.

    Args:
        predictor: the model.
        image_path: a volume file or a DICOM series folder.
        modality: its modality (must be one of ``predictor.modalities``).
        subject_id: name for messages (default: from the file name).
        patch_size: sliding-window size ``(z, y, x)``; default the training patch size.
        config: how to segment (default :class:`InferenceConfig`: the paper's protocol).
        with_probabilities: also restore the class probabilities onto the input's grid.
        progress: called as ``progress(windows_done, windows_total)`` after every batch.
        volume: ``image_path`` already preprocessed by :func:`preprocess_for_prediction` (read
            ahead by :func:`predict_files`); None reads and preprocesses it here.

    Returns:
        The :class:`VolumePrediction`.

    Raises:
        ConfigurationError: unknown modality, bad window size.
        InputDataError: a missing or unreadable input.
    """
    config = InferenceConfig() if config is None else config
    modality = predictor.check_modality(modality)
    patch = predictor.check_patch_size(patch_size)
    image_path = Path(image_path)
    subject_id = subject_id or subject_id_from_path(image_path)
    if volume is None:
        volume = preprocess_for_prediction(predictor, image_path, modality, subject_id)
    logging.info("%s (%s): preprocessed grid %s, window %s, %s", subject_id, modality,
                 volume.image.shape, patch, config)
    segmentation = segment_volume(
        volume.image, lambda windows: predictor.predict_probabilities(windows, modality),
        patch, config, predictor.num_classes, keep_probabilities=with_probabilities,
        progress=progress,
    )
    volume.image = np.empty((0, 0, 0), np.float32)  # release the preprocessed image
    restored_probabilities = None
    if segmentation.probabilities is not None:
        restored_probabilities = restore_probabilities_to_source(segmentation.probabilities,
                                                                 volume)
        segmentation.probabilities = None
    labels = restore_to_source(segmentation.labels, volume)
    return VolumePrediction(subject_id, modality, labels, restored_probabilities, volume,
                            segmentation.num_windows)


@dataclasses.dataclass(frozen=True)
class PredictionRecord:
    """What :func:`predict_files` wrote (or skipped) for one input."""

    subject_id: str
    modality: str
    image: Path
    labels: Path
    probabilities: Path | None
    num_windows: int
    skipped: bool = False


@dataclasses.dataclass(frozen=True)
class ProgressCallbacks:
    """Optional progress reports of :func:`predict_files` (all 1-based indices).

    Attributes:
        checked: ``(done, total)`` after each input is read by the input check.
        subject_start: ``(index, total, input)`` before each volume is predicted.
        windows: ``(windows_done, windows_total)`` after every batch of windows.
        subject_done: ``(index, total, record)`` after each volume is written or skipped.
    """

    checked: Callable[[int, int], None] | None = None
    subject_start: Callable[[int, int, PredictionInput], None] | None = None
    windows: Callable[[int, int], None] | None = None
    subject_done: Callable[[int, int, PredictionRecord], None] | None = None


def _predict_one(predictor: Predictor, plan: PlannedOutput, patch: tuple[int, int, int],
                 config: InferenceConfig, progress: Callable[[int, int], None] | None,
                 volume: PreprocessedVolume) -> PredictionRecord:
    item = plan.input
    prediction = predict_volume(
        predictor, item.image, item.modality, subject_id=item.subject_id, patch_size=patch,
        config=config, with_probabilities=plan.probabilities is not None, progress=progress,
        volume=volume,
    )
    # Probabilities first: a label file present means the subject is complete (--skip_existing).
    if plan.probabilities is not None and prediction.probabilities is not None:
        write_probabilities(prediction.probabilities, plan.probabilities)
    write_volume(prediction.labels, plan.labels)
    logging.info("%s (%s): wrote %s", item.subject_id, item.modality, plan.labels)
    return PredictionRecord(item.subject_id, item.modality, item.image, plan.labels,
                            plan.probabilities, prediction.num_windows)


def predict_files(
    predictor: Predictor,
    inputs: Sequence[PredictionInput],
    output_dir: str | os.PathLike,
    config: InferenceConfig | None = None,
    overwrite: bool = False,
    skip_existing: bool = False,
    save_probabilities: bool = False,
    patch_size: Sequence[int] | None = None,
    protected: Iterable[str | os.PathLike] = (),
    check: bool = True,
    callbacks: ProgressCallbacks | None = None,
) -> list[PredictionRecord]:
    """Predicts every input and writes ``<output_dir>/<subject_id>.nii.gz`` in its own geometry.

    Before the first prediction, every modality is validated, every output checked
    (:func:`~dltk_mm.inference.outputs.plan_outputs`) and, with ``check``, every input to predict
    read in full (:func:`~dltk_mm.inference.inputs.check_inputs`), so a bad input stops the run
    before anything is written.

    Args:
        predictor: the model.
        inputs: the volumes with their modality and subject id.
        output_dir: output folder (created).
        config: how to segment (default :class:`InferenceConfig`: the paper's protocol).
        overwrite: replace existing outputs (inputs and protected files are never replaced).
        skip_existing: keep the subjects whose outputs exist (continue an interrupted run).
        save_probabilities: also write ``probabilities/<subject_id>.nii.gz`` (4-D NIfTI).
        patch_size: sliding-window size; default the training patch size.
        protected: more files never to write over (e.g. every file a manifest names).
        check: read every input before predicting (False when the caller has done it).
        callbacks: progress reports.

    Returns:
        One :class:`PredictionRecord` per input, in order.
    """
    callbacks = callbacks or ProgressCallbacks()
    for item in inputs:
        predictor.check_modality(item.modality)
        if not item.image.exists():
            raise InputDataError(f"{item.image}: input of subject {item.subject_id} not found")
    patch = predictor.check_patch_size(patch_size)
    planned = plan_outputs(inputs, output_dir, overwrite=overwrite,
                           save_probabilities=save_probabilities, skip_existing=skip_existing,
                           protected=protected)
    if check:
        check_inputs([plan.input for plan in planned if not plan.skip], callbacks.checked)
    Path(output_dir).expanduser().mkdir(parents=True, exist_ok=True)
    to_predict = [plan for plan in planned if not plan.skip]
    records = []
    # One reader thread: the next input is read and resampled while the current one is segmented
    # (the host holds at most two preprocessed volumes).
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as reader:
        def read_ahead(position: int) -> concurrent.futures.Future | None:
            if position >= len(to_predict):
                return None
            item = to_predict[position].input
            return reader.submit(preprocess_for_prediction, predictor, item.image,
                                 item.modality, item.subject_id)

        upcoming, position = read_ahead(0), 0
        for index, plan in enumerate(planned, start=1):
            item = plan.input
            if plan.skip:
                record = PredictionRecord(item.subject_id, item.modality, item.image,
                                          plan.labels, plan.probabilities, 0, skipped=True)
                logging.info("%s: %s exists, skipped", item.subject_id, plan.labels)
            else:
                if callbacks.subject_start is not None:
                    callbacks.subject_start(index, len(planned), item)
                volume = upcoming.result()
                position += 1
                upcoming = read_ahead(position)
                record = _predict_one(predictor, plan, patch, config or InferenceConfig(),
                                      callbacks.windows, volume)
            records.append(record)
            if callbacks.subject_done is not None:
                callbacks.subject_done(index, len(planned), record)
    return records


__all__ = [
    "WEIGHTINGS",
    "InferenceConfig",
    "KerasPredictor",
    "PlannedOutput",
    "PredictionInput",
    "PredictionRecord",
    "Predictor",
    "ProgressCallbacks",
    "VolumePrediction",
    "check_inputs",
    "inputs_from_manifest",
    "inputs_from_paths",
    "manifest_files",
    "plan_outputs",
    "predict_files",
    "predict_volume",
    "prediction_preprocessing",
    "preprocess_for_prediction",
    "subject_id_from_path",
    "write_probabilities",
]
