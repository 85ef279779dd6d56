"""The data of one training run: the manifest's rows of the run's modalities, split into the
training and held-out fold, and their preprocessed volumes.

Roles (``split.csv``): ``train``; ``validation``, what the run validates on and picks its best
weights by (the held-out fold, or with ``TrainConfig.validation_holdout`` subjects taken out of
the training rows); ``test``, the held-out fold when it is not validated on (the run never reads
it).
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from absl import logging

from dltk_mm.errors import ConfigurationError, InputDataError
from dltk_mm.io.manifest import load_manifest
from dltk_mm.io.preprocessing import PreprocessedVolume, preprocess_manifest
from dltk_mm.training.config import TrainConfig
from dltk_mm.training.folds import split_manifest

_SHOWN_ROWS = 20


@dataclasses.dataclass
class SplitRows:
    """The manifest rows a run uses.

    Attributes:
        train: training rows (with a ``fold`` column).
        validation: the rows validated on: the held-out fold (empty for ``fold = -1``), or the
            subjects taken out of the training rows (``TrainConfig.validation_holdout``).
        test: the held-out fold when it is not validated on (else empty).
    """

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame | None = None

    def _parts(self) -> tuple[tuple[str, pd.DataFrame], ...]:
        parts = (("train", self.train), ("validation", self.validation))
        return parts if self.test is None else (*parts, ("test", self.test))

    @property
    def table(self) -> pd.DataFrame:
        """subject_id, modality, fold, role (``train`` / ``validation`` / ``test``) per volume."""
        parts = self._parts()
        rows = pd.concat([frame for _, frame in parts])
        return pd.DataFrame({
            "subject_id": [str(s) for s in rows["subject_id"]],
            "modality": list(rows["modality"]),
            "fold": [int(f) for f in rows["fold"]],
            "role": [role for role, frame in parts for _ in range(len(frame))],
        })

    def records(self) -> list[dict[str, Any]]:
        """One dict per volume: subject_id, modality, image, label, fold, role."""
        records = []
        for role, rows in self._parts():
            for _, row in rows.iterrows():
                records.append({"subject_id": str(row["subject_id"]),
                                "modality": str(row["modality"]), "image": row["image"],
                                "label": row["label"], "fold": int(row["fold"]), "role": role})
        return records


@dataclasses.dataclass
class TrainingData:
    """Preprocessed volumes of one fold.

    Attributes:
        train: modality -> training volumes.
        validation: modality -> the volumes validated on (empty lists for ``fold = -1`` without
            ``validation_holdout``).
        split: subject_id, modality, fold, role (``train`` / ``validation`` / ``test``) per
            volume.
    """

    train: dict[str, list[PreprocessedVolume]]
    validation: dict[str, list[PreprocessedVolume]]
    split: pd.DataFrame


def _lines(frame: pd.DataFrame, indices: list[Any]) -> str:
    shown = ", ".join(f"line {int(i) + 2} ({frame.at[i, 'subject_id']}, "
                      f"{frame.at[i, 'modality']})" for i in indices[:_SHOWN_ROWS])
    more = len(indices) - _SHOWN_ROWS
    return shown + (f" and {more} more" if more > 0 else "")


def _select_modalities(manifest: pd.DataFrame, config: TrainConfig) -> pd.DataFrame:
    """The rows of ``config.modalities``; other rows are refused unless
    ``config.ignore_other_modalities``."""
    wanted = manifest["modality"].isin(config.modalities)
    others = [index for index in manifest.index if not wanted[index]]
    if others and not config.ignore_other_modalities:
        raise InputDataError(
            f"manifest {config.manifest}: {len(others)} rows have a modality other than "
            f"{'/'.join(config.modalities)} (the run's --modalities): {_lines(manifest, others)}; "
            "fix their modality column (mr or ct), remove them, or pass "
            "--ignore_other_modalities to train without them"
        )
    if others:
        logging.warning("manifest %s: left out %d rows of other modalities than %s",
                        config.manifest, len(others), "/".join(config.modalities))
    return manifest[wanted]


def select_rows(config: TrainConfig) -> SplitRows:
    """Reads the manifest and splits the rows of the run's modalities into folds.

    Raises:
        InputDataError: bad manifest rows, rows of other modalities, missing labels.
        ConfigurationError: a fold that does not exist.
    """
    manifest = load_manifest(config.manifest)
    selected = _select_modalities(manifest, config)
    unlabelled = [index for index, label in selected["label"].items() if not label]
    if unlabelled:
        raise InputDataError(
            f"manifest {config.manifest}: training needs a label for every "
            f"{'/'.join(config.modalities)} row; missing on {_lines(selected, unlabelled)}; "
            "fill the label column or remove those rows"
        )
    train_rows, held_out_rows = split_manifest(
        manifest, config.fold, config.num_folds, config.split_seed, config.modalities
    )
    if config.validation_holdout == 0:
        return SplitRows(train=train_rows, validation=held_out_rows)
    train_rows, validation_rows = _hold_out_of_training(train_rows, config)
    return SplitRows(train=train_rows, validation=validation_rows, test=held_out_rows)


def _hold_out_of_training(train_rows: pd.DataFrame, config: TrainConfig
                          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``config.validation_holdout`` subjects per modality moved out of the training rows: a
    seeded draw of the sorted subject ids (``split_seed``, the fold and the modality's name), so
    the same subjects are drawn whatever the row order or the training seed.

    Raises:
        ConfigurationError: a modality that would keep no training subject.
    """
    count = config.validation_holdout
    chosen = []
    for modality in config.modalities:
        rows = train_rows[train_rows["modality"] == modality]
        if len(rows) <= count:
            raise ConfigurationError(
                f"validation_holdout={count} takes {count} {modality} subject(s) out of the "
                f"training rows, which hold only {len(rows)}: lower --validation_holdout or add "
                f"{modality} subjects")
        subjects = sorted(str(s) for s in rows["subject_id"])
        rng = np.random.default_rng(
            [int(config.split_seed), int(config.fold) + 1, zlib.crc32(modality.encode("utf-8"))])
        drawn = {subjects[i] for i in rng.choice(len(subjects), count, replace=False)}
        chosen += [index for index, subject in rows["subject_id"].items() if str(subject) in drawn]
    return train_rows.drop(index=chosen), train_rows.loc[chosen]


def load_training_data(
    config: TrainConfig,
    cache_dir: str | os.PathLike | None,
    progress: Callable[[int, int, PreprocessedVolume], None] | None = None,
    rows: SplitRows | None = None,
) -> TrainingData:
    """Preprocesses the fold's volumes (reading and splitting the manifest unless ``rows`` are
    given, see :func:`select_rows`).

    Raises:
        InputDataError: bad manifest rows, missing labels, empty modalities.
        ConfigurationError: a fold that does not exist.
    """
    rows = select_rows(config) if rows is None else rows
    volumes = preprocess_manifest(pd.concat([rows.train, rows.validation]), config.preprocessing,
                                  cache_dir, progress=progress)
    train: dict[str, list[PreprocessedVolume]] = {m: [] for m in config.modalities}
    validation: dict[str, list[PreprocessedVolume]] = {m: [] for m in config.modalities}
    split = rows.table
    read_roles = split["role"][split["role"] != "test"]  # the test rows are never read
    for volume, role in zip(volumes, read_roles, strict=True):
        if volume.label is None:
            raise InputDataError(f"{volume.image_path}: preprocessing returned no label")
        (train if role == "train" else validation)[volume.modality].append(volume)
    return TrainingData(train=train, validation=validation, split=split)
