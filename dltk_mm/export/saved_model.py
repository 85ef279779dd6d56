"""Export of a trained multi-stream model as a TensorFlow SavedModel (``dltk-mm-export``).

The SavedModel is written by ``keras.export.ExportArchive``, so every SavedModel consumer runs
it: ``tf.saved_model.load`` in Python, and the session-based loaders of TensorFlow's own
``saved_model_cli run`` and of TF Serving, which must find each variable in the graph. Per
modality it holds two serving signatures:

* ``serve_<modality>`` (``serve_ct``, ``serve_mr``, ...; ``serving_default`` is the first
  modality's, TF Serving's default): ``images``, a 5-D float32 tensor ``(batch, z, y, x, 1)`` of
  *preprocessed* patches (canonical LPS, isotropic, z-scored: see :mod:`dltk_mm.io.preprocessing`;
  spatial sizes divisible by the network's stride product, 8 for the paper's FCN) ->
  ``{"probabilities": (batch, z, y, x, C)}``: the softmax of that modality's stream, batch norm
  in inference mode (docs/paper.md, section 3.2), computed by the segmentation path's own
  :class:`~dltk_mm.inference.segment.StreamProbabilities`;
* ``segment_<modality>``: a whole volume of raw intensities with its spacing, origin and
  direction -> ``{"labels": uint8 (z, y, x)}`` on the same grid, preprocessing, sliding window,
  mirroring, argmax, post-processing and the way back all in TensorFlow ops
  (:mod:`dltk_mm.export.whole_volume`).

Layout of an export directory::

    <export_dir>/
        saved_model.pb, fingerprint.pb, variables/     TensorFlow SavedModel
        assets/dltk_mm_export.json                      what a predictor needs besides the graph

(see :mod:`dltk_mm.export.metadata`). Before the export is moved into place it is reloaded with
both kinds of loader and every patch signature is checked against the Keras streams; where it
may be written and what ``overwrite`` may replace is :mod:`dltk_mm.export.destination`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

import dltk_mm
from dltk_mm.errors import ConfigurationError
from dltk_mm.export.destination import check_export_destination
from dltk_mm.export.metadata import (
    ExportMetadata,
    is_saved_model_dir,
    metadata_path,
    read_export_metadata,
    segment_signature_name,
    signature_name,
    size_factor_of,
    triple,
)
from dltk_mm.export.whole_volume import segment_endpoint, segment_input_signature
from dltk_mm.inference.ensemble import EnsemblePredictor
from dltk_mm.inference.predictor import KerasPredictor
from dltk_mm.inference.segment import InferenceConfig, StreamProbabilities
from dltk_mm.io.preprocessing import PreprocessingConfig
from dltk_mm.training.loading import load_trained_model

__all__ = [  # is_saved_model_dir, read_export_metadata: for callers of the earlier module
    "VERIFY_TOLERANCE",
    "build_archive",
    "export_model_dir",
    "mean_probabilities",
    "members_of",
    "export_saved_model",
    "is_saved_model_dir",
    "read_export_metadata",
    "verify_export",
]

#: Largest difference of probabilities allowed between the export and the Keras streams.
VERIFY_TOLERANCE = 1e-5


def _patch_endpoint(probabilities: Callable[[tf.Tensor], tf.Tensor]
                    ) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    # A closure (not a default argument: a SavedModel cannot encode those) per stream.
    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"probabilities": probabilities(images)}

    return serve


def members_of(model: Any) -> tuple[Any, ...]:
    """The networks of an export: ``model`` itself, or each model of a sequence (an ensemble).

    Raises:
        ConfigurationError: an empty sequence, or members of different architectures (their
            ``build_config``).
    """
    members = tuple(model) if isinstance(model, (list, tuple)) else (model,)
    if not members:
        raise ConfigurationError("an export needs at least one model")
    first = dict(members[0].build_config)
    for other in members[1:]:
        if dict(other.build_config) != first:
            raise ConfigurationError(
                "an exported ensemble holds networks of one architecture (e.g. the seeds of one "
                f"configuration); got {first} and {dict(other.build_config)}")
    return members


def mean_probabilities(functions: Sequence[Callable[[tf.Tensor], tf.Tensor]]
                       ) -> Callable[[tf.Tensor], tf.Tensor]:
    """The mean of several window -> probabilities functions (the function itself for one): an
    ensemble's streams, as :class:`~dltk_mm.inference.ensemble.EnsemblePredictor` averages."""
    functions = tuple(functions)
    if len(functions) == 1:
        return functions[0]

    def mean(images: tf.Tensor) -> tf.Tensor:
        return tf.add_n([function(images) for function in functions]) / float(len(functions))

    return mean


def build_archive(model: Any, metadata: ExportMetadata) -> keras.export.ExportArchive:
    """An ``ExportArchive`` of ``model``: per stream a ``serve_<modality>`` (patches) and a
    ``segment_<modality>`` (whole volume, :mod:`dltk_mm.export.whole_volume`) endpoint.

    Args:
        model: a :class:`~dltk_mm.networks.MultiStreamModel`, or a sequence of them of one
            architecture: an ensemble, whose endpoints average the members' probabilities.
        metadata: the export's description (preprocessing, patch size, inference settings).
    """
    members = members_of(model)
    streams = [StreamProbabilities(member) for member in members]
    archive = keras.export.ExportArchive()
    for member in members:
        archive.track(member)
    spec = tf.TensorSpec([None, None, None, None, 1], tf.float32, name="images")
    probabilities = {modality: mean_probabilities([s.function(modality) for s in streams])
                     for modality in metadata.modalities}
    for modality in metadata.modalities:
        archive.add_endpoint(signature_name(modality), _patch_endpoint(probabilities[modality]),
                             input_signature=[spec])
    for modality in metadata.modalities:
        segment = segment_endpoint(probabilities[modality], modality, metadata.preprocessing,
                                   metadata.patch_size, metadata.inference,
                                   metadata.num_classes)
        archive.add_endpoint(segment_signature_name(modality), segment,
                             input_signature=segment_input_signature())
    return archive


def _metadata(model: Any, preprocessing: PreprocessingConfig, patch_size: int | Sequence[int],
              inference: InferenceConfig, extra: Mapping[str, Any] | None) -> ExportMetadata:
    build_config = dict(model.build_config)
    factor = size_factor_of(build_config)
    patch = triple(patch_size)
    if any(p < 1 or p % f for p, f in zip(patch, factor, strict=True)):
        raise ConfigurationError(
            f"patch_size {patch} must be positive multiples of the network's stride product "
            f"{factor} (z, y, x)"
        )
    modalities = tuple(model.modalities)
    return ExportMetadata(
        modalities=modalities,
        num_classes=int(model.num_classes),
        patch_size=patch,
        size_factor=factor,
        preprocessing=preprocessing,
        scheme=str(getattr(model, "scheme", build_config.get("scheme", ""))),
        build_config=build_config,
        dltk_mm_version=dltk_mm.__version__,
        signatures={m: signature_name(m) for m in modalities},
        segment_signatures={m: segment_signature_name(m) for m in modalities},
        inference=inference,
        extra=dict(extra or {}),
    )


def export_saved_model(
    model: Any,
    export_dir: str | os.PathLike,
    preprocessing: PreprocessingConfig,
    patch_size: int | Sequence[int] = (64, 64, 64),
    inference: InferenceConfig | None = None,
    overwrite: bool = False,
    verify: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Writes a SavedModel with one ``serve_<modality>`` signature per stream of ``model`` (of
    every member of an ensemble: their probabilities averaged).

    The export is written to a temporary folder beside ``export_dir`` and renamed into place, so
    an interrupted export never leaves a half-written model at ``export_dir``.

    Args:
        model: a :class:`~dltk_mm.networks.MultiStreamModel` (``.streams``, ``.modalities``,
            ``.num_classes``, ``.build_config``), or a sequence of them of one architecture (an
            ensemble).
        export_dir: destination folder (see :func:`check_export_destination`).
        preprocessing: the preprocessing used in training (stored in the metadata).
        patch_size: the training patch size ``(z, y, x)`` (default sliding window at prediction).
        inference: the segmentation settings to record as the export's defaults (default: the
            paper's protocol).
        overwrite: replace an existing dltk_mm export at ``export_dir`` (nothing else).
        verify: reload the written SavedModel with ``tf.saved_model.load`` and with the
            session-based loader of ``saved_model_cli`` / TF Serving, and check that every
            signature reproduces the Keras stream's probabilities on a random patch.
        extra: JSON-serialisable information stored under ``"extra"`` in the metadata.

    Returns:
        The export directory.

    Raises:
        ConfigurationError: a refused ``export_dir``, a bad patch size, or a failed verification.
    """
    export_dir = check_export_destination(export_dir, overwrite)
    members = members_of(model)
    extra = {**dict(extra or {}), **({"ensemble_size": len(members)} if len(members) > 1 else {})}
    metadata = _metadata(members[0], preprocessing, patch_size, inference or InferenceConfig(),
                         extra)
    text = json.dumps(metadata.to_dict(), indent=1, sort_keys=True)
    archive = build_archive(members, metadata)
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{export_dir.name}.", suffix=".tmp",
                                    dir=export_dir.parent))
    try:
        target = staging / "saved_model"
        archive.write_out(str(target), verbose=False)
        (target / "assets").mkdir(exist_ok=True)
        metadata_path(target).write_text(text, encoding="utf-8")
        if verify:
            verify_export(members, target, metadata.patch_size)
        if export_dir.exists():
            os.replace(export_dir, staging / "previous")
        os.replace(target, export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logging.info("exported %s (signatures %s) to %s", metadata.scheme,
                 ", ".join(metadata.signatures.values()), export_dir)
    return export_dir


def _session_probabilities(export_dir: Path, names: Sequence[str], probe: np.ndarray
                           ) -> dict[str, np.ndarray]:
    """Runs signatures as ``saved_model_cli run`` and TF Serving do: a TF1 session loader."""
    outputs = {}
    tf_logger = tf.get_logger()
    level = tf_logger.level
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        tf_logger.setLevel("ERROR")  # the TF1 loader's deprecation notice, not for the user
        try:
            meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"],
                                                              str(export_dir))
        finally:
            tf_logger.setLevel(level)
        for name in names:
            signature = meta_graph.signature_def[name]
            outputs[name] = session.run(signature.outputs["probabilities"].name,
                                        feed_dict={signature.inputs["images"].name: probe})
    return outputs


def verify_export(model: Any, export_dir: str | os.PathLike, patch: Sequence[int],
                  tolerance: float = VERIFY_TOLERANCE) -> None:
    """Checks every patch signature of ``export_dir`` against ``model``'s Keras streams (the
    mean of every member's, for an ensemble).

    Both loaders are checked: ``tf.saved_model.load`` and the session-based one of
    ``saved_model_cli run`` / TF Serving.

    Raises:
        ConfigurationError: a signature differs by more than ``tolerance`` or does not run.
    """
    export_dir = Path(export_dir)
    members = members_of(model)
    modalities = members[0].modalities
    probe = np.random.default_rng(0).standard_normal((1, *patch, 1)).astype(np.float32)
    names = [signature_name(m) for m in modalities]
    loaded = tf.saved_model.load(str(export_dir))
    try:
        session = _session_probabilities(export_dir, names, probe)
    except (tf.errors.OpError, KeyError) as error:
        raise ConfigurationError(
            f"the export does not run under TensorFlow's session-based loader (saved_model_cli, "
            f"TF Serving): {error}"
        ) from error
    for modality, name in zip(modalities, names, strict=True):
        expected = np.mean([np.asarray(member.streams[modality](probe, training=False)[
            "probabilities"]) for member in members], axis=0)
        results = {"tf.saved_model.load": loaded.signatures[name](images=tf.constant(probe)),
                   "session loader": {"probabilities": session[name]}}
        for loader, got in results.items():
            difference = float(np.max(np.abs(np.asarray(got["probabilities"]) - expected)))
            if not difference <= tolerance:
                raise ConfigurationError(
                    f"exported signature {name} ({loader}) differs from the Keras stream by "
                    f"{difference:.3g} (> {tolerance}); the export is not faithful"
                )


def export_model_dir(
    model_dir: str | os.PathLike | Sequence[str | os.PathLike],
    export_dir: str | os.PathLike,
    overwrite: bool = False,
    verify: bool = True,
    weights: str = "auto",
    inference: InferenceConfig | None = None,
) -> Path:
    """Exports a trained model directory (written by dltk_mm training) as a SavedModel; several
    directories export their ensemble (one SavedModel averaging their probabilities).

    The preprocessing settings and patch size come from the (first) model_dir's training
    configuration; an ensemble's runs must read inputs alike
    (:class:`~dltk_mm.inference.ensemble.EnsemblePredictor`) and share one architecture.

    Args:
        model_dir: the training run's folder, or a sequence of them (an ensemble).
        export_dir: destination folder; not inside any model folder (see
            :func:`check_export_destination`).
        overwrite: replace an existing dltk_mm export at ``export_dir``.
        verify: see :func:`export_saved_model`.
        weights: ``"best"``, ``"last"`` or ``"auto"`` (best if the run validated, else last);
            see :func:`dltk_mm.training.loading.load_trained_model`.
        inference: the segmentation defaults to record (default: the (first) run's validation
            settings, ``TrainConfig.inference``).

    Returns:
        The export directory.

    Raises:
        ConfigurationError: a refused ``export_dir``, or runs that cannot form an ensemble.
    """
    folders = ([model_dir] if isinstance(model_dir, (str, os.PathLike)) else list(model_dir))
    folders = [Path(folder).expanduser() for folder in folders]
    export_dir = check_export_destination(export_dir, overwrite)
    loaded = [load_trained_model(folder, weights=weights) for folder in folders]
    for run, folder in zip(loaded, folders, strict=True):
        logging.info("loaded %s weights of %s (step %s)", run.weights, folder, run.step)
    if len(loaded) > 1:
        EnsemblePredictor([KerasPredictor.from_loaded(run) for run in loaded])  # checks them
    config = loaded[0].config
    extra: dict[str, Any] = {"model_dir": str(folders[0].resolve()),
                             "weights": loaded[0].weights, "step": loaded[0].step}
    if len(loaded) > 1:
        extra["members"] = [{"model_dir": str(folder.resolve()), "weights": run.weights,
                             "step": run.step} for folder, run in zip(folders, loaded,
                                                                      strict=True)]
    return export_saved_model(
        [run.model for run in loaded], export_dir, preprocessing=config.preprocessing,
        patch_size=config.pipeline.patch_size, inference=inference or config.inference,
        overwrite=overwrite, verify=verify, extra=extra,
    )
