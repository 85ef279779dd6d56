"""The rows a run uses: rows of other modalities are refused, or left out when asked."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from absl import logging as absl_logging

from dltk_mm.errors import InputDataError
from dltk_mm.training.data import select_rows
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
