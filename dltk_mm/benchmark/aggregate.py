"""Gathering the finished runs into ``results_all.csv``, Tables 1-3 and Figures 4-7.

Only finished runs (``DONE.json``) count. ``results_all.csv`` holds every evaluation protocol
(column ``protocol``, :mod:`dltk_mm.benchmark.protocols`); Tables 1-3 and the figures in
``tables/`` and ``figures/`` are the ``paper`` protocol's (compared with the paper's numbers), the
same tables of the ``improved`` protocol go to ``tables/improved/``, and the ablation (when
given) to ``tables/ablation.md`` and ``tables/ablation.csv``. The overlays (Figures 4 and 5)
show, per modality, the first held-out subject of the fold and seed with the most schemes; its
preprocessed volume comes from the preprocessing cache of the runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from absl import logging

from dltk_mm.benchmark import figures, tables
from dltk_mm.benchmark.evaluate import prediction_file
from dltk_mm.benchmark.execute import DONE_FILE, EVALUATION_FILE
from dltk_mm.benchmark.plan import RUNS_DIR, run_dir
from dltk_mm.benchmark.protocols import ENSEMBLE, IMPROVED, PAPER, main_protocols
from dltk_mm.errors import ConfigurationError
from dltk_mm.inference import InferenceConfig
from dltk_mm.io.files import atomic_write
from dltk_mm.io.manifest import load_manifest
from dltk_mm.io.preprocessing import PreprocessedVolume, preprocess_manifest
from dltk_mm.training import load_config

#: The gathered per-run results.
RESULTS_FILE = "results_all.csv"
#: Folder of the tables (``tables/improved/``: the ``improved`` protocol's).
TABLES_DIR = "tables"
#: Modality -> the paper's box-plot figure and overlay figure numbers.
BOXPLOT_FIGURES: dict[str, int] = {"mr": 6, "ct": 7}
OVERLAY_FIGURES: dict[str, int] = {"mr": 4, "ct": 5}


@dataclasses.dataclass
class OverlayInputs:
    """What one overlay figure shows: a held-out volume and every scheme's prediction of it."""

    volume: PreprocessedVolume
    predictions: dict[str, np.ndarray]
    subject_id: str
    fold: int
    seed: int


def _legacy_protocol(done: Path) -> str:
    """The protocol of an ``evaluation.csv`` written before protocols were recorded: ``paper``
    if its ``DONE.json`` records the paper's inference options, else ``improved``."""
    try:
        recorded = json.loads(done.read_text(encoding="utf-8")).get("inference")
        inference = InferenceConfig.from_dict(recorded or {})
    except (OSError, ValueError, AttributeError, TypeError, ConfigurationError):
        return PAPER
    return PAPER if list(main_protocols(inference)) == [PAPER] else IMPROVED


def load_results(results_dir: str | os.PathLike) -> pd.DataFrame:
    """All finished runs' ``evaluation.csv`` under ``results_dir/runs`` in one frame.

    Files written before evaluation protocols (no ``protocol`` column; scored on the
    preprocessed grid) get the protocol their ``DONE.json`` records and no segmentation time.
    """
    frames = []
    for done in sorted(Path(results_dir, RUNS_DIR).glob(f"*/fold*/seed*/{DONE_FILE}")):
        path = done.parent / EVALUATION_FILE
        if not path.is_file():
            continue
        frame = pd.read_csv(path, dtype={"subject_id": str})
        if "protocol" not in frame.columns:
            logging.warning("%s predates evaluation protocols (scored on the preprocessed "
                            "grid); rerun the benchmark to evaluate it again", path)
            frame.insert(3, "protocol", _legacy_protocol(done))
        if "segment_s" not in frame.columns:
            frame["segment_s"] = np.nan
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=list(tables.RUN_RESULT_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def overlay_inputs(results_dir: Path, results: pd.DataFrame, modality: str
                   ) -> OverlayInputs | None:
    """The subject and predictions of one modality's overlay, or None without predictions."""
    frame = results[results["modality"] == modality]
    if frame.empty:
        return None
    counts = frame.groupby(["fold", "seed"])["scheme"].nunique().reset_index()
    counts = counts.sort_values(["scheme", "fold", "seed"], ascending=[False, True, True])
    fold, seed = int(counts.iloc[0]["fold"]), int(counts.iloc[0]["seed"])
    chosen = frame[(frame["fold"] == fold) & (frame["seed"] == seed)]
    subject = sorted(chosen["subject_id"].astype(str).unique())[0]
    predictions, config = {}, None
    for scheme in sorted(chosen["scheme"].unique()):
        folder = run_dir(results_dir, scheme, fold, seed)
        path = prediction_file(folder, modality, subject)
        if path.is_file():
            with np.load(path) as data:
                predictions[scheme] = data["prediction"]
            config = config or load_config(folder)
    if config is None:
        return None
    manifest = load_manifest(config.manifest)
    rows = manifest[(manifest["subject_id"].astype(str) == subject)
                    & (manifest["modality"] == modality)]
    cache = config.cache_dir or str(results_dir / "cache")
    volume = preprocess_manifest(rows, config.preprocessing, cache)[0]
    return OverlayInputs(volume, predictions, subject, fold, seed)


def _overlay(results_dir: Path, results: pd.DataFrame, modality: str, path: Path
             ) -> Path | None:
    inputs = overlay_inputs(results_dir, results, modality)
    if inputs is None:
        return None
    scores = figures.subject_scores(results, inputs.subject_id, modality,
                                    list(inputs.predictions), inputs.fold, inputs.seed)
    title = (f"{tables.MODALITY_TITLES.get(modality, modality)} subject {inputs.subject_id} "
             f"(fold {inputs.fold}, seed {inputs.seed})")
    return figures.overlay_figure(inputs.volume.image, inputs.volume.label, inputs.predictions,
                                  path, title=title, scores=scores)


def aggregate(results_dir: str | os.PathLike, headers: Mapping[str, str] | None = None,
              ablation: pd.DataFrame | None = None, ensemble: pd.DataFrame | None = None
              ) -> dict[str, Path]:
    """Gathers every finished run and writes ``results_all.csv``, the tables and the figures.

    Args:
        results_dir: the benchmark's results folder.
        headers: Markdown put before the tables, per protocol (``paper``: ``tables/tables.md``,
            ``improved``: ``tables/improved/tables.md``) and ``"ablation"``.
        ablation: the ablation's scores (:func:`~dltk_mm.benchmark.execute.ablation_results`),
            or None for no ablation table.
        ensemble: the seed ensembles' scores (:func:`~dltk_mm.benchmark.ensemble.
            ensemble_results`), or None: their Tables 1-3 go to ``tables/ensemble/``.

    Returns:
        Name -> path of every file written (empty when no run has finished); the
        ``improved`` protocol's tables are named ``improved/<name>``, the ensembles'
        ``ensemble/<name>``.
    """
    results_dir = Path(results_dir)
    headers = headers or {}
    results = load_results(results_dir)
    if results.empty:
        return {}
    files = {"results_all": atomic_write(results_dir / RESULTS_FILE,
                                         lambda p: results.to_csv(p, index=False))}
    improved = results[results["protocol"] == IMPROVED]
    if not improved.empty:
        written = tables.write_tables(improved, results_dir / TABLES_DIR / IMPROVED,
                                      header=headers.get(IMPROVED, ""))
        files.update({f"{IMPROVED}/{name}": path for name, path in written.items()})
    if ensemble is not None and len(ensemble):
        written = tables.write_tables(ensemble, results_dir / TABLES_DIR / ENSEMBLE,
                                      header=headers.get(ENSEMBLE, ""))
        files.update({f"{ENSEMBLE}/{name}": path for name, path in written.items()})
    if ablation is not None and len(ablation):
        files.update(tables.write_ablation(ablation, results_dir / TABLES_DIR,
                                           header=headers.get("ablation", "")))
    results = results[results["protocol"] == PAPER]
    if results.empty:
        return files
    files.update(tables.write_tables(results, results_dir / TABLES_DIR,
                                     header=headers.get(PAPER, "")))
    figure_dir = results_dir / "figures"
    for modality, number in BOXPLOT_FIGURES.items():
        if (results["modality"] == modality).any():
            name = f"figure{number}_boxplots_{modality}"
            files[name] = figures.boxplot_figure(results, modality, figure_dir / f"{name}.png")
    for modality, number in OVERLAY_FIGURES.items():
        name = f"figure{number}_overlay_{modality}"
        path = _overlay(results_dir, results, modality, figure_dir / f"{name}.png")
        if path is not None:
            files[name] = path
    return files
