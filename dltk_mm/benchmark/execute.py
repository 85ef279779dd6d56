"""Executing the plan: train each run (or resume it), evaluate it, mark it finished.

A run is finished when ``<model_dir>/DONE.json`` exists and records the evaluation asked for; it
is written atomically after the run's ``evaluation.csv``, so a run killed at any moment is either
finished or redone (resumed from its newest checkpoint, or only evaluated again when its training
had ended). A finished run whose saved configuration differs from the plan's is refused, never
overwritten.

A run is evaluated under the ``paper`` protocol and, where it differs, the ``improved`` one
(:mod:`dltk_mm.benchmark.protocols`); ``evaluation.csv`` holds both (column ``protocol``) and
``DONE.json`` records their options, the weights and the scoring, so that a change of any of them
(or a ``DONE.json`` written before protocols were recorded) makes the run be evaluated again, not
retrained. :func:`ablation_results` scores finished runs under the ablation's protocols as well;
every protocol's scores are cached in the run folder (:func:`~dltk_mm.benchmark.evaluate.
protocol_scores`), so nothing is segmented twice.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from absl import logging

from dltk_mm.benchmark.evaluate import SCORING, protocol_scores
from dltk_mm.benchmark.plan import BenchmarkSettings, RunSpec
from dltk_mm.benchmark.protocols import (
    PAPER,
    ablation_protocols,
    main_protocols,
    stored_inference,
)
from dltk_mm.benchmark.tables import RUN_RESULT_COLUMNS
from dltk_mm.errors import ConfigurationError
from dltk_mm.io.files import atomic_write, atomic_write_text
from dltk_mm.training import TrainConfig, latest_checkpoint, load_config, train
from dltk_mm.training.checkpointing import checkpoint_step
from dltk_mm.training.model_dir import CONFIG_FILE

#: The completion marker of a run.
DONE_FILE = "DONE.json"
#: A run's per-subject, per-organ results.
EVALUATION_FILE = "evaluation.csv"
#: States of a run (:func:`run_state`): to train or resume; trained and finished but to evaluate
#: again; finished.
NEW, TRAINED, FINISHED = "new", "trained", "finished"


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """What happened to one run in this call.

    Attributes:
        spec: the run.
        status: ``"skipped"`` (already finished), ``"done"`` (trained and evaluated now),
            ``"evaluated"`` (trained earlier, evaluated again now), ``"interrupted"``, or
            ``"ablation"`` (scored under the ablation's protocols, :func:`ablation_results`).
        initial_step: the step training started from in this call (-1 if skipped).
        elapsed_s: wall time spent on it in this call.
        mean_dice: mean Dice over its held-out subjects and organs under the ``paper``
            protocol (NaN if not evaluated).
        interrupted_by: the signal that stopped its training, or None.
        protocol_dice: protocol -> mean Dice, for every protocol evaluated.
    """

    spec: RunSpec
    status: str
    initial_step: int = -1
    elapsed_s: float = 0.0
    mean_dice: float = math.nan
    interrupted_by: int | None = None
    protocol_dice: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class RunEvent:
    """Progress of :func:`execute_runs`, for a command line to report.

    Attributes:
        index: 1-based position of the run in the plan.
        total: runs in the plan.
        spec: the run.
        outcome: None when the run starts, else how it ended.
        remaining: unfinished runs after this one.
        eta_s: estimated time for them (from the runs trained in this call), or None.
    """

    index: int
    total: int
    spec: RunSpec
    outcome: RunOutcome | None = None
    remaining: int = 0
    eta_s: float | None = None


ProgressFn = Callable[[RunEvent], None]


def done_record(spec: RunSpec, settings: BenchmarkSettings) -> dict[str, Any]:
    """What ``DONE.json`` records of a run's evaluation (compared by :func:`run_state`): the
    options of each protocol, the weights, the scoring and whether surface metrics were asked."""
    record = {"protocols": {name: inference.to_dict()
                            for name, inference in main_protocols(spec.inference).items()},
              "weights": settings.weights, "scoring": SCORING,
              "surface_metrics": settings.surface_metrics}
    return json.loads(json.dumps(record))  # as read back from the file


def _check_saved(spec: RunSpec) -> TrainConfig:
    """The run folder's saved configuration; refused if not the plan's (see run_state)."""
    saved = load_config(spec.model_dir)
    different = saved.incompatible_differences(spec.config)
    different.pop("cache_dir", None)
    if saved.steps > spec.config.steps:
        different["steps"] = (saved.steps, spec.config.steps)
    if different:
        shown = "; ".join(f"{k}: {a!r} (saved) != {b!r} (now)" for k, (a, b) in different.items())
        raise ConfigurationError(
            f"{spec.model_dir} holds a finished run with other settings ({shown}); use another "
            "--results_dir for other settings, or move that run folder away to redo it"
        )
    return saved


def _training_ended(spec: RunSpec) -> bool:
    """Whether the run folder's newest checkpoint is at the run's last step."""
    import tensorflow as tf

    try:
        prefix = latest_checkpoint(spec.model_dir)
        return prefix is not None and checkpoint_step(prefix) == spec.config.steps
    except (ConfigurationError, tf.errors.OpError) as error:
        logging.warning("%s: unreadable checkpoint (%s); training decides", spec.model_dir, error)
        return False


def _read_done(marker: Path) -> dict[str, Any]:
    try:
        done = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        logging.warning("unreadable %s (%s): evaluating the run again", marker, error)
        return {}
    return done if isinstance(done, dict) else {}


def run_state(spec: RunSpec, settings: BenchmarkSettings) -> str:
    """Where a run stands: :data:`NEW`, :data:`TRAINED` or :data:`FINISHED`.

    ``FINISHED``: ``DONE.json`` exists and records the evaluation the settings ask for
    (:func:`done_record`). ``TRAINED``: finished but evaluated otherwise (other protocol
    options, weights or scoring; a ``DONE.json`` without that record, from an older version), or
    its ``DONE.json`` lost after its training ended: only the evaluation is redone. ``NEW``: to
    train, or to resume (also a finished run asked for more steps).

    Raises:
        ConfigurationError: a finished run whose saved configuration differs from ``spec``'s in
            more than the schedule options (the cache folder aside), or that trained more steps
            than asked.
    """
    marker = spec.model_dir / DONE_FILE
    if not marker.is_file():
        if (spec.model_dir / CONFIG_FILE).is_file() and _training_ended(spec):
            _check_saved(spec)
            logging.info("%s: trained, not marked finished: evaluating it", spec.name)
            return TRAINED
        return NEW
    if _check_saved(spec).steps < spec.config.steps:
        return NEW
    done = _read_done(marker)
    wanted = done_record(spec, settings)
    evaluated = {key: done.get(key) for key in wanted}
    if isinstance(evaluated["protocols"], dict):  # options added since are at their defaults
        evaluated["protocols"] = {name: stored_inference(values)
                                  for name, values in evaluated["protocols"].items()}
    if json.loads(json.dumps(evaluated)) != wanted:
        logging.info("%s: finished, evaluated otherwise (%s): evaluating again", spec.name,
                     evaluated)
        return TRAINED
    return FINISHED


def check_finished(spec: RunSpec, settings: BenchmarkSettings) -> bool:
    """Whether the run is :data:`FINISHED` (see :func:`run_state`, which raises)."""
    return run_state(spec, settings) == FINISHED


def _mean_dice(frame: pd.DataFrame) -> dict[str, float]:
    return {str(name): float(np.nanmean(part["dice"])) if part["dice"].notna().any()
            else math.nan for name, part in frame.groupby("protocol", sort=False)}


def _mark_done(spec: RunSpec, settings: BenchmarkSettings, dice: dict[str, float],
               subjects: int, elapsed_s: float) -> None:
    done = {"scheme": spec.scheme, "fold": spec.fold, "seed": spec.seed,
            "steps": spec.config.steps, **done_record(spec, settings), "subjects": subjects,
            "mean_dice": dice.get(PAPER, math.nan), "protocol_dice": dice,
            "elapsed_s_this_call": elapsed_s,
            "finished": datetime.datetime.now().isoformat(timespec="seconds")}
    atomic_write_text(spec.model_dir / DONE_FILE, json.dumps(done, indent=1))


def run_one(spec: RunSpec, settings: BenchmarkSettings, callbacks: Sequence[Any] = ()
            ) -> RunOutcome:
    """Trains (or resumes) and evaluates one run; writes ``evaluation.csv`` then ``DONE.json``.

    Args:
        spec: the run.
        settings: the benchmark's settings (evaluation options).
        callbacks: :class:`dltk_mm.training.TrainingCallback` objects for its training.

    Returns:
        The :class:`RunOutcome` (``"skipped"`` for a finished run; a run to evaluate again is
        not trained, its ``initial_step`` is its last step).
    """
    started = time.monotonic()
    state = run_state(spec, settings)
    if state == FINISHED:
        return RunOutcome(spec, "skipped")
    initial_step = spec.config.steps
    if state == NEW:
        result = train(spec.config, spec.model_dir, callbacks=list(callbacks))
        if result.interrupted_by is not None:
            return RunOutcome(spec, "interrupted", initial_step=result.initial_step,
                              elapsed_s=time.monotonic() - started,
                              interrupted_by=int(result.interrupted_by))
        initial_step = result.initial_step
    frame = protocol_scores(spec, settings, main_protocols(spec.inference))
    atomic_write(spec.model_dir / EVALUATION_FILE, lambda p: frame.to_csv(p, index=False))
    dice = _mean_dice(frame)
    subjects = int(frame["subject_id"].nunique()) if len(frame) else 0
    elapsed = time.monotonic() - started
    _mark_done(spec, settings, dice, subjects, elapsed)
    return RunOutcome(spec, "done" if state == NEW else "evaluated", initial_step=initial_step,
                      elapsed_s=elapsed, mean_dice=dice.get(PAPER, math.nan),
                      protocol_dice=dice)


def execute_runs(runs: Sequence[RunSpec], settings: BenchmarkSettings,
                 callbacks: Sequence[Any] = (), progress: ProgressFn | None = None
                 ) -> tuple[list[RunOutcome], int | None]:
    """Runs the plan in order until it is done, interrupted or ``settings.max_runs`` trained.

    Returns:
        The outcome of every run visited and the signal that interrupted the benchmark (None).
    """
    outcomes: list[RunOutcome] = []
    trained, trained_time = 0, 0.0
    for index, spec in enumerate(runs, start=1):
        if settings.max_runs is not None and trained >= settings.max_runs:
            logging.info("stopping after %d trained runs (max_runs)", trained)
            break
        if progress is not None and not check_finished(spec, settings):
            progress(RunEvent(index, len(runs), spec))
        outcome = run_one(spec, settings, callbacks)
        outcomes.append(outcome)
        remaining = sum(1 for r in runs[index:] if not check_finished(r, settings))
        if outcome.status == "done":
            trained += 1
            trained_time += outcome.elapsed_s
        eta = trained_time / trained * remaining if trained else None
        if progress is not None:
            progress(RunEvent(index, len(runs), spec, outcome, remaining, eta))
        if outcome.status == "interrupted":
            return outcomes, outcome.interrupted_by
    return outcomes, None


def ablation_results(runs: Sequence[RunSpec], settings: BenchmarkSettings,
                     compute: bool = True, progress: ProgressFn | None = None) -> pd.DataFrame:
    """Every finished run's scores under ``paper``, the ablation's protocols and ``improved``.

    Scores cached in the run folders are reused; the others are evaluated with the trained
    model (never retrained) and cached, unless ``compute`` is False (then left out).

    Returns:
        Rows of :data:`~dltk_mm.benchmark.tables.RUN_RESULT_COLUMNS` of every protocol.
    """
    frames = []
    finished = [spec for spec in runs if check_finished(spec, settings)]
    for index, spec in enumerate(finished, start=1):
        started = time.monotonic()
        protocols = {**main_protocols(spec.inference), **ablation_protocols(spec.inference)}
        frame = protocol_scores(spec, settings, protocols, compute=compute)
        frames.append(frame)
        if progress is not None and compute:
            dice = _mean_dice(frame)
            outcome = RunOutcome(spec, "ablation", elapsed_s=time.monotonic() - started,
                                 mean_dice=dice.get(PAPER, math.nan), protocol_dice=dice)
            progress(RunEvent(index, len(finished), spec, outcome, len(finished) - index))
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=list(RUN_RESULT_COLUMNS))
    return pd.concat(frames, ignore_index=True)
