"""Tests of dltk_mm.io.dataset_json: nnU-Net v2 raw and Decathlon layouts."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from dltk_mm.errors import InputDataError
from dltk_mm.io.dataset_json import modality_from_channel, scan_decathlon, scan_nnunet
from tests.io import layout_builders as lb


def test_nnunet_cases_modality_and_label_map(tmp_path: Path) -> None:
    root = lb.make_nnunet(tmp_path / "Dataset042_Abdomen")
    scan = scan_nnunet(root)
    cases = {c.subject_id: c.prepare() for c in scan.candidates}
    assert sorted(cases) == ["case_001", "case_002", "case_101"]
    assert cases["case_001"].image.name == "case_001_0000.nii.gz"
    assert cases["case_001"].label == root / "labelsTr" / "case_001.nii.gz"
    assert cases["case_101"].label is None
    assert {c.modality for c in cases.values()} == {"ct"}
    preset, source_labels = scan.presets["Dataset042_Abdomen"]
    assert {c.label_preset for c in cases.values()} == {"Dataset042_Abdomen"}
    assert preset.apply(np.array([0, 1, 2, 3, 4, 5])).tolist() == [0, 1, 3, 4, 2, 0]
    assert source_labels[2] == "Kidney (R)"
    assert not scan.notes  # all four organs named


def test_nnunet_mr_channel_override_and_missing_organ(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    root = lb.make_nnunet(tmp_path / "Dataset7_Liver", channel="T2",
                          labels={"background": 0, "liver": 1, "tumour": 2})
    with caplog.at_level(logging.WARNING):
        scan = scan_nnunet(root)
    assert {c.modality for c in scan.candidates} == {"mr"}
    assert any("spleen, right_kidney, left_kidney" in n for n in scan.notes)
    assert any("right_kidney" in r.getMessage() for r in caplog.records)
    assert {c.modality for c in scan_nnunet(root, modality="ct").candidates} == {"ct"}


def test_nnunet_needs_its_keys(tmp_path: Path) -> None:
    root = lb.make_decathlon(tmp_path / "Task99")
    with pytest.raises(InputDataError, match="channel_names.*--layout=decathlon"):
        scan_nnunet(root)
    with pytest.raises(InputDataError, match="dataset.json: not found"):
        scan_nnunet(tmp_path / "empty")


def test_decathlon_cases(tmp_path: Path) -> None:
    root = lb.make_decathlon(tmp_path / "Task99_Abdomen")
    scan = scan_decathlon(root)
    cases = {c.subject_id: c.prepare() for c in scan.candidates}
    assert sorted(cases) == ["abd_1", "abd_2", "abd_9"]
    assert cases["abd_9"].label is None and cases["abd_1"].label.name == "abd_1.nii.gz"
    assert {c.modality for c in cases.values()} == {"mr"}
    preset, _ = scan.presets["Task99_Abdomen"]
    assert preset.apply(np.array([0, 1, 2])).tolist() == [0, 1, 2]
    assert any("right_kidney, left_kidney" in n for n in scan.notes)
    data = json.loads((root / "dataset.json").read_text())
    data["modality"] = {"0": "CT"}
    (root / "dataset.json").write_text(json.dumps(data))
    assert {c.modality for c in scan_decathlon(root).candidates} == {"ct"}
    with pytest.raises(InputDataError, match="--layout=nnunet"):
        scan_decathlon(lb.make_nnunet(tmp_path / "nn"))


def test_modality_from_channel(caplog: pytest.LogCaptureFixture) -> None:
    assert modality_from_channel("CT", "x") == "ct"
    assert modality_from_channel("MRI", "x") == "mr"
    with caplog.at_level(logging.WARNING):
        assert modality_from_channel("noNorm", "ds.json") == "mr"
    assert any("--modality" in r.getMessage() for r in caplog.records)
