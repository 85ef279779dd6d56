"""Training as a library function: :func:`train` (docs/paper.md, section 4).

One run = one :class:`~dltk_mm.training.config.TrainConfig` in one model folder (layout and
policies: :mod:`dltk_mm.training.model_dir`). The routed step of
:class:`~dltk_mm.networks.MultiStreamModel` trains on the interleaved patch pipeline (one modality
per batch, alternating MR, CT, ...), exactly ``config.steps`` steps.

What a *step* is depends on the scheme (docs/paper.md, section 4.4):

* every scheme but ``individual``: one batch of one modality, one update of the one Adam (whose
  iteration count is the step), so the shared weights get ``steps`` updates and each stream
  about ``steps / len(order)``;
* ``individual`` (the paper: "one network separately for each imaging modality", each trained for
  the full number of steps): one batch of *every* modality, each updating its own stream with that
  stream's own Adam. The step is the number of updates each stream has received, so
  ``--steps=10000`` trains 10000 updates per stream (20000 batches for MR and CT); every Adam's
  iteration count equals the step, as if its stream were trained alone. Intervals (validation,
  checkpoints, records), the resume check, history.csv and the progress count these steps.
  :func:`separate_streams` says which applies; ``individual_shared_steps`` restores the older
  schedule (one Adam, batches alternating through one ``steps`` budget).

Every ``validation_interval`` steps the held-out fold is segmented and scored
(:mod:`dltk_mm.training.validation`); the best weights (mean Dice over organs and modalities) are
kept in ``best/``. Checkpoints are written every ``checkpoint_interval`` steps, at the end, and
when SIGINT/SIGTERM arrive; rerunning into the same folder resumes from the newest checkpoint with
the model, the optimizer (Adam moments and iteration count), the step and the input pipeline's
position restored.

:func:`train` prepares (lock, folder, data, model, restored state) and hands over to
:class:`TrainingLoop`, whose phases are :meth:`~TrainingLoop.step`, :meth:`~TrainingLoop.record`,
:meth:`~TrainingLoop.validate`, :meth:`~TrainingLoop.checkpoint` and the stop test in
:meth:`~TrainingLoop.run`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from dltk_mm.core.label_map import organ_names
from dltk_mm.errors import ConfigurationError
from dltk_mm.inference.segment import StreamProbabilities
from dltk_mm.io.pipeline import interleaved_dataset
from dltk_mm.io.seeds import derive_seed
from dltk_mm.networks.multistream import MultiStreamModel, make_optimizer
from dltk_mm.networks.schemes import get_scheme
from dltk_mm.training.callbacks import (
    CallbackList,
    HistoryWriter,
    StopOnSignal,
    TensorBoardWriter,
    TrainingCallback,
)
from dltk_mm.training.checkpointing import (
    CHECKPOINT_DIR,
    Optimizers,
    TrainingCheckpoint,
    latest_checkpoint,
    read_best,
    save_best,
)
from dltk_mm.training.config import TrainConfig
from dltk_mm.training.data import TrainingData, load_training_data, select_rows
from dltk_mm.training.distribute import (
    DistributedRoutedStep,
    WorkerInfo,
    create_strategy,
    distributed_interleaved_dataset,
    is_distributed,
    remove_worker_dir,
    worker_checkpoint_dir,
    worker_info,
)
from dltk_mm.training.model_dir import (
    HISTORY_FILE,
    LOG_DIR,
    SPLIT_FILE,
    FolderLock,
    check_data_fingerprint,
    check_model_dir,
    data_fingerprint,
    prepare_model_dir,
    remove_stale_checkpoint_temps,
    resolve_cache_dir,
    write_data_fingerprint,
)
from dltk_mm.training.results import TrainingInfo, TrainResult, ValidationResult
from dltk_mm.training.schedules import learning_rate_schedule
from dltk_mm.training.validation import validate

#: Tag of the input pipeline's seed (see :func:`~dltk_mm.io.seeds.derive_seed`).
PIPELINE_SEED_TAG = 1


def separate_streams(config: TrainConfig) -> bool:
    """Whether every stream trains alone: its own Adam, ``config.steps`` updates of its own
    modality, one batch of each modality per step (``individual`` unless
    ``individual_shared_steps``; module docstring)."""
    return get_scheme(config.scheme).independent_streams and not config.individual_shared_steps


def batches_per_step(config: TrainConfig) -> int:
    """Batches one training step consumes: one per modality when :func:`separate_streams`, else
    one."""
    return len(config.effective_order) if separate_streams(config) else 1


def _check_schedule(config: TrainConfig, strategy: tf.distribute.Strategy) -> None:
    """Refuses what one-optimizer-per-stream training cannot do, before anything is written (an
    order repeating a modality is refused by :class:`TrainConfig` itself)."""
    if separate_streams(config) and is_distributed(strategy):
        raise ConfigurationError(
            "scheme individual trains each stream with its own optimizer, which the distributed "
            "step does not support yet; train without a distribution strategy, or use "
            "--individual_shared_steps (one optimizer, one shared steps budget)"
        )


def count_parameters(model: keras.Model) -> int:
    """Trainable parameters, each shared variable counted once."""
    unique = {id(v): v for v in model.trainable_variables}
    return int(sum(int(np.prod(v.shape)) for v in unique.values()))


def history_columns(config: TrainConfig) -> list[str]:
    """The columns of ``history.csv`` after ``step``."""
    columns = ["loss", *[f"loss_{m}" for m in config.modalities]]
    if config.validates:
        organs = organ_names(config.network.num_classes)
        for modality in config.modalities:
            columns += [f"val_dice_{modality}_{organ}" for organ in organs]
            columns.append(f"val_dice_{modality}_mean")
        columns.append("val_dice_mean")
    columns.append("time")
    return columns


# ---------------------------------------------------------------------------------------------
# Preparation: folder and data, model, restored state


def _prepare_data(config: TrainConfig, model_dir: Path, restart: bool, worker: WorkerInfo,
                  callbacks: TrainingCallback) -> tuple[Path | None, Path, TrainingData]:
    """Checks the data against the folder's run, writes config.json, data.json and split.csv
    (the chief only) and preprocesses. Returns (moved previous run, cache folder, data)."""
    rows = select_rows(config)
    moved = None
    if worker.is_chief:
        fingerprint = data_fingerprint(config.manifest, rows.records())
        if not restart:
            check_data_fingerprint(model_dir, fingerprint)
        moved = prepare_model_dir(model_dir, config, restart)
        write_data_fingerprint(model_dir, fingerprint)
        remove_stale_checkpoint_temps(model_dir)
    cache_dir = resolve_cache_dir(config, model_dir)
    logging.info("preprocessing (cache %s)", cache_dir)
    data = load_training_data(config, cache_dir, progress=callbacks.on_preprocess, rows=rows)
    if worker.is_chief:
        data.split.to_csv(model_dir / SPLIT_FILE, index=False)
    return moved, cache_dir, data


def _make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """Adam with the run's learning rate or schedule (of its own iteration count, which is the
    step for every scheme, one optimizer per stream or not)."""
    return make_optimizer(learning_rate_schedule(config), beta_1=config.adam_beta_1,
                          beta_2=config.adam_beta_2, epsilon=config.adam_epsilon,
                          loss_scale=config.mixed_precision)


def _compile_model(config: TrainConfig, strategy: tf.distribute.Strategy
                   ) -> tuple[MultiStreamModel, Optimizers]:
    """The model and its optimizer, or one optimizer per modality (:func:`separate_streams`)."""
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = config.build_model("mixed_float16" if config.mixed_precision else None)
        if separate_streams(config):
            optimizer: Optimizers = {m: _make_optimizer(config) for m in config.modalities}
        else:
            optimizer = _make_optimizer(config)
        model.compile(optimizer=optimizer, loss=config.loss, jit_compile=config.jit_compile)
    return model, optimizer


@dataclasses.dataclass
class _Start:
    """Where the loop starts: the input iterator, the checkpoint state and the step."""

    iterator: Any
    state: TrainingCheckpoint
    cycle: tuple[str, ...]
    initial_step: int
    resumed_from: str | None
    pipeline_restored: bool


def _restore(config: TrainConfig, strategy: tf.distribute.Strategy, model: MultiStreamModel,
             optimizer: Optimizers, data: TrainingData, model_dir: Path) -> _Start:
    """Builds the input pipeline and restores the newest checkpoint, if any.

    The tf.data position is checkpointed with the state unless training is distributed; when it
    cannot be restored the modality cycle continues where it stopped, with fresh random patches.
    """
    pairs = {m: [(v.image, v.label) for v in vs] for m, vs in data.train.items()}
    distributed = is_distributed(strategy)
    order = tuple(config.effective_order)

    def iterator_for(seed: int, cycle: tuple[str, ...]) -> Any:
        pipeline = dataclasses.replace(config.pipeline, seed=seed)
        if distributed:
            return iter(distributed_interleaved_dataset(strategy, pairs, config.modalities,
                                                        cycle, pipeline))
        return iter(interleaved_dataset(pairs, config.modalities, cycle, pipeline))

    def state_for(iterator: Any) -> TrainingCheckpoint:
        with strategy.scope():
            return TrainingCheckpoint(model_dir, model, optimizer, iterator if save_pipeline
                                      else None, max_to_keep=config.keep_checkpoints)

    save_pipeline = config.checkpoint_input_pipeline and not distributed
    if distributed and config.checkpoint_input_pipeline:
        logging.info("distributed training: the input pipeline is reseeded on resume")
    cycle = order
    iterator = iterator_for(derive_seed(config.seed, PIPELINE_SEED_TAG), cycle)
    state = state_for(iterator)
    resumed_from = state.latest
    step, restored = state.restore(resumed_from)
    if resumed_from is not None:
        logging.info("resuming from step %d (checkpoint %s)", step, resumed_from)
    if resumed_from is not None and not restored:
        shift = step * batches_per_step(config) % len(order)
        cycle = order[shift:] + order[:shift]
        iterator = iterator_for(derive_seed(config.seed, PIPELINE_SEED_TAG, step), cycle)
        if save_pipeline:
            state = state_for(iterator)
            state.last_saved_step = step
        logging.info("input pipeline reseeded for step %d", step)
    return _Start(iterator, state, cycle, step, resumed_from, restored)


def _make_step_fn(config: TrainConfig, strategy: tf.distribute.Strategy,
                  model: MultiStreamModel, cycle: Sequence[str]) -> Any:
    if is_distributed(strategy):
        with strategy.scope():
            return DistributedRoutedStep(model, strategy, cycle, config.pipeline.batch_size,
                                         jit_compile=config.jit_compile)
    return tf.function(model.train_step, jit_compile=config.jit_compile, reduce_retracing=True)


# ---------------------------------------------------------------------------------------------
# The loop


def _is_empty(metric: keras.metrics.Metric) -> bool:
    count = getattr(metric, "count", None)
    return count is not None and float(keras.ops.convert_to_numpy(count)) == 0


def _step_logs(logs: Mapping[str, Any], seen: Collection[str]) -> dict[str, float]:
    """Running mean losses since the last record, without modalities not trained since then.

    ``logs`` are the tensors a step returned and ``seen`` the modalities trained since the last
    record (known on the host from the modality cycle): nothing else is read from the device.
    """
    return {k: float(v) for k, v in logs.items()
            if not k.startswith("loss_") or k[len("loss_"):] in seen}


def _loss_record(model: MultiStreamModel) -> dict[str, float]:
    record = {}
    for metric in model.metrics:
        record[metric.name] = float("nan") if _is_empty(metric) else float(metric.result())
        metric.reset_state()
    return record


@dataclasses.dataclass(frozen=True)
class _Due:
    """What the step just trained triggers."""

    record: bool
    validate: bool
    checkpoint: bool

    @property
    def any(self) -> bool:
        return self.record or self.validate or self.checkpoint


class TrainingLoop:
    """The steps of one :func:`train` call, from ``start.initial_step`` to ``config.steps``.

    Each pass of :meth:`run` trains one :meth:`step`; then, when due, :meth:`record` (losses),
    :meth:`validate` (Dice, best weights), :meth:`checkpoint`, and stops early after a signal.
    """

    def __init__(self, config: TrainConfig, model_dir: Path, model: MultiStreamModel,
                 start: _Start, step_fn: Any, callbacks: CallbackList, worker: WorkerInfo,
                 validation_volumes: Mapping[str, Sequence[Any]], stopper: StopOnSignal) -> None:
        self.config, self.model_dir, self.model = config, model_dir, model
        self.start, self.state, self.iterator = start, start.state, start.iterator
        self.step_fn, self.callbacks = step_fn, callbacks
        self.worker, self.stopper = worker, stopper
        self.order = tuple(config.effective_order)
        # One batch of every modality per step when each stream trains alone, else one batch.
        self.round = self.order if separate_streams(config) else None
        self.volumes = validation_volumes
        self.validates = any(validation_volumes.values())
        self.probabilities = (StreamProbabilities(model, jit_compile=config.jit_compile)
                              if self.validates else None)
        best = (read_best(model_dir) or {}).get("score")
        self.best_score = -math.inf if best is None else float(best)
        self.step_count = start.initial_step
        self.last_validation: ValidationResult | None = None
        # The losses of step k are read (a device->host copy) only after step k+1 has been
        # dispatched, so that the host never waits for the device between two steps; a step
        # that records, validates or checkpoints reads its own losses at once.
        self.pending: tuple[int, Mapping[str, Any], frozenset[str]] | None = None
        self.seen: set[str] = set()

    def run(self) -> int | None:
        """Trains to ``config.steps`` or the first signal; returns that signal's number."""
        for metric in self.model.metrics:
            metric.reset_state()
        while self.step_count < self.config.steps:
            logs = self.step()
            due = self.due()
            record = self.record(logs, due)
            if due.validate:
                record.update(self.validate())
            if record:
                record["time"] = time.time()
                self.callbacks.on_record(self.step_count, record)
            if due.checkpoint:
                self.checkpoint()
            if self.stopper.received:
                logging.warning("interrupted at step %d; rerun to resume", self.step_count)
                break
        if self.state.last_saved_step != self.step_count:
            self.checkpoint()
        return self.stopper.received

    def step(self) -> Mapping[str, Any]:
        """One step (one update of the shared optimizer, or of every stream's own optimizer);
        reports the previous step's losses (read one step late)."""
        if self.round is None:
            logs = self.step_fn(next(self.iterator))
            self.seen.add(self.order[self.step_count % len(self.order)])
        else:
            for _ in self.round:
                logs = self.step_fn(next(self.iterator))
            self.seen.update(self.round)
        self.step_count += 1
        if self.pending is not None:
            self.callbacks.on_step_end(self.pending[0], _step_logs(*self.pending[1:]))
        self.pending = (self.step_count, logs, frozenset(self.seen))
        return logs

    def due(self) -> _Due:
        """Which phases the step just trained triggers (all at the last step or on a signal)."""
        step, config = self.step_count, self.config
        final = step == config.steps
        stopping = bool(self.stopper.received)
        return _Due(
            record=step % config.log_interval == 0 or final or stopping,
            validate=self.validates and (step % config.validation_interval == 0 or final),
            checkpoint=step % config.checkpoint_interval == 0 or final or stopping,
        )

    def record(self, logs: Mapping[str, Any], due: _Due) -> dict[str, float]:
        """Reports this step's losses at once when a phase is due; the mean losses since the
        last record when a record is due (empty otherwise)."""
        if not due.any:
            return {}
        self.callbacks.on_step_end(self.step_count, _step_logs(logs, self.seen))
        self.pending = None
        if not due.record:
            return {}
        self.seen.clear()
        return _loss_record(self.model)

    def validate(self) -> dict[str, float]:
        """Scores the held-out volumes, keeps the best weights; returns the scores."""
        step = self.step_count
        self.callbacks.on_validation_begin(step, sum(len(v) for v in self.volumes.values()))
        result = validate(self.model, self.volumes, self.config.pipeline.patch_size,
                          inference=self.config.inference, step=step,
                          probabilities=self.probabilities)
        self.last_validation = result
        scores = result.scores()
        logging.info("step %d: mean validation Dice %.4f", step, result.mean)
        self.callbacks.on_validation_end(step, result)
        if self.worker.is_chief and math.isfinite(result.mean) and result.mean > self.best_score:
            self.best_score = result.mean
            save_best(self.model_dir, self.model, step, self.best_score, scores)
        return scores

    def checkpoint(self) -> None:
        """Saves the training state. Every worker takes part; only the chief's lands in the
        model folder.

        A non-chief worker writes the same checkpoint object to a private temporary folder and
        deletes it: it must not create variables of its own here (under a multi-worker strategy
        every variable creation is a collective broadcast that the chief would not match).
        """
        step = self.step_count
        if self.worker.is_chief:
            path = self.state.save(step)
        else:
            scratch = worker_checkpoint_dir(self.model_dir, self.worker)
            try:
                self.state.step.assign(step)
                self.state.checkpoint.write(str(scratch / "ckpt"))
            finally:
                remove_worker_dir(scratch, self.worker)
            self.state.last_saved_step = step
            path = str(self.model_dir / CHECKPOINT_DIR / f"ckpt-{step}")
        self.callbacks.on_checkpoint(step, path)


# ---------------------------------------------------------------------------------------------
# train()


def train(
    config: TrainConfig,
    model_dir: str | os.PathLike,
    callbacks: Sequence[TrainingCallback] = (),
    restart: bool = False,
    strategy: tf.distribute.Strategy | None = None,
) -> TrainResult:
    """Trains (or resumes training of) a network of ``config`` in ``model_dir``.

    See :mod:`dltk_mm.training.model_dir` for the folder layout and its rules. The folder is
    locked for the whole call (a second trainer on it is refused, naming this one). Rerunning
    with the same configuration (or one that differs only in
    :data:`~dltk_mm.training.config.RESUMABLE_FIELDS`) and the same data resumes from the newest
    checkpoint and ends after exactly ``config.steps`` steps in total (for ``individual``: updates
    of every stream, each with its own Adam; module docstring). SIGINT and
    SIGTERM stop the run after the current step with a checkpoint (``result.interrupted_by`` is
    the signal number); a second signal stops at once.

    Args:
        config: the run's configuration.
        model_dir: the model folder (created).
        callbacks: extra hooks (progress display, ...); history.csv and TensorBoard writers are
            always added.
        restart: move an existing run in ``model_dir`` aside (to ``previous_<time>/``) and start
            over instead of resuming; nothing is deleted.
        strategy: a ``tf.distribute`` strategy to use instead of creating ``config.strategy``
            (:func:`dltk_mm.training.distribute.create_strategy`; create multi-worker strategies
            before any other TensorFlow op). Under a distribution strategy only the chief locks
            and writes the model folder (config, split, history, TensorBoard, checkpoints, best
            model) and validates; every worker resumes from the chief's newest checkpoint, and
            the input pipeline's position is not checkpointed (a resumed run reseeds it).

    Returns:
        The :class:`~dltk_mm.training.results.TrainResult`.

    Raises:
        ConfigurationError: bad options, a model folder holding a different run, other data,
            a run already past ``config.steps``, a folder in use by another run, or a
            distribution strategy for ``individual`` with one optimizer per stream.
        InputDataError: bad data.
    """
    started = time.monotonic()
    if strategy is None:
        strategy = create_strategy(config.strategy)
    _check_schedule(config, strategy)
    worker = worker_info(strategy)
    model_dir = Path(model_dir).expanduser().resolve()
    check_model_dir(model_dir, config, restart)
    lock = FolderLock(model_dir, "model_dir") if worker.is_chief else contextlib.nullcontext()
    with lock:
        return _train_in(config, model_dir, callbacks, restart, strategy, worker, started)


def _train_in(config: TrainConfig, model_dir: Path, callbacks: Sequence[TrainingCallback],
              restart: bool, strategy: tf.distribute.Strategy, worker: WorkerInfo,
              started: float) -> TrainResult:
    """:func:`train` once the folder is locked."""
    tensorboard = TensorBoardWriter(model_dir / LOG_DIR, config.modalities) \
        if worker.is_chief else None
    writers = [HistoryWriter(model_dir / HISTORY_FILE, history_columns(config)), tensorboard] \
        if worker.is_chief else []
    hooks = CallbackList([*writers, *callbacks])
    moved, cache_dir, data = _prepare_data(config, model_dir, restart, worker, hooks)
    model, optimizer = _compile_model(config, strategy)
    start = _restore(config, strategy, model, optimizer, data, model_dir)
    info = TrainingInfo(
        config=config, model_dir=model_dir, model=model, num_parameters=count_parameters(model),
        train_subjects={m: [v.subject_id for v in vs] for m, vs in data.train.items()},
        validation_subjects={m: [v.subject_id for v in vs] for m, vs in data.validation.items()},
        initial_step=start.initial_step, resumed_from=start.resumed_from,
        pipeline_restored=start.pipeline_restored, cache_dir=cache_dir, moved_previous=moved,
        batches_per_step=batches_per_step(config),
    )
    volumes = data.validation if config.validates and worker.is_chief else {}
    if config.validates and worker.is_chief and not any(volumes.values()):
        logging.warning("fold %d holds out no volume: training without validation", config.fold)
    step_fn = _make_step_fn(config, strategy, model, start.cycle)
    logging.info("training %s on %s for %d steps (from step %d) in %s", config.scheme,
                 "/".join(config.modalities), config.steps, start.initial_step, model_dir)
    with StopOnSignal() as stopper:
        try:
            hooks.on_train_begin(info)
            loop = TrainingLoop(config, model_dir, model, start, step_fn, hooks, worker, volumes,
                                stopper)
            interrupted_by = loop.run()
            result = TrainResult(
                model_dir=model_dir, step=loop.step_count, steps=config.steps,
                initial_step=start.initial_step, resumed_from=start.resumed_from,
                interrupted_by=interrupted_by, checkpoint=latest_checkpoint(model_dir),
                best=read_best(model_dir), last_validation=loop.last_validation,
                elapsed_s=time.monotonic() - started,
            )
        finally:
            if tensorboard is not None:
                tensorboard.close()
    hooks.on_train_end(result)
    logging.info("training stopped at step %d of %d after %.1f s", result.step, config.steps,
                 result.elapsed_s)
    return result


__all__ = ["PIPELINE_SEED_TAG", "TrainingLoop", "batches_per_step", "count_parameters",
           "history_columns", "separate_streams", "train"]
