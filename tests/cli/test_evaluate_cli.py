"""The dltk-mm-evaluate command, run as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from dltk_mm.cli.evaluate import evaluate_command
from dltk_mm.errors import ConfigurationError
from tests.conftest import REPO_ROOT


def _write(array: np.ndarray, path: Path, spacing=(1.0, 1.0, 2.0)) -> None:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def _evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dltk_mm.cli.evaluate", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture()
def folders(tmp_path: Path) -> dict[str, Path]:
    label = np.zeros((8, 10, 10), np.uint8)
    label[1:4, 1:5, 1:5] = 1
    label[5, 1:5, 1:5] = 2
    label[1:3, 6:9, 1:4] = 3
    label[1:3, 6:9, 6:9] = 4
    shifted = label.copy()
    shifted[shifted == 2] = 0
    shifted[7, 1:5, 1:5] = 2  # two slices of 2 mm away: HD95 = ASSD = 4 mm
    _write(label, tmp_path / "labels" / "s01.nii.gz")
    _write(label, tmp_path / "labels" / "s02.nii.gz")
    _write(label, tmp_path / "predictions" / "s01.nii.gz")
    _write(shifted, tmp_path / "predictions" / "s02.nii.gz")
    return {"labels": tmp_path / "labels", "predictions": tmp_path / "predictions",
            "root": tmp_path}


def test_folders_mode_writes_csv_and_prints_summary(folders) -> None:
    output = folders["root"] / "out" / "evaluation.csv"
    summary_csv = folders["root"] / "out" / "summary.csv"
    result = _evaluate(
        f"--predictions={folders['predictions']}", f"--labels={folders['labels']}",
        "--modality=ct", f"--output_csv={output}", f"--summary_csv={summary_csv}",
    )
    assert result.returncode == 0, result.stderr
    assert "[1/2] s01 (ct): Dice liver 1.000" in result.stdout
    assert "[2/2] s02 (ct)" in result.stdout
    assert "all organs" in result.stdout
    frame = pd.read_csv(output)
    assert len(frame) == 8
    spleen = frame[(frame.subject_id == "s02") & (frame.organ == "spleen")].iloc[0]
    assert spleen.dice == 0.0
    assert spleen.hd95_mm == pytest.approx(4.0, rel=1e-5)
    assert spleen.assd_mm == pytest.approx(4.0, rel=1e-5)
    summary = pd.read_csv(summary_csv)
    liver = summary[summary.organ == "liver"].iloc[0]
    assert liver.dice_mean == 1.0 and liver.n == 2


def test_existing_output_is_kept_unless_overwrite(folders) -> None:
    output = folders["root"] / "evaluation.csv"
    output.write_text("keep me\n")
    options = dict(predictions=str(folders["predictions"]), labels=str(folders["labels"]),
                   manifest=None, modality="ct", output_csv=str(output))
    with pytest.raises(ConfigurationError, match="already exists.*--overwrite"):
        evaluate_command(**options)
    assert output.read_text() == "keep me\n"
    results = evaluate_command(**options, overwrite=True)
    pd.testing.assert_frame_equal(pd.read_csv(output), results, check_dtype=False)


def test_manifest_mode_and_missing_prediction_error(folders) -> None:
    manifest = folders["root"] / "manifest.csv"
    pd.DataFrame(
        {
            "subject_id": ["s01", "s02", "s03"],
            "modality": ["mr", "mr", "mr"],
            "image": ["img/s01.nii.gz", "img/s02.nii.gz", "img/s03.nii.gz"],
            "label": ["labels/s01.nii.gz", "labels/s02.nii.gz", "labels/s02.nii.gz"],
        }
    ).to_csv(manifest, index=False)
    result = _evaluate(f"--manifest={manifest}", f"--predictions={folders['predictions']}")
    assert result.returncode == 2
    assert "subject s03" in result.stderr and "s03.nii.gz" in result.stderr
    assert "Traceback" not in result.stderr

    _write(np.zeros((8, 10, 10)), folders["predictions"] / "s03.nii.gz")
    results = evaluate_command(predictions=str(folders["predictions"]), labels=None,
                               manifest=str(manifest), modality="MR", output_csv=None)
    assert list(dict.fromkeys(results["subject_id"])) == ["s01", "s02", "s03"]
    assert set(results["modality"]) == {"mr"}
    assert (results[results.subject_id == "s03"]["dice"] == 0.0).all()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(labels="l", manifest=None, modality="ct"), "--predictions"),
        (dict(predictions="p", labels="l", manifest=None), "--modality"),
        (dict(predictions="p", labels="l", manifest="m.csv", modality="ct"), "not both"),
        (dict(predictions="p", labels=None, manifest=None), "--manifest"),
    ],
)
def test_bad_options_are_configuration_errors(options, message) -> None:
    arguments = dict(predictions=None, labels=None, manifest=None, modality=None,
                     output_csv=None)
    arguments.update(options)
    with pytest.raises(ConfigurationError, match=message):
        evaluate_command(**arguments)


def test_label_preset_flag(folders) -> None:
    """Reference labels in CHAOS grey values are evaluated with --label_preset=chaos."""
    chaos = folders["root"] / "chaos_labels"
    for subject in ("s01", "s02"):
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(folders["labels"] / f"{subject}.nii.gz")))
        grey = np.select([label == 1, label == 2, label == 3, label == 4], [63, 252, 126, 189], 0)
        _write(grey, chaos / f"{subject}.nii.gz")
    args = [f"--predictions={folders['predictions']}", f"--labels={chaos}", "--modality=mr"]
    refused = _evaluate(*args)
    assert refused.returncode == 2 and "label value(s) 63" in refused.stderr
    result = _evaluate(*args, "--label_preset=chaos")
    assert result.returncode == 0, result.stderr
    assert "[1/2] s01 (mr): Dice liver 1.000" in result.stdout


def _manifest(folders, rows: list[tuple[str, str]]) -> Path:
    """A manifest of (subject, modality) rows with the fixture's labels; images are the labels."""
    manifest = folders["root"] / "manifest.csv"
    pd.DataFrame({
        "subject_id": [subject for subject, _ in rows],
        "modality": [modality for _, modality in rows],
        "image": [f"labels/{subject}.nii.gz" for subject, _ in rows],
        "label": [f"labels/{subject}.nii.gz" for subject, _ in rows],
    }).to_csv(manifest, index=False)
    return manifest


@pytest.mark.parametrize("target", ["manifest", "label", "prediction", "image"])
def test_an_input_is_never_an_output_even_with_overwrite(folders, target) -> None:
    manifest = _manifest(folders, [("s01", "ct"), ("s02", "ct")])
    image = folders["root"] / "images" / "s01.nii.gz"
    _write(np.zeros((8, 10, 10)), image)
    frame = pd.read_csv(manifest)
    frame.loc[0, "image"] = "images/s01.nii.gz"
    frame.to_csv(manifest, index=False)
    path = {"manifest": manifest, "label": folders["labels"] / "s02.nii.gz",
            "prediction": folders["predictions"] / "s01.nii.gz", "image": image}[target]
    before = path.read_bytes()
    for flag in ("output_csv", "summary_csv"):
        result = _evaluate(f"--manifest={manifest}", f"--predictions={folders['predictions']}",
                           f"--{flag}={path}", "--overwrite")
        assert result.returncode == 2, result.stderr
        assert "is one of the evaluation's inputs" in result.stderr and str(path) in result.stderr
        assert "Traceback" not in result.stderr
        assert path.read_bytes() == before


def test_output_through_a_relative_path_or_hard_link_is_refused(folders, monkeypatch) -> None:
    manifest = _manifest(folders, [("s01", "ct")])
    monkeypatch.chdir(folders["root"] / "labels")
    with pytest.raises(ConfigurationError, match="inputs are never overwritten"):
        evaluate_command(predictions=str(folders["predictions"]), labels=None,
                         manifest=str(manifest), modality=None, output_csv="../manifest.csv",
                         overwrite=True)
    link = folders["root"] / "link.csv"
    link.hardlink_to(manifest)
    with pytest.raises(ConfigurationError, match="inputs are never overwritten"):
        evaluate_command(predictions=str(folders["predictions"]), labels=None,
                         manifest=str(manifest), modality=None, output_csv=str(link),
                         overwrite=True)


def test_allow_unknown_labels_with_the_identity_preset(folders) -> None:
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(folders["labels"] / "s01.nii.gz")))
    label[6:8, 6:9, 6:9] = 7  # an id the project map does not have
    _write(label, folders["labels"] / "s01.nii.gz")
    args = [f"--predictions={folders['predictions']}", f"--labels={folders['labels']}",
            "--modality=ct"]
    refused = _evaluate(*args)
    assert refused.returncode == 2 and "label value(s) 7" in refused.stderr
    assert "--allow_unknown_labels" in refused.stderr
    output = folders["root"] / "evaluation.csv"
    result = _evaluate(*args, "--allow_unknown_labels", f"--output_csv={output}")
    assert result.returncode == 0, result.stderr
    assert "counted as background" in result.stderr
    frame = pd.read_csv(output)
    # label 7 became background: s01's prediction (the original label) still matches exactly
    assert (frame[frame.subject_id == "s01"]["dice"] == 1.0).all()


def test_one_subject_id_in_a_ct_and_an_mr_row_is_refused(folders) -> None:
    manifest = _manifest(folders, [("s01", "ct"), ("s02", "ct"), ("s01", "mr")])
    result = _evaluate(f"--manifest={manifest}", f"--predictions={folders['predictions']}")
    assert result.returncode == 2, result.stderr
    assert "line 2 (subject s01, ct) and line 4 (subject s01, mr)" in result.stderr
    assert "unique subject id" in result.stderr and "different grids" not in result.stderr
    ct_only = _evaluate(f"--manifest={manifest}", f"--predictions={folders['predictions']}",
                        "--modality=ct")
    assert ct_only.returncode == 0, ct_only.stderr


@pytest.mark.parametrize("args", [
    ["--num_classes=1"],            # a flag's bound
    ["--no_such_flag"],             # an unknown flag
    ["--label_preset=nonsense"],    # not one of the choices
    ["positional"],                 # positional arguments
])
def test_bad_flags_exit_2(folders, args) -> None:
    result = _evaluate(f"--predictions={folders['predictions']}", f"--labels={folders['labels']}",
                       "--modality=ct", *args)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("command", "flag"), [
    ("evaluate", "--manifest=missing.csv"),    # a manifest that is not there
    ("phantoms", "--anatomy_scale=-1"),        # a flag's bound
])
def test_refuses_bad_input_without_importing_tensorflow(tmp_path, command, flag) -> None:
    code = (
        "import sys\n"
        f"from dltk_mm.cli import {command} as command\n"
        "try:\n"
        "    command.run()\n"
        "except SystemExit as stop:\n"
        "    print('status', stop.code, 'tensorflow' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, flag, f"--output_dir={tmp_path}"] if command == "phantoms"
        else [sys.executable, "-c", code, flag], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.stdout.strip().splitlines()[-1] == "status 2 False", result.stderr
