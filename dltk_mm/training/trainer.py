"""Training as a library function: :func:`train` (Valindria et al., WACV 2018, section 4; spec 5).

One run = one :class:`~dltk_mm.training.config.TrainConfig` in one model folder. The routed step of
:class:`~dltk_mm.networks.MultiStreamModel` trains on the interleaved patch pipeline (one modality
per batch, alternating MR, CT, ...), exactly ``config.steps`` optimiser steps. Every
``validation_interval`` steps the held-out fold is segmented by sliding-window inference with each
modality's stream and scored with the hard Dice per organ; the best weights (mean Dice over organs
and modalities) are kept in ``best/``. Checkpoints are written every ``checkpoint_interval`` steps,
at the end, and when SIGINT/SIGTERM arrive; rerunning into the same folder resumes from the newest
checkpoint with the model, the optimizer (Adam moments and iteration count), the step and the input
pipeline's position restored.

Model folder layout::

    config.json          the TrainConfig (all a later predict/export needs)
    split.csv            subject_id, modality, fold, role (train / validation)
    checkpoints/         ckpt-<step>.* (newest few) + 'checkpoint' index
    best/                model.* weights + best.json (step, scores)  [when validating]
    history.csv          step, losses per modality, validation Dice per modality and organ
    logs/train, logs/validation   TensorBoard event files
    previous_<time>/     an earlier run moved aside by restart=True
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from absl import logging

from dltk_mm.core.metrics import dice_per_class
from dltk_mm.errors import ConfigurationError, InputDataError
from dltk_mm.inference.sliding_window import sliding_window_inference
from dltk_mm.io.labels import LABEL_NAMES
from dltk_mm.io.manifest import load_manifest
from dltk_mm.io.pipeline import interleaved_dataset
from dltk_mm.io.preprocessing import PreprocessedVolume, default_cache_dir, preprocess_manifest
from dltk_mm.networks.multistream import MultiStreamModel, make_optimizer
from dltk_mm.training.callbacks import (
    HISTORY_FILE,
    LOG_DIR,
    CallbackList,
    HistoryWriter,
    StopOnSignal,
    TensorBoardWriter,
    TrainingCallback,
)
from dltk_mm.training.checkpointing import (
    BEST_DIR,
    TrainingCheckpoint,
    best_weights_prefix,
    latest_checkpoint,
    read_best,
    save_best,
)
from dltk_mm.training.config import TrainConfig
from dltk_mm.training.distribute import (
    DistributedRoutedStep,
    create_strategy,
    distributed_interleaved_dataset,
    is_distributed,
    remove_worker_dir,
    worker_checkpoint_dir,
    worker_info,
)
from dltk_mm.training.folds import split_manifest

CONFIG_FILE = "config.json"
SPLIT_FILE = "split.csv"
CACHE_SUBDIR = "cache"
PREVIOUS_PREFIX = "previous_"


# ---------------------------------------------------------------------------------------------
# Results


def class_names(num_classes: int) -> tuple[str, ...]:
    """Names of the foreground classes 1..num_classes-1 (the organs for the project's map)."""
    if num_classes == len(LABEL_NAMES):
        return tuple(LABEL_NAMES[1:])
    return tuple(f"class_{c}" for c in range(1, num_classes))


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
            scores[f"val_dice_{modality}_mean"] = _nanmean(list(organs.values()))
        scores["val_dice_mean"] = self.mean
        return scores


@dataclasses.dataclass
class TrainingInfo:
    """What a run is about to do (given to :meth:`TrainingCallback.on_train_begin`).

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


@dataclasses.dataclass
class TrainResult:
    """The outcome of :func:`train`.

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


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


# ---------------------------------------------------------------------------------------------
# Model folder


def _has_training_state(model_dir: Path) -> bool:
    return latest_checkpoint(model_dir) is not None or best_weights_prefix(model_dir) is not None


def _move_aside(model_dir: Path, entries: Sequence[Path]) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = model_dir / f"{PREVIOUS_PREFIX}{stamp}"
    suffix = 1
    while target.exists():
        target = model_dir / f"{PREVIOUS_PREFIX}{stamp}_{suffix}"
        suffix += 1
    target.mkdir()
    for entry in entries:
        os.replace(entry, target / entry.name)
    logging.info("restart: moved the previous run's files to %s", target)
    return target


def _describe(differences: Mapping[str, tuple[Any, Any]]) -> str:
    return "; ".join(f"{key}: {old!r} (saved) != {new!r} (now)"
                     for key, (old, new) in differences.items())


def prepare_model_dir(
    model_dir: str | os.PathLike, config: TrainConfig, restart: bool = False
) -> Path | None:
    """Checks that ``config`` may run in ``model_dir`` and writes ``config.json``.

    An empty or new folder is fine. A folder holding a run may be resumed only with an equal
    configuration, except for the options in
    :data:`~dltk_mm.training.config.RESUMABLE_FIELDS` (steps, intervals, ...). Nothing is ever
    deleted: with ``restart=True`` the previous run's files are moved to
    ``model_dir/previous_<time>/`` (the preprocessing cache ``model_dir/cache`` stays).

    Returns:
        The ``previous_<time>`` folder if files were moved aside, else None.

    Raises:
        ConfigurationError: naming every differing option, or when the folder is not a model
            folder.
    """
    model_dir = Path(model_dir)
    if model_dir.exists() and not model_dir.is_dir():
        raise ConfigurationError(f"model_dir {model_dir} exists and is not a folder")
    entries = []
    if model_dir.is_dir():
        entries = sorted(e for e in model_dir.iterdir()
                         if not e.name.startswith(PREVIOUS_PREFIX) and e.name != CACHE_SUBDIR)
    moved = None
    config_path = model_dir / CONFIG_FILE
    if entries and restart:
        moved = _move_aside(model_dir, entries)
    elif entries and not config_path.is_file():
        raise ConfigurationError(
            f"model_dir {model_dir} is not empty and has no {CONFIG_FILE}, so it is not a "
            "dltk_mm model folder; choose a new or empty --model_dir, or pass --restart to move "
            f"its contents to {model_dir}/{PREVIOUS_PREFIX}<time>/"
        )
    elif entries:
        saved = TrainConfig.load(config_path)
        incompatible = saved.incompatible_differences(config)
        if incompatible and _has_training_state(model_dir):
            raise ConfigurationError(
                f"model_dir {model_dir} holds a run with a different configuration: "
                f"{_describe(incompatible)}. Rerun with the saved options to resume, choose "
                "another --model_dir, or pass --restart to keep the old run in "
                f"{model_dir}/{PREVIOUS_PREFIX}<time>/ and start over"
            )
        if incompatible:
            logging.warning("model_dir %s has no checkpoint yet; replacing its configuration (%s)",
                            model_dir, _describe(incompatible))
        changed = {k: v for k, v in saved.differences(config).items() if k not in incompatible}
        if changed:
            logging.info("changed options (allowed when resuming): %s", _describe(changed))
    model_dir.mkdir(parents=True, exist_ok=True)
    config.save(config_path)
    return moved


def resolve_cache_dir(config: TrainConfig, model_dir: str | os.PathLike) -> Path:
    """The preprocessing cache: ``config.cache_dir``, else ``<manifest folder>/.dltk_mm_cache``
    when that folder is writable, else ``<model_dir>/cache``."""
    if config.cache_dir is not None:
        return Path(config.cache_dir).expanduser()
    candidate = default_cache_dir(config.manifest)
    try:
        candidate.mkdir(exist_ok=True)
        if os.access(candidate, os.W_OK):
            return candidate
    except OSError:
        pass
    return Path(model_dir) / CACHE_SUBDIR


# ---------------------------------------------------------------------------------------------
# Data


@dataclasses.dataclass
class TrainingData:
    """Preprocessed volumes of one fold.

    Attributes:
        train: modality -> training volumes.
        validation: modality -> held-out volumes (empty lists for ``fold = -1``).
        split: subject_id, modality, fold, role (``train`` / ``validation``) per volume.
    """

    train: dict[str, list[PreprocessedVolume]]
    validation: dict[str, list[PreprocessedVolume]]
    split: pd.DataFrame


def load_training_data(
    config: TrainConfig,
    cache_dir: str | os.PathLike | None,
    progress: Callable[[int, int, PreprocessedVolume], None] | None = None,
) -> TrainingData:
    """Reads the manifest, splits it into folds and preprocesses the fold's volumes.

    Raises:
        InputDataError: bad manifest rows, missing labels, empty modalities.
        ConfigurationError: a fold that does not exist.
    """
    manifest = load_manifest(config.manifest)
    selected = manifest[manifest["modality"].isin(config.modalities)]
    unlabelled = [index for index, label in selected["label"].items() if not label]
    if unlabelled:
        lines = ", ".join(f"line {int(i) + 2} ({selected.at[i, 'subject_id']})"
                          for i in unlabelled[:20])
        wanted = "/".join(config.modalities)
        raise InputDataError(
            f"manifest {config.manifest}: training needs a label for every {wanted} row; "
            f"missing on {lines}; fill the label column or remove those rows"
        )
    train_rows, held_out_rows = split_manifest(
        manifest, config.fold, config.num_folds, config.split_seed, config.modalities
    )
    rows = pd.concat([train_rows, held_out_rows])
    volumes = preprocess_manifest(rows, config.preprocessing, cache_dir, progress=progress)
    train: dict[str, list[PreprocessedVolume]] = {m: [] for m in config.modalities}
    validation: dict[str, list[PreprocessedVolume]] = {m: [] for m in config.modalities}
    roles = ["train"] * len(train_rows) + ["validation"] * len(held_out_rows)
    for volume, role in zip(volumes, roles, strict=True):
        if volume.label is None:
            raise InputDataError(f"{volume.image_path}: preprocessing returned no label")
        (train if role == "train" else validation)[volume.modality].append(volume)
    split = pd.DataFrame({
        "subject_id": [str(s) for s in rows["subject_id"]],
        "modality": list(rows["modality"]),
        "fold": [int(f) for f in rows["fold"]],
        "role": roles,
    })
    return TrainingData(train=train, validation=validation, split=split)


# ---------------------------------------------------------------------------------------------
# Validation


def make_predict_fn(
    model: MultiStreamModel, modality: str, jit_compile: bool = False
) -> Callable[[np.ndarray], tf.Tensor]:
    """A compiled function: windows ``(b, z, y, x, 1)`` -> probabilities of ``modality``'s stream
    (batch norm in inference mode)."""
    stream = model.streams[model.modalities[model.modality_index(modality)]]

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def predict(windows: tf.Tensor) -> tf.Tensor:
        return stream(windows, training=False)["probabilities"]

    return predict


def validate(
    model: MultiStreamModel,
    volumes: Mapping[str, Sequence[PreprocessedVolume]],
    patch_size: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 4,
    step: int = 0,
    predict_fns: dict[str, Callable[[np.ndarray], Any]] | None = None,
    jit_compile: bool = False,
) -> ValidationResult:
    """Hard Dice per organ and modality of sliding-window segmentations of held-out volumes.

    Each volume is segmented with its modality's stream: windows of ``patch_size`` with
    ``overlap``, probabilities averaged (spec section 6), argmax; then
    :func:`dltk_mm.core.metrics.dice_per_class` against its label on the preprocessed grid.

    Args:
        model: the network.
        volumes: modality -> preprocessed volumes with labels.
        patch_size: window shape (the training patch size).
        overlap: window overlap (0.5 as the authors' validation).
        batch_size: windows per forward pass.
        step: training step (recorded in the result).
        predict_fns: cache of compiled per-modality functions (filled on first use).
        jit_compile: XLA-compile new prediction functions.

    Returns:
        The :class:`ValidationResult`.
    """
    organs = class_names(model.num_classes)
    predict_fns = {} if predict_fns is None else predict_fns
    per_volume: list[dict[str, Any]] = []
    dice: dict[str, dict[str, float]] = {}
    for modality in model.modalities:
        items = list(volumes.get(modality, ()))
        if not items:
            continue
        if modality not in predict_fns:
            predict_fns[modality] = make_predict_fn(model, modality, jit_compile)
        scores = []
        for volume in items:
            probabilities = sliding_window_inference(
                volume.image, predict_fns[modality], patch_size=patch_size, overlap=overlap,
                batch_size=batch_size, num_classes=model.num_classes,
            )
            prediction = np.argmax(probabilities, axis=-1)
            values = dice_per_class(prediction, volume.label, num_classes=model.num_classes)
            scores.append(values)
            per_volume.append({"subject_id": volume.subject_id, "modality": modality,
                               "dice": [float(v) for v in values]})
        stacked = np.asarray(scores, dtype=np.float64)
        dice[modality] = {organ: _nanmean(list(stacked[:, i])) for i, organ in enumerate(organs)}
    mean = _nanmean([v for organs_ in dice.values() for v in organs_.values()])
    return ValidationResult(step=step, organs=organs, per_volume=per_volume, dice=dice, mean=mean)


# ---------------------------------------------------------------------------------------------
# Training


def derive_seed(seed: int, *tags: int) -> int:
    """A 31-bit seed derived from ``seed`` and integer tags (stable across runs and platforms)."""
    state = np.random.SeedSequence([abs(int(seed)), *[abs(int(t)) for t in tags]])
    return int(state.generate_state(1)[0] & 0x7FFFFFFF)


def count_parameters(model: keras.Model) -> int:
    """Trainable parameters, each shared variable counted once."""
    unique = {id(v): v for v in model.trainable_variables}
    return int(sum(int(np.prod(v.shape)) for v in unique.values()))


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


def _history_columns(config: TrainConfig) -> list[str]:
    columns = ["loss", *[f"loss_{m}" for m in config.modalities]]
    if config.validates:
        organs = class_names(config.network.num_classes)
        for modality in config.modalities:
            columns += [f"val_dice_{modality}_{organ}" for organ in organs]
            columns.append(f"val_dice_{modality}_mean")
        columns.append("val_dice_mean")
    columns.append("time")
    return columns


def train(
    config: TrainConfig,
    model_dir: str | os.PathLike,
    callbacks: Sequence[TrainingCallback] = (),
    restart: bool = False,
    strategy: tf.distribute.Strategy | None = None,
) -> TrainResult:
    """Trains (or resumes training of) a network of ``config`` in ``model_dir``.

    See the module docstring for the folder layout. Rerunning with the same configuration (or one
    that differs only in :data:`~dltk_mm.training.config.RESUMABLE_FIELDS`) resumes from the
    newest checkpoint and ends after exactly ``config.steps`` optimiser steps in total. SIGINT and
    SIGTERM stop the run after the current step with a checkpoint (``result.interrupted_by`` is
    the signal number).

    Args:
        config: the run's configuration.
        model_dir: the model folder (created).
        callbacks: extra hooks (progress display, ...); history.csv and TensorBoard writers are
            always added.
        restart: move an existing run in ``model_dir`` aside (to ``previous_<time>/``) and start
            over instead of resuming; nothing is deleted.
        strategy: a ``tf.distribute`` strategy to use instead of creating ``config.strategy``
            (:func:`dltk_mm.training.distribute.create_strategy`; create multi-worker strategies
            before any other TensorFlow op). Under a distribution strategy only the chief writes
            the model folder (config, split, history, TensorBoard, checkpoints, best model) and
            validates; every worker resumes from the chief's newest checkpoint, and the input
            pipeline's position is not checkpointed (a resumed run reseeds it).

    Returns:
        The :class:`TrainResult`.

    Raises:
        ConfigurationError: bad options, or a model folder holding a different run.
        InputDataError: bad data.
    """
    started = time.monotonic()
    if strategy is None:
        strategy = create_strategy(config.strategy)
    distributed = is_distributed(strategy)
    worker = worker_info(strategy)
    model_dir = Path(model_dir).expanduser().resolve()
    moved = prepare_model_dir(model_dir, config, restart) if worker.is_chief else None
    cache_dir = resolve_cache_dir(config, model_dir)
    user_callbacks = CallbackList(callbacks)
    tensorboard = TensorBoardWriter(model_dir / LOG_DIR, config.modalities) if worker.is_chief \
        else None
    writers = ([HistoryWriter(model_dir / HISTORY_FILE, _history_columns(config)), tensorboard]
               if worker.is_chief else [])
    all_callbacks = CallbackList([*writers, *callbacks])
    logging.info("preprocessing (cache %s)", cache_dir)
    data = load_training_data(config, cache_dir, progress=user_callbacks.on_preprocess)
    if worker.is_chief:
        data.split.to_csv(model_dir / SPLIT_FILE, index=False)

    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = config.build_model("mixed_float16" if config.mixed_precision else None)
        optimizer = make_optimizer(config.effective_learning_rate, beta_1=config.adam_beta_1,
                                   beta_2=config.adam_beta_2, epsilon=config.adam_epsilon,
                                   loss_scale=config.mixed_precision)
        model.compile(optimizer=optimizer, loss=config.loss, jit_compile=config.jit_compile)

    train_pairs = {m: [(v.image, v.label) for v in vs] for m, vs in data.train.items()}
    order = config.effective_order

    def make_iterator(seed: int, cycle: Sequence[str]) -> Any:
        pipeline = dataclasses.replace(config.pipeline, seed=seed)
        if distributed:
            return iter(distributed_interleaved_dataset(
                strategy, train_pairs, config.modalities, tuple(cycle), pipeline))
        dataset = interleaved_dataset(train_pairs, config.modalities, tuple(cycle), pipeline)
        return iter(dataset)

    def make_state(directory: Path, iterator: Any) -> TrainingCheckpoint:
        with strategy.scope():
            return TrainingCheckpoint(directory, model, optimizer, iterator,
                                      max_to_keep=config.keep_checkpoints)

    # The tf.data position of a distributed iterator is not checkpointed (reseeded on resume).
    save_pipeline = config.checkpoint_input_pipeline and not distributed
    if distributed and config.checkpoint_input_pipeline:
        logging.info("distributed training: the input pipeline is reseeded on resume")
    cycle = tuple(order)
    iterator = make_iterator(derive_seed(config.seed, 1), cycle)
    state = make_state(model_dir, iterator if save_pipeline else None)
    resumed_from = state.latest
    initial_step, pipeline_restored = state.restore(resumed_from)
    if resumed_from is not None:
        logging.info("resuming from step %d (checkpoint %s)", initial_step, resumed_from)
        if not pipeline_restored:
            # Continue the modality cycle where it stopped, with fresh random patches.
            shift = initial_step % len(order)
            cycle = tuple(order[shift:]) + tuple(order[:shift])
            iterator = make_iterator(derive_seed(config.seed, 1, initial_step), cycle)
            if save_pipeline:
                state = make_state(model_dir, iterator)
                state.last_saved_step = initial_step
            logging.info("input pipeline reseeded for step %d", initial_step)

    def save_state(at_step: int) -> str:
        """All workers take part in a save; only the chief's lands in the model folder.

        A non-chief worker writes the same checkpoint object to a private temporary folder and
        deletes it: it must not create variables of its own here (under a multi-worker strategy
        every variable creation is a collective broadcast that the chief would not match).
        """
        if worker.is_chief:
            return state.save(at_step)
        scratch = worker_checkpoint_dir(model_dir, worker)
        try:
            state.step.assign(at_step)
            state.checkpoint.write(str(scratch / "ckpt"))
        finally:
            remove_worker_dir(scratch, worker)
        state.last_saved_step = at_step
        return str(model_dir / "checkpoints" / f"ckpt-{at_step}")

    info = TrainingInfo(
        config=config, model_dir=model_dir, model=model,
        num_parameters=count_parameters(model),
        train_subjects={m: [v.subject_id for v in vs] for m, vs in data.train.items()},
        validation_subjects={m: [v.subject_id for v in vs] for m, vs in data.validation.items()},
        initial_step=initial_step, resumed_from=resumed_from,
        pipeline_restored=pipeline_restored, cache_dir=cache_dir, moved_previous=moved,
    )
    validation_volumes = data.validation if config.validates and worker.is_chief else {}
    has_validation = any(validation_volumes.values())
    if config.validates and worker.is_chief and not has_validation:
        logging.warning("fold %d holds out no volume: training without validation", config.fold)
    best = read_best(model_dir)
    best_score = best.get("score") if best else None
    best_score = -math.inf if best_score is None else float(best_score)

    if distributed:
        with strategy.scope():
            step_fn = DistributedRoutedStep(model, strategy, cycle, config.pipeline.batch_size,
                                            jit_compile=config.jit_compile)
    else:
        step_fn = tf.function(model.train_step, jit_compile=config.jit_compile,
                              reduce_retracing=True)
    predict_fns: dict[str, Callable[[np.ndarray], Any]] = {}
    last_validation: ValidationResult | None = None
    interrupted_by: int | None = None
    step = initial_step
    logging.info("training %s on %s for %d steps (from step %d) in %s", config.scheme,
                 "/".join(config.modalities), config.steps, initial_step, model_dir)
    result: TrainResult | None = None
    with StopOnSignal() as stopper:
        try:
            all_callbacks.on_train_begin(info)
            for metric in model.metrics:
                metric.reset_state()
            # The losses of step k are read (a device->host copy) only after step k+1 has been
            # dispatched, so that the host never waits for the device between two steps; a record,
            # validation or checkpoint step reads its own losses at once (it synchronises anyway).
            # (step, its logs, the modalities trained since the last record) of the unread step
            pending: tuple[int, Mapping[str, Any], frozenset[str]] | None = None
            seen: set[str] = set()
            while step < config.steps:
                logs = step_fn(next(iterator))
                step += 1
                seen.add(order[(step - 1) % len(order)])
                if pending is not None:  # the previous step's
                    all_callbacks.on_step_end(pending[0], _step_logs(pending[1], pending[2]))
                pending = (step, logs, frozenset(seen))
                final = step == config.steps
                records_now = step % config.log_interval == 0 or final or stopper.received
                validates_now = has_validation and (step % config.validation_interval == 0
                                                    or final)
                saves_now = step % config.checkpoint_interval == 0 or final or stopper.received
                if records_now or validates_now or saves_now:
                    all_callbacks.on_step_end(step, _step_logs(logs, seen))
                    pending = None
                record: dict[str, float] = {}
                if records_now:
                    record.update(_loss_record(model))
                    seen.clear()
                if validates_now:
                    all_callbacks.on_validation_begin(
                        step, sum(len(v) for v in validation_volumes.values()))
                    last_validation = validate(
                        model, validation_volumes, config.pipeline.patch_size,
                        overlap=config.validation_overlap,
                        batch_size=config.effective_validation_batch_size, step=step,
                        predict_fns=predict_fns, jit_compile=config.jit_compile,
                    )
                    scores = last_validation.scores()
                    record.update(scores)
                    logging.info("step %d: mean validation Dice %.4f", step, last_validation.mean)
                    all_callbacks.on_validation_end(step, last_validation)
                    if (worker.is_chief and math.isfinite(last_validation.mean)
                            and last_validation.mean > best_score):
                        best_score = last_validation.mean
                        save_best(model_dir, model, step, best_score, scores)
                if record:
                    record["time"] = time.time()
                    all_callbacks.on_record(step, record)
                if saves_now:
                    all_callbacks.on_checkpoint(step, save_state(step))
                if stopper.received:
                    interrupted_by = stopper.received
                    logging.warning("interrupted at step %d; rerun to resume", step)
                    break
            if state.last_saved_step != step:
                all_callbacks.on_checkpoint(step, save_state(step))
            result = TrainResult(
                model_dir=model_dir, step=step, steps=config.steps, initial_step=initial_step,
                resumed_from=resumed_from, interrupted_by=interrupted_by,
                checkpoint=latest_checkpoint(model_dir), best=read_best(model_dir),
                last_validation=last_validation, elapsed_s=time.monotonic() - started,
            )
        finally:
            if tensorboard is not None:
                tensorboard.close()
    all_callbacks.on_train_end(result)
    logging.info("training stopped at step %d of %d after %.1f s", step, config.steps,
                 result.elapsed_s)
    return result


__all__ = [
    "BEST_DIR",
    "CONFIG_FILE",
    "SPLIT_FILE",
    "TrainResult",
    "TrainingData",
    "TrainingInfo",
    "ValidationResult",
    "class_names",
    "count_parameters",
    "derive_seed",
    "load_training_data",
    "make_predict_fn",
    "prepare_model_dir",
    "resolve_cache_dir",
    "train",
    "validate",
]
