"""The paper's experiment in one command (Valindria et al., WACV 2018, Tables 1-3, Figures 4-7).

Usage::

    python -m experiments.paper.run --preset=smoke                  # built-in phantoms, minutes
    dltk-mm-benchmark --preset=paper --manifest=/data/manifest.csv --label_preset=amos \\
        --results_dir=/results

For every scheme x held-out fold x seed, one model is trained on the training folds of both
modalities (``dltk_mm.training.train``; the flags come from ``experiments/paper/common.cfg`` and
``<scheme>.cfg``, then the ``--preset``, then any ``dltk-mm-train`` flag given here) and
evaluated on the held-out fold of each modality with that modality's stream: sliding window on the
preprocessed (cropped, isotropic) volumes as in the paper, Dice, HD95 and ASSD per organ. Each run
lives in ``<results_dir>/runs/<scheme>/fold<k>/seed<s>/`` and is finished when its ``DONE.json``
exists (written after ``evaluation.csv``). Rerunning the command skips finished runs and resumes an
interrupted one from its newest checkpoint; SIGINT/SIGTERM stop the benchmark after a checkpoint.
At the end (or with ``--aggregate_only``) all per-run results are gathered into
``results_all.csv``, ``tables/`` (Tables 1-3 beside the paper's numbers) and ``figures/`` (box
plots, Figures 6-7; overlays, Figures 4-5).

Exit status: 0 finished; 2 bad options or input data; 130/143 interrupted by SIGINT/SIGTERM (rerun
the same command to continue).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from absl import app, flags  # noqa: E402

from dltk_mm.cli import train as train_cli  # noqa: E402
from dltk_mm.cli._common import handle_errors  # noqa: E402
from dltk_mm.errors import ConfigurationError, InputDataError  # noqa: E402
from dltk_mm.training.callbacks import TrainingCallback  # noqa: E402
from dltk_mm.training.config import TrainConfig  # noqa: E402
from experiments.paper import figures as figures_lib  # noqa: E402
from experiments.paper import tables as tables_lib  # noqa: E402
from experiments.paper.paper_results import ORGANS  # noqa: E402
from experiments.paper.presets import (  # noqa: E402
    AVAILABLE_SCHEMES,
    CONFIG_DIR,
    PRESETS,
    Preset,
    get_preset,
    scheme_flagfiles,
)

DONE_FILE = "DONE.json"
EVALUATION_FILE = "evaluation.csv"
PREDICTIONS_DIR = "predictions"
RUNS_DIR = "runs"
#: dltk-mm-train flags the driver sets itself for every run.
RESERVED_TRAIN_FLAGS = ("model_dir", "scheme", "fold", "seed", "restart", "manifest")
EXIT_INTERRUPTED = {signal.SIGINT: 130, signal.SIGTERM: 143}


# ---------------------------------------------------------------------------------------------
# Settings and plan


@dataclasses.dataclass(frozen=True)
class BenchmarkSettings:
    """What the benchmark runs.

    Attributes:
        results_dir: output folder (runs/, data/, cache/, tables/, figures/, results_all.csv).
        preset: the preset layered on the paper's flagfiles.
        manifest: manifest CSV of the data; None generates phantoms into ``results_dir/data``.
        schemes: schemes to run (default: the preset's).
        folds: held-out folds (default: the preset's, else every fold).
        seeds: training seeds = repetitions (default: the preset's).
        train_overrides: ``dltk-mm-train`` flags (``--name=value``) applied after the preset.
        phantoms_per_modality: CT and MR phantoms generated without a manifest (default: preset).
        phantom_seed: seed of the phantom generator.
        eval_overlap: sliding-window overlap of the evaluation (default: the preset's, 0.5).
        weights: evaluate the ``"last"`` weights (default; no model selection on the test fold)
            or the ``"best"`` validation weights.
        surface_metrics: also compute HD95 and ASSD.
        max_runs: stop after training this many runs (None: all); for splitting the work.
        config_dir: folder of the flagfiles.
    """

    results_dir: Path
    preset: Preset
    manifest: Path | None = None
    schemes: tuple[str, ...] | None = None
    folds: tuple[int, ...] | None = None
    seeds: tuple[int, ...] | None = None
    train_overrides: tuple[str, ...] = ()
    phantoms_per_modality: int | None = None
    phantom_seed: int = 0
    eval_overlap: float | None = None
    weights: str = "last"
    surface_metrics: bool = True
    max_runs: int | None = None
    config_dir: Path = CONFIG_DIR

    @property
    def effective_schemes(self) -> tuple[str, ...]:
        """The schemes run."""
        return tuple(s.lower() for s in (self.schemes or self.preset.schemes))

    @property
    def effective_seeds(self) -> tuple[int, ...]:
        """The seeds run."""
        return tuple(self.seeds if self.seeds is not None else self.preset.seeds)

    @property
    def effective_overlap(self) -> float:
        """The evaluation's window overlap."""
        return self.preset.eval_overlap if self.eval_overlap is None else self.eval_overlap

    @property
    def cache_dir(self) -> Path:
        """The preprocessing cache shared by all runs."""
        return self.results_dir / "cache"


@dataclasses.dataclass
class RunSpec:
    """One run: a scheme trained on one fold split with one seed.

    Attributes:
        scheme: training scheme.
        fold: held-out fold.
        seed: training seed.
        model_dir: the run's folder.
        config: its training configuration.
    """

    scheme: str
    fold: int
    seed: int
    model_dir: Path
    config: TrainConfig

    @property
    def name(self) -> str:
        """``scheme/fold<k>/seed<s>``."""
        return f"{self.scheme}/fold{self.fold}/seed{self.seed}"


@dataclasses.dataclass
class RunOutcome:
    """What happened to one run in this call.

    Attributes:
        spec: the run.
        status: ``"skipped"`` (already finished), ``"done"`` (finished now) or
            ``"interrupted"``.
        initial_step: the step training started from in this call (-1 if skipped).
        elapsed_s: wall time spent on it in this call.
        mean_dice: mean Dice over its held-out subjects and organs (NaN if not evaluated).
        interrupted_by: the signal that stopped its training, or None.
    """

    spec: RunSpec
    status: str
    initial_step: int = -1
    elapsed_s: float = 0.0
    mean_dice: float = math.nan
    interrupted_by: int | None = None


@dataclasses.dataclass
class BenchmarkReport:
    """The outcome of :func:`run_benchmark`.

    Attributes:
        results_dir: the output folder.
        outcomes: one per run visited, in order.
        interrupted_by: the signal that stopped the benchmark, or None.
        files: name -> path of the tables and figures written (empty when interrupted).
        elapsed_s: wall time of the call.
    """

    results_dir: Path
    outcomes: list[RunOutcome]
    interrupted_by: int | None
    files: dict[str, Path]
    elapsed_s: float

    def names(self, status: str) -> list[str]:
        """Names (``scheme/fold<k>/seed<s>``) of the runs with ``status``."""
        return [o.spec.name for o in self.outcomes if o.status == status]


def train_flag_values() -> flags.FlagValues:
    """A fresh FlagValues holding the ``dltk-mm-train`` flags."""
    values = flags.FlagValues()
    train_cli.define_flags(values)
    return values


def train_config(scheme: str, fold: int, seed: int, manifest: Path, model_dir: Path,
                 settings: BenchmarkSettings) -> TrainConfig:
    """The :class:`~dltk_mm.training.TrainConfig` of one run.

    Layers, later winning: ``common.cfg``, ``<scheme>.cfg``, the preset's flags, the cache folder,
    ``settings.train_overrides``, and the run's own manifest / scheme / fold / seed.

    Raises:
        ConfigurationError: unknown flags or values (naming them).
    """
    values = train_flag_values()
    files = scheme_flagfiles(scheme, settings.config_dir)
    argv = ["dltk-mm-benchmark", *[f"--flagfile={f}" for f in files],
            *settings.preset.train_args(), f"--cache_dir={settings.cache_dir}",
            *settings.train_overrides, f"--manifest={manifest}", f"--model_dir={model_dir}",
            f"--scheme={scheme}", f"--fold={fold}", f"--seed={seed}"]
    try:
        values(argv)
    except (flags.Error, app.UsageError) as error:
        raise ConfigurationError(
            f"bad training flags for scheme {scheme} ({' '.join(argv[1:])}): {error}"
        ) from error
    return train_cli.config_from_flags(values)


def plan_runs(settings: BenchmarkSettings, manifest: Path) -> list[RunSpec]:
    """Every (scheme, fold, seed) run, in the order run: seed, fold, then scheme (so that a
    partial benchmark has complete comparisons early)."""
    schemes = settings.effective_schemes
    for scheme in schemes:
        scheme_flagfiles(scheme, settings.config_dir)
    folds = settings.folds if settings.folds is not None else settings.preset.folds
    if folds is None:
        probe = train_config(schemes[0], 0, 0, manifest, settings.results_dir / "probe",
                             settings)
        folds = tuple(range(probe.num_folds))
    runs = []
    for seed in settings.effective_seeds:
        for fold in folds:
            for scheme in schemes:
                model_dir = settings.results_dir / RUNS_DIR / scheme / f"fold{fold}" / f"seed{seed}"
                config = train_config(scheme, fold, seed, manifest, model_dir, settings)
                runs.append(RunSpec(scheme, int(fold), int(seed), model_dir, config))
    return runs


# ---------------------------------------------------------------------------------------------
# Data


def phantom_manifest(settings: BenchmarkSettings) -> Path:
    """The built-in phantom data set (generated once into ``results_dir/data/phantoms``)."""
    from dltk_mm.io.phantoms import generate_phantom_dataset

    count = settings.phantoms_per_modality or settings.preset.phantoms_per_modality
    if count < 2:
        raise ConfigurationError(f"phantoms_per_modality must be >= 2 (one per fold), got {count}")
    out_dir = settings.results_dir / "data" / "phantoms"
    marker = out_dir / "phantoms.json"
    manifest = out_dir / "manifest.csv"
    if marker.is_file() and manifest.is_file():
        previous = json.loads(marker.read_text())
        if (previous.get("seed"), previous.get("num_ct"), previous.get("num_mr")) == (
                settings.phantom_seed, count, count):
            return manifest
        raise ConfigurationError(
            f"{out_dir} holds phantoms with other settings (seed {previous.get('seed')}, "
            f"{previous.get('num_ct')} per modality); finished runs were trained on them: use "
            "another --results_dir, or the same --phantoms_per_modality/--phantom_seed"
        )
    print(f"generating {count} CT + {count} MR phantoms into {out_dir}", flush=True)
    summary = generate_phantom_dataset(out_dir, num_ct=count, num_mr=count,
                                       seed=settings.phantom_seed)
    return summary.manifest_path


def resolve_manifest(settings: BenchmarkSettings) -> Path:
    """The manifest of the benchmark: the given one, or the phantoms'."""
    if settings.manifest is None:
        return phantom_manifest(settings).resolve()
    manifest = Path(settings.manifest).expanduser().resolve()
    if not manifest.is_file():
        raise InputDataError(f"manifest {manifest}: file not found; check --manifest")
    return manifest


# ---------------------------------------------------------------------------------------------
# One run


def _atomic_write(path: Path, write: Any) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    os.replace(temporary, path)


def evaluate_run(spec: RunSpec, settings: BenchmarkSettings) -> pd.DataFrame:
    """Segments the run's held-out subjects and scores them (Dice, HD95, ASSD per organ).

    Each held-out volume of each modality is segmented on its preprocessed grid with that
    modality's stream (sliding window of the training patch size, ``eval_overlap``, probabilities
    averaged, argmax) and compared with its label; distances use the preprocessed spacing. The
    predictions are kept in ``<model_dir>/predictions/<modality>_<subject>.npz`` for the figures.

    Returns:
        One row per subject and organ (:data:`experiments.paper.tables.RESULT_COLUMNS`).
    """
    import keras

    from dltk_mm.core.metrics import dice_per_class, organ_metrics
    from dltk_mm.inference.sliding_window import sliding_window_inference
    from dltk_mm.io.labels import LABEL_NAMES
    from dltk_mm.training.model_dir import load_trained_model
    from dltk_mm.training.trainer import load_training_data, make_predict_fn

    config = spec.config
    data = load_training_data(config, settings.cache_dir)
    loaded = load_trained_model(spec.model_dir, weights=settings.weights)
    model = loaded.model
    predictions_dir = spec.model_dir / PREDICTIONS_DIR
    predictions_dir.mkdir(exist_ok=True)
    rows = []
    for modality in config.modalities:
        volumes = data.validation.get(modality, [])
        if not volumes:
            continue
        predict = make_predict_fn(model, modality)
        for volume in volumes:
            probabilities = sliding_window_inference(
                volume.image, predict, patch_size=config.pipeline.patch_size,
                overlap=settings.effective_overlap,
                batch_size=config.effective_validation_batch_size,
                num_classes=config.network.num_classes)
            prediction = np.argmax(probabilities, axis=-1).astype(np.uint8)
            np.savez_compressed(predictions_dir / f"{modality}_{volume.subject_id}.npz",
                                prediction=prediction)
            if settings.surface_metrics:
                metrics = organ_metrics(prediction, volume.label, volume.geometry.spacing,
                                        class_names=LABEL_NAMES)
            else:
                dice = dice_per_class(prediction, volume.label, num_classes=len(LABEL_NAMES),
                                      include_background=True)
                metrics = {organ: {"dice": float(dice[i + 1]), "hd95_mm": math.nan,
                                   "assd_mm": math.nan} for i, organ in enumerate(ORGANS)}
            for organ in ORGANS:
                values = metrics[organ]
                rows.append({"scheme": spec.scheme, "fold": spec.fold, "seed": spec.seed,
                             "subject_id": volume.subject_id, "modality": modality,
                             "organ": organ, "dice": values["dice"],
                             "hd95_mm": values["hd95_mm"], "assd_mm": values["assd_mm"]})
    del model, loaded
    keras.backend.clear_session()
    return pd.DataFrame(rows, columns=list(tables_lib.RESULT_COLUMNS))


def check_finished(spec: RunSpec) -> bool:
    """Whether the run is finished (``DONE.json``); refuses one with other settings.

    Raises:
        ConfigurationError: a finished run whose saved configuration differs from ``spec``'s in
            more than the schedule options.
    """
    from dltk_mm.training.model_dir import load_config

    if not (spec.model_dir / DONE_FILE).is_file():
        return False
    saved = load_config(spec.model_dir)
    different = saved.incompatible_differences(spec.config)
    different.pop("cache_dir", None)
    if different:
        shown = "; ".join(f"{k}: {a!r} (saved) != {b!r} (now)" for k, (a, b) in different.items())
        raise ConfigurationError(
            f"{spec.model_dir} holds a finished run with other settings ({shown}); use another "
            "--results_dir for other settings, or delete that run folder to redo it"
        )
    return True


def run_one(spec: RunSpec, settings: BenchmarkSettings, callbacks: Sequence[Any] = ()
            ) -> RunOutcome:
    """Trains (or resumes) and evaluates one run; writes ``evaluation.csv`` then ``DONE.json``."""
    from dltk_mm.training.trainer import train

    started = time.monotonic()
    if check_finished(spec):
        return RunOutcome(spec, "skipped")
    result = train(spec.config, spec.model_dir, callbacks=[_RunReporter(), *callbacks])
    if result.interrupted_by is not None:
        return RunOutcome(spec, "interrupted", initial_step=result.initial_step,
                          elapsed_s=time.monotonic() - started,
                          interrupted_by=int(result.interrupted_by))
    frame = evaluate_run(spec, settings)
    _atomic_write(spec.model_dir / EVALUATION_FILE, lambda p: frame.to_csv(p, index=False))
    mean = float(np.nanmean(frame["dice"])) if len(frame) else math.nan
    elapsed = time.monotonic() - started
    subjects = int(frame["subject_id"].nunique()) if len(frame) else 0
    done = {"scheme": spec.scheme, "fold": spec.fold, "seed": spec.seed,
            "steps": spec.config.steps, "weights": settings.weights,
            "eval_overlap": settings.effective_overlap, "subjects": subjects,
            "mean_dice": mean, "elapsed_s_this_call": elapsed,
            "finished": datetime.datetime.now().isoformat(timespec="seconds")}
    _atomic_write(spec.model_dir / DONE_FILE,
                  lambda p: p.write_text(json.dumps(done, indent=1), encoding="utf-8"))
    return RunOutcome(spec, "done", initial_step=result.initial_step, elapsed_s=elapsed,
                      mean_dice=mean)


class _RunReporter(TrainingCallback):
    """Prints a few progress lines per run (data, resume, loss every fifth of the steps)."""

    def __init__(self) -> None:
        self.every = 1
        self.steps = 0
        self.started = time.monotonic()

    def on_preprocess(self, done: int, total: int, volume: Any) -> None:
        if done == total:
            print(f"    data: {total} volumes ready", flush=True)

    def on_train_begin(self, info: Any) -> None:
        self.steps = info.config.steps
        self.every = max(1, self.steps // 5)
        self.started = time.monotonic()
        if info.resumed_from is not None:
            print(f"    resuming from step {info.initial_step}", flush=True)
        print(f"    {info.num_parameters:,} parameters, lr {info.config.effective_learning_rate:g}"
              f", {self.steps} steps", flush=True)

    def on_step_end(self, step: int, logs: Any) -> None:
        if step % self.every == 0 or step == self.steps:
            print(f"    step {step}/{self.steps} loss {logs.get('loss', math.nan):.4f} "
                  f"({time.monotonic() - self.started:.0f} s)", flush=True)


# ---------------------------------------------------------------------------------------------
# Aggregation


def load_results(results_dir: str | os.PathLike) -> pd.DataFrame:
    """All finished runs' ``evaluation.csv`` under ``results_dir/runs`` in one frame."""
    frames = []
    for done in sorted(Path(results_dir, RUNS_DIR).glob(f"*/fold*/seed*/{DONE_FILE}")):
        path = done.parent / EVALUATION_FILE
        if path.is_file():
            frames.append(pd.read_csv(path, dtype={"subject_id": str}))
    if not frames:
        return pd.DataFrame(columns=list(tables_lib.RESULT_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def _overlay_inputs(results_dir: Path, results: pd.DataFrame, modality: str
                    ) -> tuple[Any, dict[str, np.ndarray], str, int, int] | None:
    from dltk_mm.io.manifest import load_manifest
    from dltk_mm.io.preprocessing import preprocess_manifest
    from dltk_mm.training.model_dir import load_config

    frame = results[results["modality"] == modality]
    if frame.empty:
        return None
    counts = frame.groupby(["fold", "seed"])["scheme"].nunique().reset_index()
    counts = counts.sort_values(["scheme", "fold", "seed"], ascending=[False, True, True])
    fold, seed = int(counts.iloc[0]["fold"]), int(counts.iloc[0]["seed"])
    chosen = frame[(frame["fold"] == fold) & (frame["seed"] == seed)]
    subject = sorted(chosen["subject_id"].astype(str).unique())[0]
    predictions = {}
    config = None
    for scheme in sorted(chosen["scheme"].unique()):
        run_dir = results_dir / RUNS_DIR / scheme / f"fold{fold}" / f"seed{seed}"
        path = run_dir / PREDICTIONS_DIR / f"{modality}_{subject}.npz"
        if path.is_file():
            with np.load(path) as data:
                predictions[scheme] = data["prediction"]
            config = config or load_config(run_dir)
    if config is None:
        return None
    manifest = load_manifest(config.manifest)
    rows = manifest[(manifest["subject_id"].astype(str) == subject)
                    & (manifest["modality"] == modality)]
    cache = config.cache_dir or str(results_dir / "cache")
    volume = preprocess_manifest(rows, config.preprocessing, cache)[0]
    return volume, predictions, subject, fold, seed


def aggregate(results_dir: str | os.PathLike, header: str = "") -> dict[str, Path]:
    """Gathers every finished run and writes ``results_all.csv``, the tables and the figures.

    Returns:
        Name -> path of every file written (empty when no run has finished).
    """
    results_dir = Path(results_dir)
    results = load_results(results_dir)
    if results.empty:
        return {}
    files: dict[str, Path] = {}
    all_csv = results_dir / "results_all.csv"
    _atomic_write(all_csv, lambda p: results.to_csv(p, index=False))
    files["results_all"] = all_csv
    files.update(tables_lib.write_tables(results, results_dir / "tables", header=header))
    figure_dir = results_dir / "figures"
    for modality, number in (("mr", 6), ("ct", 7)):
        if (results["modality"] == modality).any():
            name = f"figure{number}_boxplots_{modality}"
            files[name] = figures_lib.boxplot_figure(results, modality,
                                                     figure_dir / f"{name}.png")
    for modality, number in (("mr", 4), ("ct", 5)):
        inputs = _overlay_inputs(results_dir, results, modality)
        if inputs is None:
            continue
        volume, predictions, subject, fold, seed = inputs
        scores = figures_lib.subject_scores(results, subject, modality, list(predictions),
                                            fold, seed)
        name = f"figure{number}_overlay_{modality}"
        title = (f"{tables_lib.MODALITY_TITLES.get(modality, modality)} subject {subject} "
                 f"(fold {fold}, seed {seed})")
        files[name] = figures_lib.overlay_figure(volume.image, volume.label, predictions,
                                                 figure_dir / f"{name}.png", title=title,
                                                 scores=scores)
    return files


# ---------------------------------------------------------------------------------------------
# The benchmark


def _duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _header(settings: BenchmarkSettings, manifest: Path, runs: Sequence[RunSpec]) -> str:
    first = runs[0].config if runs else None
    lines = [
        "# dltk_mm: Valindria et al. (WACV 2018), Tables 1-3 reproduced",
        "",
        f"- preset: `{settings.preset.name}` ({settings.preset.description})",
        f"- data: `{manifest}`" + (" (built-in phantoms)" if settings.manifest is None else ""),
        f"- schemes: {', '.join(settings.effective_schemes)}; folds: "
        f"{sorted({r.fold for r in runs})}; seeds: {list(settings.effective_seeds)}",
        f"- evaluation: {settings.weights} weights, sliding window overlap "
        f"{settings.effective_overlap}, on the preprocessed grid",
    ]
    if first is not None:
        lines.append(
            f"- training: {first.steps} steps, batch {first.pipeline.batch_size} x "
            f"{'x'.join(map(str, first.pipeline.patch_size))} at "
            f"{first.preprocessing.spacing_mm} mm, filters {list(first.network.filters)} x "
            f"width {first.network.width}, {first.network.num_res_units} residual units/scale")
    if settings.train_overrides:
        lines.append(f"- command-line overrides: `{' '.join(settings.train_overrides)}`")
    lines += ["- generated " + datetime.datetime.now().isoformat(timespec="seconds"), ""]
    return "\n".join(lines)


def run_benchmark(settings: BenchmarkSettings, callbacks: Sequence[Any] = (),
                  aggregate_only: bool = False) -> BenchmarkReport:
    """Runs (or continues) the benchmark and writes the tables and figures.

    Args:
        settings: what to run.
        callbacks: extra :class:`dltk_mm.training.TrainingCallback` objects for every run.
        aggregate_only: only rebuild the tables and figures from the finished runs.

    Returns:
        The :class:`BenchmarkReport`.

    Raises:
        ConfigurationError, InputDataError: bad options or data.
    """
    started = time.monotonic()
    results_dir = Path(settings.results_dir).expanduser().resolve()
    settings = dataclasses.replace(settings, results_dir=results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    unknown = [s for s in settings.effective_schemes if s not in AVAILABLE_SCHEMES]
    if unknown:
        raise ConfigurationError(
            f"unknown scheme(s) {unknown}; choose from {list(AVAILABLE_SCHEMES)}")
    manifest = resolve_manifest(settings)
    runs = plan_runs(settings, manifest)
    outcomes: list[RunOutcome] = []
    interrupted_by = None
    if not aggregate_only:
        print(f"benchmark: {len(runs)} runs ({settings.preset.name} preset) into {results_dir}",
              flush=True)
        trained_time, trained = 0.0, 0
        for index, spec in enumerate(runs, start=1):
            if settings.max_runs is not None and trained >= settings.max_runs:
                print(f"stopping after {trained} trained runs (--max_runs)", flush=True)
                break
            if check_finished(spec):
                outcomes.append(RunOutcome(spec, "skipped"))
                print(f"[{index}/{len(runs)}] {spec.name}: finished earlier, skipped", flush=True)
                continue
            elapsed = time.monotonic() - started
            print(f"[{index}/{len(runs)}] {spec.name}: start (elapsed {_duration(elapsed)})",
                  flush=True)
            outcome = run_one(spec, settings, callbacks)
            outcomes.append(outcome)
            if outcome.status == "interrupted":
                interrupted_by = outcome.interrupted_by
                print(f"[{index}/{len(runs)}] {spec.name}: interrupted; rerun the same command "
                      "to continue", flush=True)
                break
            trained += 1
            trained_time += outcome.elapsed_s
            remaining = sum(1 for r in runs[index:] if not (r.model_dir / DONE_FILE).is_file())
            eta = trained_time / trained * remaining
            print(f"[{index}/{len(runs)}] {spec.name}: done in {_duration(outcome.elapsed_s)}, "
                  f"mean Dice {outcome.mean_dice:.3f}; {remaining} to go, ETA {_duration(eta)}",
                  flush=True)
    files: dict[str, Path] = {}
    if interrupted_by is None:
        files = aggregate(results_dir, header=_header(settings, manifest, runs))
    return BenchmarkReport(results_dir=results_dir, outcomes=outcomes,
                           interrupted_by=interrupted_by, files=files,
                           elapsed_s=time.monotonic() - started)


# ---------------------------------------------------------------------------------------------
# Command line

FLAGS = flags.FLAGS
_TRAIN_OVERRIDES: list[str] = []


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines the driver's own flags (any ``dltk-mm-train`` flag is accepted as well)."""
    fv = flag_values
    flags.DEFINE_enum("preset", "paper", sorted(PRESETS), "Settings on top of the paper's "
                      "flagfiles: paper (GPU), cpu (about 13 minutes per model on 2 cores), "
                      "smoke (minutes).", flag_values=fv)
    flags.DEFINE_string("manifest", None, "Manifest CSV of CT and MR volumes with labels "
                        "(default: built-in phantoms generated into <results_dir>/data).",
                        flag_values=fv)
    flags.DEFINE_string("results_dir", None, "Output folder (default: results/<preset>).",
                        flag_values=fv)
    flags.DEFINE_list("schemes", None, "Schemes (default: the preset's); from "
                      f"{list(AVAILABLE_SCHEMES)} (*_code: the authors' code's wiring).",
                      flag_values=fv)
    flags.DEFINE_list("folds", None, "Held-out folds (default: the preset's, else all).",
                      flag_values=fv)
    flags.DEFINE_list("seeds", None, "Training seeds, one repetition each (default: the "
                      "preset's; paper: 0,1,2).", flag_values=fv)
    flags.DEFINE_integer("phantoms_per_modality", None, "Phantoms per modality without "
                         "--manifest (default: the preset's).", lower_bound=2, flag_values=fv)
    flags.DEFINE_integer("phantom_seed", 0, "Seed of the phantom generator.", flag_values=fv)
    flags.DEFINE_float("eval_overlap", None, "Sliding-window overlap of the evaluation "
                       "(default 0.5).", lower_bound=0.0, upper_bound=0.95, flag_values=fv)
    flags.DEFINE_enum("weights", "last", ["last", "best"], "Evaluate the last weights (no "
                      "selection on the test fold) or the best validation weights.",
                      flag_values=fv)
    flags.DEFINE_bool("surface_metrics", True, "Also compute HD95 and ASSD.", flag_values=fv)
    flags.DEFINE_bool("aggregate_only", False, "Only rebuild the tables and figures from the "
                      "finished runs.", flag_values=fv)
    flags.DEFINE_integer("max_runs", None, "Stop after training this many runs (rerun to "
                         "continue).", lower_bound=1, flag_values=fv)


def _ints(values: Sequence[str] | None, name: str) -> tuple[int, ...] | None:
    if values is None:
        return None
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise app.UsageError(f"--{name} must be comma-separated integers, got "
                             f"{','.join(values)}") from None


def split_arguments(argv: Sequence[str], driver_flags: flags.FlagValues = FLAGS
                    ) -> tuple[list[str], list[str]]:
    """Splits a command line into the driver's arguments and ``dltk-mm-train`` overrides.

    Flagfiles are expanded first. An argument naming a training flag that the driver does not
    define goes to the overrides (``--name value`` becomes ``--name=value``).

    Raises:
        app.UsageError: for a training flag that the driver sets itself (model_dir, scheme, fold,
            seed, restart).
    """
    expanded = driver_flags.read_flags_from_files(list(argv[1:]), force_gnu=False)
    train_values = train_flag_values()
    driver, overrides = [argv[0]], []
    index = 0
    while index < len(expanded):
        arg = expanded[index]
        index += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            driver.append(arg)
            continue
        name = arg.lstrip("-").split("=", 1)[0]
        bare = name[2:] if name.startswith("no") and name[2:] in train_values else name
        if name in driver_flags or bare in driver_flags or bare not in train_values:
            driver.append(arg)
            continue
        if bare in RESERVED_TRAIN_FLAGS:
            raise app.UsageError(f"--{bare} is set by the benchmark for every run; use --schemes, "
                                 "--folds, --seeds, --manifest or --results_dir instead")
        if "=" not in arg and not train_values[bare].boolean and index < len(expanded):
            arg = f"--{bare}={expanded[index]}"
            index += 1
        overrides.append(arg)
    return driver, overrides


def _parse(argv: list[str]) -> list[str]:
    driver, overrides = split_arguments(argv)
    _TRAIN_OVERRIDES[:] = overrides
    return FLAGS(driver)


def settings_from_flags(fv: flags.FlagValues = FLAGS,
                        overrides: Sequence[str] = ()) -> BenchmarkSettings:
    """The :class:`BenchmarkSettings` of parsed flags."""
    preset = get_preset(fv.preset)
    results_dir = Path(fv.results_dir or Path("results") / preset.name)
    return BenchmarkSettings(
        results_dir=results_dir, preset=preset,
        manifest=Path(fv.manifest) if fv.manifest else None,
        schemes=tuple(fv.schemes) if fv.schemes else None,
        folds=_ints(fv.folds, "folds"), seeds=_ints(fv.seeds, "seeds"),
        train_overrides=tuple(overrides),
        phantoms_per_modality=fv.phantoms_per_modality, phantom_seed=fv.phantom_seed,
        eval_overlap=fv.eval_overlap, weights=fv.weights, surface_metrics=fv.surface_metrics,
        max_runs=fv.max_runs,
    )


def _print_summary(report: BenchmarkReport) -> None:
    table3 = report.files.get("table3_overall")
    if table3 is not None:
        frame = pd.read_csv(table3)
        print("\nTable 3: mean Dice over organs, MR and CT averaged (measured vs paper)")
        for _, row in frame.iterrows():
            paper = "-" if not math.isfinite(row["paper"]) else f"{row['paper']:.3f}"
            difference = "-" if not math.isfinite(row["difference"]) else \
                f"{row['difference']:+.3f}"
            print(f"  {row['scheme']:<11} {row['measured_mean']:.3f} ± {row['measured_std']:.3f}"
                  f"   paper {paper}   difference {difference}")
    print(f"\nfinished in {_duration(report.elapsed_s)}: "
          f"{len(report.names('done'))} runs trained now, {len(report.names('skipped'))} "
          "skipped (finished earlier)")
    for name, path in report.files.items():
        print(f"  {name}: {path}")
    sys.stdout.flush()


@handle_errors
def main(argv: list[str]) -> int:
    """Runs the benchmark per the flags; returns the exit status."""
    del argv
    settings = settings_from_flags(FLAGS, _TRAIN_OVERRIDES)
    report = run_benchmark(settings, aggregate_only=FLAGS.aggregate_only)
    if report.interrupted_by is not None:
        return EXIT_INTERRUPTED.get(report.interrupted_by, 128 + int(report.interrupted_by))
    if not report.files:
        print("no finished run yet: nothing to tabulate")
        return 0
    _print_summary(report)
    return 0


def run() -> None:
    """Console-script entry point (``dltk-mm-benchmark``)."""
    define_flags(FLAGS)
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=_parse)


if __name__ == "__main__":
    run()
