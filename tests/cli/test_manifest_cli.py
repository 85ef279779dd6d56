"""The dltk-mm-manifest command on miniature data sets in their real layouts (subprocesses)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dltk_mm.io.labels import get_preset
from dltk_mm.io.manifest import load_manifest
from tests.io import layout_builders as lb

REAL_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"


def _command() -> list[str]:
    beside = Path(sys.executable).with_name("dltk-mm-manifest")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("dltk-mm-manifest")
    return [found] if found else [sys.executable, "-m", "dltk_mm.cli.manifest"]


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([*_command(), *args], capture_output=True, text=True, timeout=300,
                          env=env, check=False)


def _listing(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns) for p in root.rglob("*"))


def test_btcv_ct_then_chaos_mr_in_one_manifest(tmp_path: Path) -> None:
    btcv = lb.make_btcv(tmp_path / "downloads" / "btcv")
    chaos = lb.make_chaos(tmp_path / "downloads" / "CHAOS", mr_cases=("1", "2"), ct_cases=("3",))
    before = _listing(tmp_path / "downloads")
    manifest = tmp_path / "work" / "manifest.csv"
    first = _run("--layout=btcv", f"--root={btcv}", f"--output={manifest}")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "[##############################] 3/3" in first.stdout
    assert "btcv: 3 case(s) found" in first.stdout
    second = _run("--layout=chaos", f"--root={chaos}", "--chaos_sequences=t2spir,ct",
                  f"--converted_dir={tmp_path / 'work' / 'chaos_nifti'}", f"--output={manifest}",
                  "--append")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "liver-only" in second.stdout and "3 row(s) added" in second.stdout
    table = [line.split() for line in second.stdout.splitlines() if line.startswith(("ct ", "mr "))]
    assert table[0][:7] == ["ct", "1", "1", "1", "0", "0", "0"]  # CHAOS CT: liver only
    assert table[1][:7] == ["mr", "2", "2", "2", "2", "2", "2"]
    assert _listing(tmp_path / "downloads") == before  # nothing written into the downloads
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    rows = {(r.subject_id, r.modality): r for r in frame.itertuples()}
    assert set(rows) == {("btcv_0001", "ct"), ("btcv_0002", "ct"), ("btcv_0061", "ct"),
                         ("chaos_mr_1", "mr"), ("chaos_mr_2", "mr"), ("chaos_ct_3", "ct")}
    assert rows[("chaos_mr_1", "mr")].image == "chaos_nifti/images/chaos_mr_1_t2spir.nii.gz"
    assert rows[("chaos_mr_1", "mr")].label_preset == "chaos"
    assert rows[("chaos_ct_3", "ct")].label_organs == "liver"
    assert rows[("btcv_0001", "ct")].label_preset == "btcv"
    assert rows[("btcv_0061", "ct")].label == ""
    btcv_image = "../downloads/btcv/RawData/Training/img/img0001.nii.gz"
    assert rows[("btcv_0001", "ct")].image == btcv_image
    assert len(load_manifest(manifest)) == 6


def test_broken_cases_one_error_each_then_skip_invalid(tmp_path: Path) -> None:
    chaos = lb.make_chaos(tmp_path / "CHAOS", mr_cases=("1", "2", "5", "8"), ct_cases=())
    ground = chaos / "Train_Sets/MR"
    (ground / "1/T2SPIR/DICOM_anon/IMG-0001-00002.dcm").write_bytes(b"broken")
    (ground / "2/T2SPIR/Ground/IMG-0001-00005.png").unlink()
    (ground / "5/T2SPIR/Ground").rename(ground / "5/T2SPIR/Ground_moved")
    manifest = tmp_path / "out" / "manifest.csv"
    args = ("--layout=chaos", f"--root={chaos}", f"--converted_dir={tmp_path / 'nii'}",
            f"--output={manifest}")
    failed = _run(*args)
    assert failed.returncode == 2
    invalid = [line for line in failed.stdout.splitlines() if line.startswith("invalid case")]
    assert len(invalid) == 3
    assert "chaos_mr_1 (mr)" in invalid[0] and "IMG-0001-00002.dcm" in invalid[0]
    assert "chaos_mr_2 (mr)" in invalid[1] and "4 PNG mask(s)" in invalid[1]
    assert "chaos_mr_5 (mr)" in invalid[2] and "0 PNG mask(s)" in invalid[2]
    assert "--skip_invalid" in failed.stderr and "nothing was written" in failed.stderr
    assert not manifest.exists()
    skipped = _run(*args, "--skip_invalid")
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert ("skipped 3 invalid case(s): chaos_mr_1 (mr), chaos_mr_2 (mr), chaos_mr_5 (mr)"
            in skipped.stdout)
    assert load_manifest(manifest)["subject_id"].tolist() == ["chaos_mr_8"]


def test_grid_mismatch_and_missing_label_in_folders(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        lb.write_nifti(tmp_path / "img" / f"{name}.nii.gz", lb.image_volume())
    lb.write_nifti(tmp_path / "lab" / "a.nii.gz", lb.organ_label([1, 2]))
    lb.write_nifti(tmp_path / "lab" / "b.nii.gz", lb.organ_label([1]), spacing=(1.0, 1.0, 1.0))
    result = _run("--layout=folders", f"--images={tmp_path / 'img'}",
                  f"--labels={tmp_path / 'lab'}", "--modality=mr", f"--output={tmp_path / 'm.csv'}",
                  "--skip_invalid")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "invalid case b (mr): image" in result.stdout and "different grids" in result.stdout
    assert "invalid case c (mr):" in result.stdout and "c.nii.gz: label file" in result.stdout
    assert load_manifest(tmp_path / "m.csv")["subject_id"].tolist() == ["a"]


def test_amos_rows_and_modalities(tmp_path: Path) -> None:
    amos = lb.make_amos(tmp_path / "amos22")
    result = _run("--layout=amos", f"--root={amos}", f"--output={tmp_path / 'amos.csv'}")
    assert result.returncode == 0, result.stdout + result.stderr
    frame = load_manifest(tmp_path / "amos.csv")
    assert dict(zip(frame["subject_id"], frame["modality"], strict=True)) == {
        "amos_0001": "ct", "amos_0507": "mr", "amos_0008": "ct", "amos_0588": "mr",
        "amos_0009": "ct"}
    assert set(frame["label_preset"]) == {"amos"}
    labelled = _run("--layout=amos", f"--root={amos}", f"--output={tmp_path / 'train.csv'}",
                    "--nounlabelled", "--modalities=mr")
    assert labelled.returncode == 0, labelled.stdout + labelled.stderr
    assert load_manifest(tmp_path / "train.csv")["subject_id"].tolist() == ["amos_0507",
                                                                            "amos_0588"]


def test_nnunet_writes_and_references_its_preset(tmp_path: Path) -> None:
    root = lb.make_nnunet(tmp_path / "nnUNet_raw" / "Dataset042_Abdomen", channel="MRI")
    manifest = tmp_path / "manifests" / "nn.csv"
    result = _run("--layout=nnunet", f"--root={root}", f"--output={manifest}")
    assert result.returncode == 0, result.stdout + result.stderr
    preset = manifest.parent / "nn.Dataset042_Abdomen.labels.json"
    assert preset.is_file()
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    assert set(frame["label_preset"]) == {preset.name} and set(frame["modality"]) == {"mr"}
    assert frame.loc[frame["subject_id"] == "case_001", "image"].item() == (
        "../nnUNet_raw/Dataset042_Abdomen/imagesTr/case_001_0000.nii.gz")
    assert len(load_manifest(manifest)) == 3


def test_preset_file_for_folders(tmp_path: Path) -> None:
    lb.write_nifti(tmp_path / "img" / "x.nii.gz", lb.image_volume())
    lb.write_nifti(tmp_path / "lab" / "x.nii.gz", lb.organ_label([10, 20]))
    (tmp_path / "map.csv").write_text("id,label\n0,background\n10,liver\n20,kidney cyst\n")
    result = _run("--layout=folders", f"--images={tmp_path / 'img'}",
                  f"--labels={tmp_path / 'lab'}", "--modality=ct",
                  f"--label_preset={tmp_path / 'map.csv'}", f"--output={tmp_path / 'm.csv'}")
    assert result.returncode == 0, result.stdout + result.stderr
    frame = pd.read_csv(tmp_path / "m.csv", dtype=str, keep_default_na=False)
    assert frame["label_preset"].tolist() == ["map.csv"] and frame["label_organs"][0] == "liver"


def test_refusals_and_help(tmp_path: Path) -> None:
    btcv = lb.make_btcv(tmp_path / "btcv")
    inside = _run("--layout=btcv", f"--root={btcv}", f"--output={btcv / 'manifest.csv'}")
    assert inside.returncode == 2 and "inside the data set folder" in inside.stderr
    (tmp_path / "m.csv").write_text("keep me")
    exists = _run("--layout=btcv", f"--root={btcv}", f"--output={tmp_path / 'm.csv'}")
    assert exists.returncode == 2 and "never overwritten" in exists.stderr
    assert (tmp_path / "m.csv").read_text() == "keep me"
    bad_preset = _run("--layout=btcv", f"--root={btcv}", f"--output={tmp_path / 'n.csv'}",
                      "--label_preset=nonsense")
    assert bad_preset.returncode == 2 and "unknown label preset" in bad_preset.stderr
    helpfull = _run("--helpfull")  # absl prints the help and exits with 1
    assert helpfull.returncode in (0, 1) and "Traceback" not in helpfull.stderr
    text = helpfull.stdout + helpfull.stderr
    for word in ("--layout", "btcv", "decathlon", "skip_invalid", "--chaos_sequences", "501",
                 "nnunet", "--converted_dir", "append"):
        assert word in text


@pytest.mark.skipif(not (REAL_DATA / "images").is_dir(),
                    reason=f"real data folder {REAL_DATA} absent")
def test_real_volumes_as_folders_layout(tmp_path: Path) -> None:
    manifest = tmp_path / "real.csv"
    common = ("--layout=folders", f"--images={REAL_DATA / 'images'}",
              f"--labels={REAL_DATA / 'labels'}", f"--output={manifest}")
    mr = _run(*common, "--modality=mr", "--image_glob=chaos_*,ts_mr_*")
    assert mr.returncode == 0, mr.stdout + mr.stderr
    ct = _run(*common, "--modality=ct", "--image_glob=amos_*,ts_ct_*", "--append")
    assert ct.returncode == 0, ct.stdout + ct.stderr
    assert "mr        5      5         5      5       5             5" in mr.stdout
    frame = load_manifest(manifest)
    assert sorted(frame.groupby("modality").size().items()) == [("ct", 4), ("mr", 5)]


def test_decathlon_rows_modality_and_label_map(tmp_path: Path) -> None:
    root = lb.make_decathlon(tmp_path / "Task99_Abdomen", labels={
        "0": "background", "1": "Liver", "2": "Spleen", "3": "Kidney (R)", "4": "pancreas"})
    manifest = tmp_path / "dec.csv"
    result = _run("--layout=decathlon", f"--root={root}", f"--output={manifest}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "left_kidney" in result.stdout  # the note naming the organ the data set lacks
    frame = load_manifest(manifest)
    assert sorted(frame["subject_id"]) == ["abd_1", "abd_2", "abd_9"]
    assert set(frame["modality"]) == {"mr"}
    preset = get_preset(str(tmp_path / "dec.Task99_Abdomen.labels.json"))
    assert preset.apply(np.array([0, 1, 2, 3, 4])).tolist() == [0, 1, 2, 3, 0]
