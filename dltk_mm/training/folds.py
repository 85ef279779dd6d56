"""Cross-validation folds per modality (Valindria et al., WACV 2018: 2-fold, fixed split).

CT and MR subjects are unpaired, so each modality is split on its own. A manifest column ``fold``
(non-negative integers) fixes the split; without it the subjects of each modality are shuffled with
a seeded generator (seed and modality name, so the split does not depend on the row order, the
other modalities or the training seed) and dealt round-robin into ``num_folds`` folds of equal
size (+-1).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
from absl import logging

from dltk_mm.errors import ConfigurationError, InputDataError

FOLD_COLUMN = "fold"


def _where(frame: pd.DataFrame, index: object) -> str:
    source = frame.attrs.get("manifest_path", "manifest")
    line = f"line {int(index) + 2}" if isinstance(index, (int, np.integer)) else f"row {index}"
    return f"{source}, {line} (subject {frame.at[index, 'subject_id']})"


def _column_folds(frame: pd.DataFrame) -> pd.Series:
    folds = {}
    problems = []
    for index, value in frame[FOLD_COLUMN].items():
        text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
        text = text.strip()
        try:
            fold = int(float(text)) if text else None
            if fold is not None and (fold < 0 or fold != float(text)):
                fold = None
        except ValueError:
            fold = None
        if fold is None:
            problems.append(f"{_where(frame, index)}: fold {text!r} is not an integer >= 0")
        else:
            folds[index] = fold
    if problems:
        raise InputDataError(
            "the manifest's fold column must hold a fold number (0, 1, ...) on every row of the "
            "modalities used:\n  " + "\n  ".join(problems[:50])
            + "\nfill it in, or drop the column to get a seeded split"
        )
    return pd.Series(folds, dtype=np.int64)


def _seeded_folds(subjects: Sequence[str], modality: str, num_folds: int, seed: int) -> list[int]:
    """Fold of each subject: a seeded shuffle of the sorted ids, dealt round-robin."""
    ordered = sorted(subjects)
    rng = np.random.default_rng([int(seed), zlib.crc32(modality.encode("utf-8"))])
    permutation = rng.permutation(len(ordered))
    fold_of = {ordered[p]: position % num_folds for position, p in enumerate(permutation)}
    return [fold_of[s] for s in subjects]


def assign_folds(
    manifest: pd.DataFrame,
    num_folds: int = 2,
    seed: int = 0,
    modalities: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Adds an integer ``fold`` column: the manifest's own, or a seeded split per modality.

    Args:
        manifest: rows with at least ``subject_id`` and ``modality`` (see
            :func:`dltk_mm.io.manifest.load_manifest`); a ``fold`` column, if present, is used.
        num_folds: folds of the seeded split (paper: 2).
        seed: seed of the seeded split (keep it fixed across training repetitions).
        modalities: keep only these modalities' rows (default: all).

    Returns:
        A copy of the selected rows with an int ``fold`` column.

    Raises:
        InputDataError: for a bad ``fold`` value (naming the line and subject).
        ConfigurationError: for ``num_folds < 2``.
    """
    if num_folds < 2:
        raise ConfigurationError(f"num_folds must be >= 2, got {num_folds}")
    frame = manifest
    if modalities is not None:
        frame = frame[frame["modality"].isin(list(modalities))]
    frame = frame.copy()
    frame.attrs = dict(manifest.attrs)
    if FOLD_COLUMN in frame.columns:
        frame[FOLD_COLUMN] = _column_folds(frame)
        return frame
    folds = pd.Series(0, index=frame.index, dtype=np.int64)
    for modality, rows in frame.groupby("modality", sort=True):
        folds[rows.index] = _seeded_folds(
            [str(s) for s in rows["subject_id"]], str(modality), num_folds, seed
        )
    frame[FOLD_COLUMN] = folds
    return frame


def split_manifest(
    manifest: pd.DataFrame,
    fold: int,
    num_folds: int = 2,
    seed: int = 0,
    modalities: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and held-out rows for one fold.

    Args:
        manifest: the manifest (see :func:`assign_folds`).
        fold: the held-out fold; -1 trains on every row and holds out nothing.
        num_folds: folds of the seeded split (ignored when the manifest has a ``fold`` column).
        seed: seed of the seeded split.
        modalities: the modalities to use; each needs at least one training row.

    Returns:
        ``(train, held_out)`` copies of the rows, both with the ``fold`` column; ``held_out`` is
        empty for ``fold = -1``.

    Raises:
        ConfigurationError: for a fold that does not exist.
        InputDataError: when a modality has no rows or no training rows.
    """
    frame = assign_folds(manifest, num_folds, seed, modalities)
    source = manifest.attrs.get("manifest_path", "the manifest")
    for modality in modalities or sorted(frame["modality"].unique()):
        if not (frame["modality"] == modality).any():
            raise InputDataError(
                f"{source} has no rows of modality {modality!r} (it has "
                f"{sorted(manifest['modality'].unique())}); add them or change the modalities"
            )
    if fold == -1:
        return frame, frame.iloc[0:0].copy()
    available = sorted(int(f) for f in frame[FOLD_COLUMN].unique())
    has_column = FOLD_COLUMN in manifest.columns
    if fold < 0 or (fold >= num_folds and not has_column) or (has_column and fold not in available):
        known = available if has_column else list(range(num_folds))
        raise ConfigurationError(
            f"fold {fold} does not exist: choose one of {known} (or -1 to train on everything)"
        )
    held_out_mask = frame[FOLD_COLUMN] == fold
    train, held_out = frame[~held_out_mask].copy(), frame[held_out_mask].copy()
    for modality in modalities or sorted(frame["modality"].unique()):
        if not (train["modality"] == modality).any():
            raise InputDataError(
                f"{source}: holding out fold {fold} leaves no {modality} subject for training; "
                "add subjects, use fewer folds or check the fold column"
            )
        if not (held_out["modality"] == modality).any():
            logging.warning("fold %d holds out no %s subject: no %s validation", fold, modality,
                            modality)
    return train, held_out
