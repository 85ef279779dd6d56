"""Training checkpoints (model, optimizer slots, step, input-pipeline position) and the best model.

Layout inside a model folder:

* ``checkpoints/ckpt-<step>.{index,data-*}`` and ``checkpoints/checkpoint``: the most recent
  training states (``tf.train.Checkpoint`` of every model variable - batch-norm statistics
  included, see :func:`model_trackable` -, the Adam optimizer with its iteration counter and slot
  variables - or, for a model trained with one optimizer per stream (``individual``), every
  stream's Adam under ``optimizer/streams/<modality>``, see :func:`optimizer_trackable` -, the step
  counter and, optionally, the tf.data iterator), managed by a ``tf.train.CheckpointManager`` that
  keeps a few.
* ``best/model.{index,data-*}`` and ``best/best.json``: the weights with the best mean validation
  Dice (over organs and modalities), with their step and scores.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeAlias

import keras
import tensorflow as tf
from absl import logging

from dltk_mm.errors import ConfigurationError

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_NAME = "ckpt"
BEST_DIR = "best"
BEST_PREFIX = "model"
BEST_JSON = "best.json"

#: One optimizer, or one per stream (modality -> optimizer).
Optimizers: TypeAlias = "keras.optimizers.Optimizer | Mapping[str, keras.optimizers.Optimizer]"


def latest_checkpoint(model_dir: str | os.PathLike) -> str | None:
    """Prefix of the newest training checkpoint in ``model_dir/checkpoints`` (None if none)."""
    directory = Path(model_dir) / CHECKPOINT_DIR
    if not directory.is_dir():
        return None
    return tf.train.latest_checkpoint(str(directory))


def checkpoint_step(prefix: str) -> int:
    """The step stored in a training checkpoint (read from the file, no model needed)."""
    reader = tf.train.load_checkpoint(prefix)
    for key in reader.get_variable_to_shape_map():
        if key.startswith("step/"):
            return int(reader.get_tensor(key))
    raise ConfigurationError(f"{prefix}: not a dltk_mm training checkpoint (no step counter)")


def model_trackable(model: keras.Model) -> tf.Module | keras.Model:
    """The object saved as ``model`` in checkpoints: every variable of the network.

    For a :class:`~dltk_mm.networks.MultiStreamModel` its
    :attr:`~dltk_mm.networks.MultiStreamModel.checkpoint_state`: the streams (functional models;
    shared layers are the same objects and are saved once) without the optimizer and metrics the
    model itself also tracks, so that weight files do not depend on whether the model was
    compiled. Any other Keras model is used as it is.
    """
    return getattr(model, "checkpoint_state", model)


def optimizer_trackable(optimizer: Optimizers) -> Any:
    """The object saved as ``optimizer`` in checkpoints.

    A single optimizer is saved as it is (keys ``optimizer/...``); one optimizer per stream
    (a mapping modality -> optimizer) as a ``tf.Module`` whose child ``streams`` holds them by
    modality (keys ``optimizer/streams/<modality>/...``), each with its own iteration count.
    """
    if not isinstance(optimizer, Mapping):
        return optimizer
    holder = tf.Module(name="stream_optimizers")
    holder.streams = {modality: optimizer[modality] for modality in sorted(optimizer)}
    return holder


def _has_stream_optimizers(prefix: str) -> bool | None:
    """Whether a checkpoint holds one optimizer per stream (None: unreadable or no optimizer)."""
    try:
        keys = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError):
        return None
    optimizer_keys = [key for key in keys if key.startswith("optimizer/")]
    if not optimizer_keys:
        return None
    return any(key.startswith("optimizer/streams/") for key in optimizer_keys)


def _trackables(model: keras.Model, optimizer: Optimizers | None,
                step: tf.Variable | None, iterator: Any | None) -> dict[str, Any]:
    objects: dict[str, Any] = {"model": model_trackable(model)}
    if optimizer is not None:
        objects["optimizer"] = optimizer_trackable(optimizer)
    if step is not None:
        objects["step"] = step
    if iterator is not None:
        objects["iterator"] = iterator
    return objects


def restore_checkpoint(
    prefix: str,
    model: keras.Model,
    optimizer: Optimizers | None = None,
    iterator: Any | None = None,
) -> int:
    """Restores a training checkpoint into a built model (and optimizer, iterator) in place.

    Every variable of ``model`` (and of ``optimizer``, whose slot variables must already exist,
    e.g. after ``model.compile``) must be found in the checkpoint; entries for objects that are
    not passed (an optimizer or iterator) are ignored.

    Args:
        prefix: checkpoint prefix, e.g. ``model_dir/checkpoints/ckpt-500``.
        model: the model, built with the checkpoint's configuration.
        optimizer: the optimizer to restore (iterations and Adam moments), a mapping modality ->
            optimizer for a model trained with one optimizer per stream, or None.
        iterator: a ``tf.data`` iterator of the same pipeline to restore, or None.

    Returns:
        The training step stored in the checkpoint.

    Raises:
        ConfigurationError: when the checkpoint does not match the model (another configuration)
            or holds one optimizer where one per stream is expected, or the reverse.
    """
    if optimizer is not None:
        _check_optimizer_layout(prefix, isinstance(optimizer, Mapping))
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    _read_matching(tf.train.Checkpoint(**_trackables(model, optimizer, step, iterator)), prefix,
                   f"checkpoint {prefix} does not match this model/optimizer")
    return int(step.numpy())


def _check_optimizer_layout(prefix: str, per_stream: bool) -> None:
    """Refuses a checkpoint whose optimizer layout (one, or one per stream) is the other one."""
    saved = _has_stream_optimizers(prefix)
    if saved is None or saved == per_stream:
        return
    if per_stream:
        raise ConfigurationError(
            f"checkpoint {prefix} holds one optimizer shared by all streams: it was written by "
            "the 'individual' schedule in which the streams share one Adam and one steps budget "
            "(before every stream had its own); resume it with --individual_shared_steps, or "
            "start over with --restart"
        )
    raise ConfigurationError(
        f"checkpoint {prefix} holds one optimizer per stream ('individual' trained as the "
        "paper did), but this run uses a single optimizer; resume it without "
        "--individual_shared_steps, or start over with --restart"
    )


def restore_weights(prefix: str, model: keras.Model) -> None:
    """Restores only the model's weights from a training checkpoint or a best-model file.

    Raises:
        ConfigurationError: when the checkpoint does not hold every variable of ``model``.
    """
    _read_matching(tf.train.Checkpoint(model=model_trackable(model)), prefix,
                   f"weights {prefix} do not match this model")


def _read_matching(checkpoint: tf.train.Checkpoint, prefix: str, mismatch: str) -> None:
    """Reads ``prefix`` into ``checkpoint``, every one of its objects required to be found there.

    Raises:
        ConfigurationError: ``mismatch`` and the reason, when something is missing or unreadable.
    """
    try:
        status = checkpoint.read(prefix)
        status.expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        raise ConfigurationError(
            f"{mismatch} ({str(error)[:500]}); was it written with another configuration?"
        ) from error


def _has_pipeline_state(prefix: str) -> bool:
    try:
        keys = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError):
        return False
    return any(key.startswith("iterator/") for key in keys)


class TrainingCheckpoint:
    """The training state of a run and its ``CheckpointManager``.

    Args:
        model_dir: the model folder (checkpoints go to ``model_dir/checkpoints``).
        model: the compiled model.
        optimizer: its optimizer (built, so that its slot variables exist), or one per stream
            (modality -> optimizer, see :func:`optimizer_trackable`).
        iterator: the training ``tf.data`` iterator to save with the state, or None.
        max_to_keep: number of recent checkpoints kept.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        model: keras.Model,
        optimizer: Optimizers,
        iterator: Any | None = None,
        max_to_keep: int = 3,
    ) -> None:
        self.directory = Path(model_dir) / CHECKPOINT_DIR
        self.model = model
        self.optimizer = optimizer
        self.iterator = iterator
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.checkpoint = tf.train.Checkpoint(**_trackables(model, optimizer, self.step, iterator))
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, str(self.directory), max_to_keep=max_to_keep,
            checkpoint_name=CHECKPOINT_NAME,
        )
        self.last_saved_step: int | None = None

    @property
    def latest(self) -> str | None:
        """Prefix of the newest checkpoint."""
        return self.manager.latest_checkpoint

    def save(self, step: int) -> str:
        """Writes a checkpoint of the current state as ``ckpt-<step>`` and returns its prefix."""
        self.step.assign(int(step))
        path = self.manager.save(checkpoint_number=int(step))
        self.last_saved_step = int(step)
        logging.info("saved checkpoint %s", path)
        return path

    def restore(self, prefix: str | None = None) -> tuple[int, bool]:
        """Restores ``prefix`` (default: the newest checkpoint).

        If the input pipeline cannot be restored (the checkpoint has none, or it does not fit the
        current pipeline), model and optimizer are still restored and the caller must reposition
        the pipeline itself.

        Returns:
            ``(step, pipeline_restored)``; ``(0, False)`` when there is no checkpoint.
        """
        prefix = prefix or self.latest
        if prefix is None:
            return 0, False
        if self.iterator is not None and not _has_pipeline_state(prefix):
            logging.info("checkpoint %s holds no input-pipeline state", prefix)
        elif self.iterator is not None:
            try:
                step = restore_checkpoint(prefix, self.model, self.optimizer, self.iterator)
            except ConfigurationError as error:
                logging.warning(
                    "could not restore the input pipeline's position from %s (%s); restoring "
                    "model and optimizer only", prefix, str(error)[:300],
                )
            else:
                self.step.assign(step)
                self.last_saved_step = step
                return step, True
        step = restore_checkpoint(prefix, self.model, self.optimizer)
        self.step.assign(step)
        self.last_saved_step = step
        return step, False


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def read_best(model_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The contents of ``best/best.json`` (step, score, scores, weights), or None."""
    path = Path(model_dir) / BEST_DIR / BEST_JSON
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        logging.warning("ignoring unreadable %s (%s)", path, error)
        return None


def best_weights_prefix(model_dir: str | os.PathLike) -> str | None:
    """Prefix of the best model's weights, or None if there are none."""
    prefix = Path(model_dir) / BEST_DIR / BEST_PREFIX
    return str(prefix) if Path(f"{prefix}.index").is_file() else None


def save_best(
    model_dir: str | os.PathLike,
    model: keras.Model,
    step: int,
    score: float,
    scores: Mapping[str, float],
) -> Path:
    """Writes the model's weights and ``best.json`` to ``model_dir/best`` (atomically replaced).

    Args:
        model_dir: the model folder.
        model: the model whose current weights are the best so far.
        step: the training step.
        score: mean validation Dice over organs and modalities.
        scores: every validation score (``val_dice_<modality>_<organ>``, ...).

    Returns:
        The ``best`` folder.
    """
    model_dir = Path(model_dir)
    final = model_dir / BEST_DIR
    staging = model_dir / f".{BEST_DIR}.tmp"
    old = model_dir / f".{BEST_DIR}.old"
    for folder in (staging, old):
        if folder.exists():
            shutil.rmtree(folder)
    staging.mkdir(parents=True)
    tf.train.Checkpoint(model=model_trackable(model)).write(str(staging / BEST_PREFIX))
    info = {
        "step": int(step),
        "score": _finite(score),
        "metric": "mean validation Dice over organs and modalities",
        "scores": {k: _finite(v) for k, v in scores.items()},
        "weights": f"{BEST_DIR}/{BEST_PREFIX}",
    }
    (staging / BEST_JSON).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    if old.exists():
        shutil.rmtree(old)
    logging.info("new best model at step %d (mean validation Dice %.4f) in %s", step, score, final)
    return final
