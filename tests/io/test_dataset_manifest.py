"""Tests of dltk_mm.io.dataset_manifest: checking cases one by one and writing the manifest."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dltk_mm.errors import InputDataError
from dltk_mm.io.dataset_json import scan_nnunet
from dltk_mm.io.dataset_manifest import (
    check_scan,
    preset_file_path,
    summary_rows,
    write_checked_manifest,
)
from dltk_mm.io.labels import get_preset
from dltk_mm.io.layouts import scan_btcv
from dltk_mm.io.manifest import load_manifest
from tests.io import layout_builders as lb


def test_one_problem_per_broken_case(tmp_path: Path) -> None:
    root = lb.make_btcv(tmp_path / "btcv", train=("0001", "0002", "0003", "0004"), test=())
    (root / "RawData/Training/label/label0002.nii.gz").unlink()
    lb.write_nifti(root / "RawData/Training/label/label0003.nii.gz", lb.organ_label([6]),
                   spacing=(1.0, 2.0, 3.0))
    lb.write_nifti(root / "RawData/Training/label/label0004.nii.gz", lb.organ_label([6, 99]))
    progress = []
    checked, problems = check_scan(scan_btcv(root), progress=lambda *a: progress.append(a))
    assert [c.case.subject_id for c in checked] == ["btcv_0001"]
    assert checked[0].organs_present == ("liver", "spleen", "right_kidney", "left_kidney")
    messages = {p.subject_id: p.message for p in problems}
    assert "label0002.nii.gz: label file of btcv_0002 not found" in messages["btcv_0002"]
    assert "different grids" in messages["btcv_0003"] and "label0003" in messages["btcv_0003"]
    assert "[99]" in messages["btcv_0004"] and "label0004.nii.gz" in messages["btcv_0004"]
    assert [p[0] for p in progress] == [1, 2, 3, 4]


def test_write_append_and_refusals(tmp_path: Path) -> None:
    root = lb.make_btcv(tmp_path / "btcv")
    scan = scan_btcv(root)
    checked, _ = check_scan(scan)
    output = tmp_path / "out" / "manifest.csv"
    write_checked_manifest(checked[:2], scan, output)
    frame = pd.read_csv(output, dtype=str, keep_default_na=False)
    assert list(frame.columns) == ["subject_id", "modality", "image", "label", "label_preset",
                                   "label_organs"]
    assert frame["label_preset"].tolist() == ["btcv", "btcv"]
    assert frame["label_organs"][0] == "liver;spleen;right_kidney;left_kidney"
    before = output.read_bytes()
    with pytest.raises(InputDataError, match="exists; pass --append"):
        write_checked_manifest(checked[2:], scan, output)
    with pytest.raises(InputDataError, match="already lists 1 of the new cases"):
        write_checked_manifest(checked[1:], scan, output, append=True)
    assert output.read_bytes() == before
    write_checked_manifest(checked[2:], scan, output, append=True)
    loaded = load_manifest(output)
    assert loaded["subject_id"].tolist() == ["btcv_0001", "btcv_0002", "btcv_0061"]
    assert loaded["label"].iloc[2] is None
    assert sorted(p.name for p in output.parent.iterdir()) == ["manifest.csv"]  # no staging left


def test_derived_preset_written_next_to_manifest(tmp_path: Path) -> None:
    root = lb.make_nnunet(tmp_path / "Dataset042_Abdomen")
    scan = scan_nnunet(root)
    checked, problems = check_scan(scan)
    assert not problems
    output = tmp_path / "m" / "all.csv"
    write_checked_manifest(checked, scan, output)
    preset_path = preset_file_path(output, "Dataset042_Abdomen")
    assert preset_path.parent == output.parent
    frame = pd.read_csv(output, dtype=str, keep_default_na=False)
    assert set(frame["label_preset"]) == {preset_path.name}
    assert dict(get_preset(str(preset_path)).mapping) == dict(
        scan.presets["Dataset042_Abdomen"][0].mapping)
    assert not list(root.rglob("*.csv")) and not list(root.rglob("*.labels.json"))


def test_summary_rows(tmp_path: Path) -> None:
    checked, _ = check_scan(scan_btcv(lb.make_btcv(tmp_path / "btcv")))
    rows, headers = summary_rows(checked)
    assert headers[:4] == ["modality", "cases", "labelled", "liver"]
    assert rows == [["ct", "3", "2", "2", "2", "2", "2", "2", "2", "3"]]
