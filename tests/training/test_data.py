"""The rows a run uses: rows of other modalities are refused, or left out when asked; validation
on subjects held out of the training rows leaves the held-out fold a test set."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from absl import logging as absl_logging

from dltk_mm.benchmark.evaluate import held_out_volumes
from dltk_mm.errors import ConfigurationError, InputDataError
from dltk_mm.training.data import load_training_data, select_rows
from tests.conftest import small_phantom_manifest
from tests.training.conftest import small_config


def _manifest_with_other_modalities(small_phantoms: Path, tmp_path: Path) -> Path:
    rows = pd.read_csv(small_phantoms)
    for column in ("image", "label"):
        rows[column] = [str(small_phantoms.parent / value) for value in rows[column]]
    ct = rows[rows["modality"] == "ct"].iloc[0]
    extra = pd.DataFrame([{**ct, "subject_id": "scan_pet", "modality": "pet"},
                          {**ct, "subject_id": "scan_mri", "modality": "MRI"}])
    path = tmp_path / "manifest.csv"
    pd.concat([rows, extra]).to_csv(path, index=False)
    return path


def test_rows_of_other_modalities_are_refused_with_the_rows_listed(small_phantoms: Path,
                                                                   tmp_path: Path) -> None:
    manifest = _manifest_with_other_modalities(small_phantoms, tmp_path)
    with pytest.raises(InputDataError, match=(
            r"2 rows have a modality other than mr/ct .*: line 6 \(scan_pet, pet\), line 7 "
            r"\(scan_mri, mri\); .*--ignore_other_modalities")):
        select_rows(small_config(manifest, tmp_path / "cache", 2))


def test_ignore_other_modalities_leaves_them_out_and_says_how_many(
        small_phantoms: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = _manifest_with_other_modalities(small_phantoms, tmp_path)
    warnings: list[str] = []
    monkeypatch.setattr(absl_logging, "warning",
                        lambda message, *args: warnings.append(message % args))
    rows = select_rows(small_config(manifest, tmp_path / "cache", 2,
                                    ignore_other_modalities=True))
    used = set(rows.table["subject_id"])
    assert len(used) == 4 and not used & {"scan_pet", "scan_mri"}
    assert any("left out 2 rows of other modalities than mr/ct" in w for w in warnings), warnings


# ------------------------------------------------------------------ validation held out of training


@pytest.fixture(scope="module")
def three_per_modality(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 CT and 3 MR phantoms: with 3 folds, fold 0 holds one subject of each modality out."""
    return small_phantom_manifest(tmp_path_factory.mktemp("three"), 3, 3, seed=4)


def _holdout_config(manifest: Path, cache: Path, **overrides: object):
    settings: dict[str, object] = {"num_folds": 3, "fold": 0, "validation_holdout": 1}
    return small_config(manifest, cache, 2, **{**settings, **overrides})


def test_validation_held_out_of_training_leaves_the_fold_a_test_set(
        three_per_modality: Path, tmp_path: Path) -> None:
    plain = select_rows(small_config(three_per_modality, tmp_path, 2, num_folds=3, fold=0))
    rows = select_rows(_holdout_config(three_per_modality, tmp_path))
    table = rows.table
    assert table.groupby(["modality", "role"]).size().to_dict() == {
        (m, r): 1 for m in ("ct", "mr") for r in ("test", "train", "validation")}
    roles = plain.table.set_index("subject_id")["role"]
    # the test rows are the plain run's held-out fold; the validation ones came from training
    assert set(table[table.role == "test"].subject_id) == set(roles[roles == "validation"].index)
    assert set(table[table.role == "validation"].subject_id) <= set(roles[roles == "train"].index)
    # the same subjects whatever the training seed or the manifest's row order
    shuffled = tmp_path / "shuffled.csv"
    frame = pd.read_csv(three_per_modality)
    for column in ("image", "label"):
        frame[column] = [str(three_per_modality.parent / value) for value in frame[column]]
    frame.iloc[::-1].to_csv(shuffled, index=False)
    again = select_rows(_holdout_config(shuffled, tmp_path, seed=7)).table
    assert (set(again[again.role == "validation"].subject_id)
            == set(table[table.role == "validation"].subject_id))


def test_validation_holdout_that_would_leave_no_training_subject_is_refused(
        three_per_modality: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=(
            r"validation_holdout=2 takes 2 mr subject\(s\) out of the training rows, which hold "
            r"only 2: lower --validation_holdout or add mr subjects")):
        select_rows(_holdout_config(three_per_modality, tmp_path, validation_holdout=2))
    with pytest.raises(ConfigurationError, match="validation_holdout must be >= 0"):
        _holdout_config(three_per_modality, tmp_path, validation_holdout=-1)
    everything = _holdout_config(three_per_modality, tmp_path, fold=-1)
    assert everything.validates  # trains on every fold, validates on the subjects held out
    assert select_rows(everything).table.role.value_counts().to_dict() == {"train": 4,
                                                                          "validation": 2}


def test_the_test_rows_are_never_read_and_the_benchmark_scores_them(
        three_per_modality: Path, tmp_path: Path) -> None:
    config = _holdout_config(three_per_modality, tmp_path / "cache")
    read: list[str] = []
    data = load_training_data(config, tmp_path / "cache",
                              progress=lambda done, total, volume: read.append(volume.subject_id))
    split = data.split.set_index("subject_id")["role"]
    assert sorted(read) == sorted(split[split != "test"].index)
    assert {v.subject_id for vs in data.validation.values() for v in vs} == set(
        split[split == "validation"].index)
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    data.split.to_csv(model_dir / "split.csv", index=False)
    scored = held_out_volumes(config, model_dir, tmp_path / "cache")
    assert sorted(v.subject_id for v in scored) == sorted(split[split == "test"].index)
