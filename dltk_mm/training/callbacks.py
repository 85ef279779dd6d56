"""Hooks of the training loop, and the built-in ones: history CSV, TensorBoard, signal handling.

:func:`dltk_mm.training.train` calls every :class:`TrainingCallback` it is given at fixed points
(see the methods); they depend on the result types of :mod:`dltk_mm.training.results` only.
Records - the mean training losses since the previous record and, at validation
steps, the validation Dice per organ and modality - go to :class:`HistoryWriter`
(``model_dir/history.csv``) and :class:`TensorBoardWriter` (``model_dir/logs``), which the trainer
always adds. :class:`StopOnSignal` turns SIGINT/SIGTERM into a request to stop after the current
step (the trainer then saves a checkpoint).
"""

from __future__ import annotations

import csv
import math
import os
import signal
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import tensorflow as tf
from absl import logging

from dltk_mm.io.files import atomic_write

if TYPE_CHECKING:  # pragma: no cover - imports for type hints only
    from dltk_mm.io.preprocessing import PreprocessedVolume
    from dltk_mm.training.results import TrainingInfo, TrainResult, ValidationResult


class TrainingCallback:
    """Base class of training hooks; every method does nothing by default."""

    def on_preprocess(self, done: int, total: int, volume: PreprocessedVolume) -> None:
        """After each volume is preprocessed (or read from the cache)."""

    def on_train_begin(self, info: TrainingInfo) -> None:
        """After data, model and (when resuming) the checkpoint are loaded."""

    def on_step_end(self, step: int, logs: Mapping[str, float]) -> None:
        """After each optimiser step; ``logs`` holds running mean losses since the last record."""

    def on_validation_begin(self, step: int, num_volumes: int) -> None:
        """Before a validation pass."""

    def on_validation_end(self, step: int, result: ValidationResult) -> None:
        """After a validation pass."""

    def on_record(self, step: int, record: Mapping[str, float]) -> None:
        """A row of the training history (losses and, at validation steps, Dice scores)."""

    def on_checkpoint(self, step: int, path: str) -> None:
        """After a checkpoint was saved."""

    def on_train_end(self, result: TrainResult) -> None:
        """At the end (also after an interruption)."""


class CallbackList(TrainingCallback):
    """Calls several callbacks in order."""

    def __init__(self, callbacks: Sequence[TrainingCallback]) -> None:
        self.callbacks = list(callbacks)

    def _dispatch(self, hook: str, *args: Any) -> None:
        """Calls the method ``hook`` of every callback, in order, with ``args``."""
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    def on_preprocess(self, done: int, total: int, volume: PreprocessedVolume) -> None:
        self._dispatch("on_preprocess", done, total, volume)

    def on_train_begin(self, info: TrainingInfo) -> None:
        self._dispatch("on_train_begin", info)

    def on_step_end(self, step: int, logs: Mapping[str, float]) -> None:
        self._dispatch("on_step_end", step, logs)

    def on_validation_begin(self, step: int, num_volumes: int) -> None:
        self._dispatch("on_validation_begin", step, num_volumes)

    def on_validation_end(self, step: int, result: ValidationResult) -> None:
        self._dispatch("on_validation_end", step, result)

    def on_record(self, step: int, record: Mapping[str, float]) -> None:
        self._dispatch("on_record", step, record)

    def on_checkpoint(self, step: int, path: str) -> None:
        self._dispatch("on_checkpoint", step, path)

    def on_train_end(self, result: TrainResult) -> None:
        self._dispatch("on_train_end", result)


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


class HistoryWriter(TrainingCallback):
    """Writes ``history.csv``: one row per record, a fixed set of columns.

    On resume, rows after the restored step (steps that will be trained again) are dropped.

    Args:
        path: the CSV file.
        columns: every column after ``step``.
    """

    def __init__(self, path: str | os.PathLike, columns: Sequence[str]) -> None:
        self.path = Path(path)
        self.columns = ["step", *columns]

    def on_train_begin(self, info: TrainingInfo) -> None:
        kept: list[dict[str, str]] = []
        if self.path.is_file():
            with self.path.open(newline="", encoding="utf-8") as handle:
                for row in csv.DictReader(handle):
                    try:
                        if int(row.get("step", "")) <= info.initial_step:
                            kept.append(row)
                    except ValueError:
                        continue
        def write(temporary: Path) -> None:
            with temporary.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, self.columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(kept)

        atomic_write(self.path, write)

    def on_record(self, step: int, record: Mapping[str, float]) -> None:
        row = {"step": str(step)}
        row.update({k: _format(v) for k, v in record.items()})
        with self.path.open("a", newline="", encoding="utf-8") as handle:
            csv.DictWriter(handle, self.columns, extrasaction="ignore").writerow(row)


def _scalar_metadata() -> Any:
    """Summary metadata of a TensorBoard scalar (plugin "scalars", version 0).

    Written with the core ``tf.summary.write`` so that no ``tensorboard`` package is needed to
    produce the logs (``tf.summary.scalar`` lives in that package).
    """
    metadata = tf.compat.v1.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    return metadata


class TensorBoardWriter(TrainingCallback):
    """TensorBoard scalars in ``logs/train`` (losses) and ``logs/validation`` (Dice).

    Event files are written with TensorFlow alone; view them with ``tensorboard --logdir
    <model_dir>/logs`` (TensorBoard itself is not a dependency).

    Loss keys ``loss`` and ``loss_<modality>`` are written as ``loss`` and ``loss/<modality>``;
    validation keys ``val_dice_<modality>_<organ>`` as ``dice/<modality>/<organ>`` (organ
    ``mean``: the modality's mean) and ``val_dice_mean`` as ``dice/mean``.

    Args:
        log_dir: the ``logs`` folder.
        modalities: the model's modalities (to split the key names).
    """

    def __init__(self, log_dir: str | os.PathLike, modalities: Sequence[str]) -> None:
        self.log_dir = Path(log_dir)
        self.modalities = tuple(modalities)
        self._train: Any = None
        self._validation: Any = None

    def on_train_begin(self, info: TrainingInfo) -> None:
        del info
        self._train = tf.summary.create_file_writer(str(self.log_dir / "train"))
        self._validation = tf.summary.create_file_writer(str(self.log_dir / "validation"))

    def _name(self, key: str) -> str:
        if key.startswith("loss_") and key[len("loss_"):] in self.modalities:
            return f"loss/{key[len('loss_'):]}"
        if key.startswith("val_dice_"):
            rest = key[len("val_dice_"):]
            for modality in sorted(self.modalities, key=len, reverse=True):
                if rest.startswith(modality + "_"):
                    return f"dice/{modality}/{rest[len(modality) + 1:]}"
            return f"dice/{rest}"
        return key

    def on_record(self, step: int, record: Mapping[str, float]) -> None:
        if self._train is None:
            return
        for key, value in record.items():
            if value is None or not isinstance(value, float) or math.isnan(value):
                continue
            writer = self._validation if key.startswith("val_") else self._train
            with writer.as_default():
                tf.summary.write(self._name(key), tf.constant(value, tf.float32), step=step,
                                 metadata=_scalar_metadata())
        self._train.flush()
        self._validation.flush()

    def on_train_end(self, result: TrainResult) -> None:
        del result
        self.close()

    def close(self) -> None:
        """Flushes and closes the event files (idempotent)."""
        for writer in (self._train, self._validation):
            if writer is not None:
                writer.flush()
                writer.close()
        self._train = self._validation = None


class StopOnSignal:
    """Context manager: SIGINT/SIGTERM request a graceful stop instead of killing the process.

    The first signal sets :attr:`received` (the trainer finishes the current step, saves a
    checkpoint and returns); a second one restores the previous handlers and re-raises the signal
    (immediate stop: KeyboardInterrupt for SIGINT, termination for SIGTERM). The previous handlers
    are restored on exit. Outside the main thread nothing is installed (Python only delivers
    signals to the main thread).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if self.received is not None:
            logging.warning("second signal %d: stopping immediately", signum)
            self._restore()
            signal.raise_signal(signum)
            return
        self.received = signum
        logging.warning(
            "received %s: stopping after the current step and saving a checkpoint (send it "
            "again to stop immediately)", signal.Signals(signum).name,
        )

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        else:
            logging.warning("training outside the main thread: SIGINT/SIGTERM are not caught")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._restore()
