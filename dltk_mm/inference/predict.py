"""Whole-volume prediction written back in each input's own geometry (``dltk-mm-predict``).

One path for every model source: a :class:`Predictor` exposes ``modalities``, ``num_classes``,
``preprocessing`` (the training run's :class:`~dltk_mm.io.preprocessing.PreprocessingConfig`),
``patch_size`` and ``predict_probabilities(batch, modality)``; :class:`KerasPredictor` wraps the
Keras streams of a trained model (a training ``model_dir``), :class:`SavedModelPredictor` the
``serve_<modality>`` signatures of an export (:mod:`dltk_mm.export.saved_model`).

For each input (a volume file or a DICOM series folder, with its modality), :func:`predict_volume`

1. preprocesses it exactly as in training (canonical LPS, ``spacing_mm`` isotropic with linear
   interpolation, CT clip, z-score) but without the organ crop (no label at prediction time: the
   whole volume is segmented);
2. runs :func:`~dltk_mm.inference.sliding_window.sliding_window_inference` (training patch size,
   64^3 in the paper, 50 % overlap, windows batched, uniform or Gaussian weighting; probabilities
   are stitched in float32 on the host);
3. takes the argmax on the preprocessed grid, and maps the label map back onto the input's own grid
   with nearest-neighbour resampling (:func:`~dltk_mm.io.preprocessing.restore_to_source`): the
   output has the input's size, spacing, origin and direction. Labels are resampled, never logits.
   Optional probability maps are resampled linearly
   (:func:`~dltk_mm.io.preprocessing.restore_probabilities_to_source`).

Valindria et al., WACV 2018, section 4 (sliding window over the whole volume, overlapping
probabilities averaged); writing the result in the input's geometry is dltk_mm's addition.

:func:`predict_files` writes ``<output_dir>/<subject_id>.nii.gz`` (uint8 labels, the name
``dltk-mm-evaluate`` expects) and, if asked, ``<output_dir>/probabilities/<subject_id>.nii.gz``: a
4-D float32 NIfTI ``(x, y, z, C)`` of class probabilities on the input's grid (channel c = class
c; the spatial affine equals the input's). It checks every
output before predicting anything: it never writes over an input (nor into a DICOM input folder)
and refuses existing outputs unless ``overwrite=True``.

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

import abc
import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
import tensorflow as tf
from absl import logging

from dltk_mm.errors import ConfigurationError, InputDataError
from dltk_mm.export.saved_model import (
    is_saved_model_dir,
    read_export_metadata,
    size_factor_of,
)
from dltk_mm.inference.sliding_window import count_windows, sliding_window_inference
from dltk_mm.io.manifest import load_manifest
from dltk_mm.io.preprocessing import (
    PreprocessedVolume,
    PreprocessingConfig,
    preprocess_volume,
    restore_probabilities_to_source,
    restore_to_source,
)
from dltk_mm.io.readers import write_volume

WEIGHTINGS = ("uniform", "gaussian")
#: suffixes stripped from an input file name to get its subject id
_VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".dcm")


# ---------------------------------------------------------------------------------------------
# predictors


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
        self.patch_size = tuple(int(p) for p in patch_size)
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
        return np.asarray(self._probabilities(tf.constant(batch), modality), dtype=np.float32)

    @abc.abstractmethod
    def _probabilities(self, batch: tf.Tensor, modality: str) -> Any:
        """Probabilities of a checked batch (a tensor or array)."""


class KerasPredictor(Predictor):
    """Prediction with the Keras streams of a :class:`~dltk_mm.networks.MultiStreamModel`.

    Each stream runs in a ``tf.function`` traced once for any 5-D input, batch norm in inference
    mode.
    """

    def __init__(self, model: Any, preprocessing: PreprocessingConfig,
                 patch_size: Sequence[int] = (64, 64, 64),
                 source: str = "<in-memory model>") -> None:
        """Wraps ``model``.

        Args:
            model: a :class:`~dltk_mm.networks.MultiStreamModel`.
            preprocessing: preprocessing used in training.
            patch_size: training patch size ``(z, y, x)``.
            source: a description for messages (e.g. the model_dir).
        """
        super().__init__(model.modalities, model.num_classes, preprocessing, patch_size,
                         size_factor_of(model.build_config), source)
        self.model = model
        spec = tf.TensorSpec([None, None, None, None, 1], tf.float32)
        self._functions = {
            m: tf.function(_stream_probabilities(model.streams[m]), input_signature=[spec])
            for m in self.modalities
        }

    @classmethod
    def from_model_dir(cls, model_dir: str | os.PathLike, weights: str = "auto"
                       ) -> KerasPredictor:
        """Loads a trained model directory (see :func:`load_model_dir`)."""
        model, preprocessing, patch_size = load_model_dir(model_dir, weights=weights)
        return cls(model, preprocessing, patch_size, source=str(model_dir))

    def _probabilities(self, batch: tf.Tensor, modality: str) -> Any:
        return self._functions[modality](batch)


def _stream_probabilities(stream: Any) -> Callable[[tf.Tensor], tf.Tensor]:
    def probabilities(images: tf.Tensor) -> tf.Tensor:
        return stream(images, training=False)["probabilities"]

    return probabilities


class SavedModelPredictor(Predictor):
    """Prediction with the ``serve_<modality>`` signatures of a dltk_mm SavedModel export."""

    def __init__(self, export_dir: str | os.PathLike) -> None:
        """Loads ``export_dir`` with ``tf.saved_model.load`` and reads its dltk_mm metadata.

        Raises:
            InputDataError: not a SavedModel, no dltk_mm metadata, or a missing signature.
        """
        export_dir = Path(export_dir).expanduser()
        metadata = read_export_metadata(export_dir)
        super().__init__(metadata.modalities, metadata.num_classes, metadata.preprocessing,
                         metadata.patch_size, metadata.size_factor, str(export_dir))
        self.metadata = metadata
        self._loaded = tf.saved_model.load(str(export_dir))
        self._signatures = {}
        for modality in self.modalities:
            name = metadata.signatures.get(modality, f"serve_{modality}")
            if name not in self._loaded.signatures:
                raise InputDataError(
                    f"{export_dir}: the SavedModel has no signature {name!r} for modality "
                    f"{modality!r} (it has {sorted(self._loaded.signatures)}); re-export it with "
                    "dltk-mm-export"
                )
            self._signatures[modality] = self._loaded.signatures[name]

    def _probabilities(self, batch: tf.Tensor, modality: str) -> Any:
        return self._signatures[modality](images=batch)["probabilities"]


def _training_settings(config: Any, model_dir: Path) -> tuple[PreprocessingConfig, tuple[int, ...]]:
    """The preprocessing and patch size from a training configuration (object or mapping)."""

    def field(name: str) -> Any:
        if isinstance(config, dict):
            return config.get(name)
        return getattr(config, name, None)

    preprocessing = field("preprocessing")
    if isinstance(preprocessing, dict):
        preprocessing = PreprocessingConfig.from_dict(preprocessing)
    if not isinstance(preprocessing, PreprocessingConfig):
        raise InputDataError(
            f"{model_dir}: its training configuration has no preprocessing settings; it was not "
            "written by dltk_mm training (or is damaged)"
        )
    patch = field("patch_size")
    if patch is None:  # TrainConfig keeps it in its input-pipeline options
        pipeline = field("pipeline")
        patch = (pipeline.get("patch_size") if isinstance(pipeline, dict)
                 else getattr(pipeline, "patch_size", None))
    if patch is None:
        raise InputDataError(f"{model_dir}: its training configuration has no patch_size")
    patch = (int(patch),) * 3 if isinstance(patch, (int, np.integer)) else tuple(
        int(p) for p in patch)
    return preprocessing, patch


def load_model_dir(model_dir: str | os.PathLike, weights: str = "auto"
                   ) -> tuple[Any, PreprocessingConfig, tuple[int, ...]]:
    """Loads a training run's model and the settings prediction needs.

    Uses :func:`dltk_mm.training.model_dir.load_trained_model` (the training package's loader),
    which rebuilds the network from ``config.json`` and restores its weights.

    Args:
        model_dir: the training run's folder.
        weights: ``"best"`` (best validation Dice), ``"last"`` (newest checkpoint) or ``"auto"``
            (best if the run validated, else last).

    Returns:
        ``(model, preprocessing, patch_size)``.

    Raises:
        InputDataError: a missing model_dir.
        ConfigurationError: no configuration or weights in it (from the training loader).
    """
    model_dir = Path(model_dir).expanduser()
    if not model_dir.is_dir():
        raise InputDataError(f"{model_dir}: model_dir not found; give the training run's folder")
    from dltk_mm.training.model_dir import load_trained_model

    loaded = load_trained_model(model_dir, weights=weights)
    logging.info("loaded %s weights of %s (step %s)", loaded.weights, model_dir, loaded.step)
    preprocessing, patch_size = _training_settings(loaded.config, model_dir)
    return loaded.model, preprocessing, patch_size


def load_predictor(path: str | os.PathLike, weights: str = "auto") -> Predictor:
    """A predictor from a SavedModel export (has ``saved_model.pb``) or a training model_dir.

    Args:
        path: the SavedModel folder or the model_dir.
        weights: for a model_dir, which weights (see :func:`load_model_dir`).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputDataError(f"{path}: model not found; give a model_dir or a SavedModel folder")
    if is_saved_model_dir(path):
        return SavedModelPredictor(path)
    return KerasPredictor.from_model_dir(path, weights=weights)


# ---------------------------------------------------------------------------------------------
# one volume


@dataclasses.dataclass
class VolumePrediction:
    """The prediction of one volume.

    Attributes:
        subject_id: the subject.
        modality: its modality.
        labels: uint8 label map on the input's grid.
        probabilities: float32 vector image (C components) on the input's grid, or None.
        preprocessed: the preprocessed input (its ``image`` has been released to save memory).
        num_windows: sliding windows evaluated.
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


def predict_volume(
    predictor: Predictor,
    image_path: str | os.PathLike,
    modality: str,
    subject_id: str | None = None,
    patch_size: Sequence[int] | None = None,
    overlap: float = 0.5,
    batch_size: int = 4,
    weighting: str = "uniform",
    with_probabilities: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> VolumePrediction:
    """Segments one volume and maps the labels back onto its own grid.

    Args:
        predictor: the model.
        image_path: a volume file or a DICOM series folder.
        modality: its modality (must be one of ``predictor.modalities``).
        subject_id: name for messages (default: from the file name).
        patch_size: sliding-window size ``(z, y, x)``; default the training patch size.
        overlap: window overlap fraction in ``[0, 1)``; 0.5 by default, 0.0 as the authors' test
            time.
        batch_size: windows per network call.
        weighting: ``"uniform"`` (plain average, the paper) or ``"gaussian"``.
        with_probabilities: also restore the class probabilities onto the input's grid.
        progress: called as ``progress(windows_done, windows_total)`` after every batch.

    Returns:
        The :class:`VolumePrediction`.

    Raises:
        ConfigurationError: unknown modality, bad window size / overlap / weighting.
        InputDataError: a missing or unreadable input.
    """
    modality = predictor.check_modality(modality)
    patch = predictor.check_patch_size(patch_size)
    if weighting not in WEIGHTINGS:
        raise ConfigurationError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if not 0.0 <= overlap < 1.0:
        raise ConfigurationError(f"overlap must be in [0, 1), got {overlap}")
    if batch_size < 1:
        raise ConfigurationError(f"batch_size must be positive, got {batch_size}")
    image_path = Path(image_path)
    subject_id = subject_id or subject_id_from_path(image_path)
    volume = preprocess_volume(image_path, None, modality,
                               prediction_preprocessing(predictor.preprocessing), subject_id)
    windows = count_windows(volume.image.shape, patch, overlap)
    logging.info("%s (%s): preprocessed grid %s, %d windows of %s", subject_id, modality,
                 volume.image.shape, windows, patch)
    probabilities = sliding_window_inference(
        volume.image,
        lambda batch: predictor.predict_probabilities(batch, modality),
        patch_size=patch, overlap=overlap, batch_size=batch_size, weighting=weighting,
        num_classes=predictor.num_classes, progress=progress,
    )
    volume.image = np.empty((0, 0, 0), np.float32)  # release the preprocessed image
    labels_zyx = np.argmax(probabilities, axis=-1).astype(np.uint8)
    restored_probabilities = None
    if with_probabilities:
        restored_probabilities = restore_probabilities_to_source(probabilities, volume)
    del probabilities
    labels = restore_to_source(labels_zyx, volume)
    return VolumePrediction(subject_id, modality, labels, restored_probabilities, volume, windows)


# ---------------------------------------------------------------------------------------------
# inputs and outputs


@dataclasses.dataclass(frozen=True)
class PredictionInput:
    """One volume to segment.

    Attributes:
        subject_id: names the output ``<subject_id>.nii.gz``.
        modality: lower-case modality.
        image: a volume file or a DICOM series folder.
    """

    subject_id: str
    modality: str
    image: Path


def subject_id_from_path(path: str | os.PathLike) -> str:
    """The file name without its volume suffix (``case1.nii.gz`` -> ``case1``); a folder's name."""
    path = Path(path)
    name = path.name
    if path.is_dir():
        return name
    lower = name.lower()
    for suffix in _VOLUME_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return path.stem or name


def inputs_from_paths(paths: Sequence[str | os.PathLike], modalities: Sequence[str] | str,
                      subject_ids: Sequence[str] | None = None) -> list[PredictionInput]:
    """Prediction inputs from files / DICOM folders with their modality.

    Args:
        paths: volume files or DICOM series folders.
        modalities: one modality for all, or one per path.
        subject_ids: optional ids, one per path (default: the file names without suffix).

    Raises:
        InputDataError: a missing input.
        ConfigurationError: mismatched list lengths.
    """
    paths = [Path(p).expanduser() for p in paths]
    if isinstance(modalities, str):
        modalities = [modalities] * len(paths)
    modalities = [str(m).strip().lower() for m in modalities]
    if len(modalities) == 1 and len(paths) > 1:
        modalities = modalities * len(paths)
    if len(modalities) != len(paths):
        raise ConfigurationError(
            f"got {len(paths)} input(s) but {len(modalities)} modalities; give one modality for "
            "all inputs or one per input, in the same order"
        )
    if subject_ids is not None and len(subject_ids) != len(paths):
        raise ConfigurationError(
            f"got {len(paths)} input(s) but {len(subject_ids)} subject ids; give one per input")
    inputs = []
    for position, (path, modality) in enumerate(zip(paths, modalities, strict=True)):
        if not path.exists():
            raise InputDataError(f"{path}: input not found; check the path")
        subject = subject_ids[position] if subject_ids is not None else subject_id_from_path(path)
        inputs.append(PredictionInput(str(subject), modality, path))
    return inputs


def inputs_from_manifest(manifest: str | os.PathLike | pd.DataFrame,
                         modality: str | None = None) -> list[PredictionInput]:
    """Prediction inputs from a manifest CSV (labels are not needed and not read).

    Args:
        manifest: a CSV path (validated with :func:`~dltk_mm.io.manifest.load_manifest`) or a
            loaded manifest.
        modality: keep only the rows of this modality.
    """
    frame = manifest if isinstance(manifest, pd.DataFrame) else load_manifest(
        manifest, check_grids=False)
    inputs = [PredictionInput(str(r["subject_id"]), str(r["modality"]).lower(), Path(r["image"]))
              for r in frame.to_dict("records")]
    if modality is not None:
        inputs = [i for i in inputs if i.modality == modality.strip().lower()]
        if not inputs:
            raise InputDataError(f"manifest {manifest}: no row has modality {modality!r}")
    return inputs


@dataclasses.dataclass(frozen=True)
class PlannedOutput:
    """Where the prediction of one input goes."""

    input: PredictionInput
    labels: Path
    probabilities: Path | None


def plan_outputs(inputs: Sequence[PredictionInput], output_dir: str | os.PathLike,
                 overwrite: bool = False, save_probabilities: bool = False) -> list[PlannedOutput]:
    """Output paths of every input, checked before anything is predicted.

    ``<output_dir>/<subject_id>.nii.gz`` and, with ``save_probabilities``,
    ``<output_dir>/probabilities/<subject_id>.nii.gz``.

    Raises:
        ConfigurationError: duplicate subject ids, an output that is an input or lies inside a
            DICOM input folder, or an existing output without ``overwrite``.
    """
    if not inputs:
        raise ConfigurationError("no inputs to predict")
    output_dir = Path(output_dir).expanduser()
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigurationError(
            f"{output_dir}: exists and is not a folder; choose an output folder")
    seen: dict[str, PredictionInput] = {}
    for item in inputs:
        if item.subject_id in seen:
            other = seen[item.subject_id]
            raise ConfigurationError(
                f"subject id {item.subject_id!r} appears twice ({other.image} [{other.modality}] "
                f"and {item.image} [{item.modality}]); outputs are named <subject_id>.nii.gz, so "
                "give unique ids or predict each modality into its own folder (--modality)"
            )
        seen[item.subject_id] = item
    input_files = {i.image.resolve() for i in inputs}
    input_folders = [i.image.resolve() for i in inputs if i.image.is_dir()]
    planned = []
    for item in inputs:
        if not item.subject_id or any(c in item.subject_id for c in "/\\\0") or item.subject_id in (
                ".", ".."):
            raise ConfigurationError(
                f"subject id {item.subject_id!r} of {item.image} cannot name a file; use letters, "
                "digits, '_', '-' and '.'")
        labels = output_dir / f"{item.subject_id}.nii.gz"
        probabilities = (output_dir / "probabilities" / f"{item.subject_id}.nii.gz"
                         if save_probabilities else None)
        for path in (labels, probabilities):
            if path is None:
                continue
            resolved = path.resolve()
            if resolved in input_files:
                raise ConfigurationError(
                    f"{path}: is an input volume; predictions never overwrite inputs: choose "
                    "another --output_dir")
            if any(folder in resolved.parents for folder in input_folders):
                raise ConfigurationError(
                    f"{path}: lies inside the DICOM input folder of a volume; choose an "
                    "--output_dir outside the inputs")
            if path.exists() and not overwrite:
                raise ConfigurationError(
                    f"{path}: already exists; pass --overwrite (overwrite=True) to replace it or "
                    "choose another --output_dir")
        planned.append(PlannedOutput(item, labels, probabilities))
    return planned


def write_probabilities(probabilities: sitk.Image, path: str | os.PathLike) -> Path:
    """Writes a C-component probability image as a 4-D float32 NIfTI ``(x, y, z, C)``.

    The spatial affine is the image's own grid (LPS world coordinates converted to NIfTI's RAS),
    so it equals the input's; the fourth axis is the class. Written atomically.
    """
    import nibabel as nib

    path = Path(path)
    array_zyxc = sitk.GetArrayViewFromImage(probabilities)
    if array_zyxc.ndim == 3:
        array_zyxc = array_zyxc[..., np.newaxis]
    direction = np.asarray(probabilities.GetDirection(), dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(probabilities.GetSpacing(), dtype=float)
    affine[:3, 3] = probabilities.GetOrigin()
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS -> RAS
    nifti = nib.Nifti1Image(np.asarray(array_zyxc, dtype=np.float32).transpose(2, 1, 0, 3),
                            affine)
    nifti.header.set_xyzt_units("mm")
    nifti.set_qform(affine, code=1)
    nifti.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp.nii.gz")
    try:
        nib.save(nifti, str(temporary))
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


@dataclasses.dataclass(frozen=True)
class PredictionRecord:
    """What :func:`predict_files` wrote for one input."""

    subject_id: str
    modality: str
    image: Path
    labels: Path
    probabilities: Path | None
    num_windows: int


def predict_files(
    predictor: Predictor,
    inputs: Sequence[PredictionInput],
    output_dir: str | os.PathLike,
    overwrite: bool = False,
    save_probabilities: bool = False,
    patch_size: Sequence[int] | None = None,
    overlap: float = 0.5,
    batch_size: int = 4,
    weighting: str = "uniform",
    on_subject_start: Callable[[int, int, PredictionInput], None] | None = None,
    on_windows: Callable[[int, int], None] | None = None,
    on_subject_done: Callable[[int, int, PredictionRecord], None] | None = None,
) -> list[PredictionRecord]:
    """Predicts every input and writes ``<output_dir>/<subject_id>.nii.gz`` in its own geometry.

    All outputs are checked (:func:`plan_outputs`) and all modalities validated before the first
    prediction.

    Args:
        predictor: the model.
        inputs: the volumes with their modality and subject id.
        output_dir: output folder (created).
        overwrite: replace existing outputs (inputs are never overwritten).
        save_probabilities: also write ``probabilities/<subject_id>.nii.gz`` (4-D NIfTI).
        patch_size, overlap, batch_size, weighting: see :func:`predict_volume`.
        on_subject_start: ``(index, total, input)`` before each volume (1-based index).
        on_windows: ``(windows_done, windows_total)`` after every batch of windows.
        on_subject_done: ``(index, total, record)`` after each volume is written.

    Returns:
        One :class:`PredictionRecord` per input, in order.
    """
    for item in inputs:
        predictor.check_modality(item.modality)
        if not item.image.exists():
            raise InputDataError(f"{item.image}: input of subject {item.subject_id} not found")
    patch = predictor.check_patch_size(patch_size)
    planned = plan_outputs(inputs, output_dir, overwrite=overwrite,
                           save_probabilities=save_probabilities)
    Path(output_dir).expanduser().mkdir(parents=True, exist_ok=True)
    records = []
    total = len(planned)
    for index, plan in enumerate(planned, start=1):
        item = plan.input
        if on_subject_start is not None:
            on_subject_start(index, total, item)
        prediction = predict_volume(
            predictor, item.image, item.modality, subject_id=item.subject_id, patch_size=patch,
            overlap=overlap, batch_size=batch_size, weighting=weighting,
            with_probabilities=save_probabilities, progress=on_windows,
        )
        write_volume(prediction.labels, plan.labels)
        if plan.probabilities is not None and prediction.probabilities is not None:
            write_probabilities(prediction.probabilities, plan.probabilities)
        record = PredictionRecord(item.subject_id, item.modality, item.image, plan.labels,
                                  plan.probabilities, prediction.num_windows)
        logging.info("%s (%s): wrote %s", item.subject_id, item.modality, plan.labels)
        records.append(record)
        del prediction
        if on_subject_done is not None:
            on_subject_done(index, total, record)
    return records


__all__ = [
    "KerasPredictor",
    "PlannedOutput",
    "PredictionInput",
    "PredictionRecord",
    "Predictor",
    "SavedModelPredictor",
    "VolumePrediction",
    "inputs_from_manifest",
    "inputs_from_paths",
    "load_model_dir",
    "load_predictor",
    "plan_outputs",
    "predict_files",
    "predict_volume",
    "prediction_preprocessing",
    "subject_id_from_path",
    "write_probabilities",
]
