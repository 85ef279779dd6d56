"""The dltk-mm-export command, run as a real subprocess (and its export used by dltk-mm-predict)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import SimpleITK as sitk  # noqa: E402, N813

from dltk_mm.export import read_export_metadata  # noqa: E402
from dltk_mm.inference.predict import KerasPredictor, predict_volume  # noqa: E402
from dltk_mm.inference.segment import InferenceConfig  # noqa: E402
from dltk_mm.io.geometry import Geometry  # noqa: E402
from dltk_mm.training import load_trained_model  # noqa: E402
from tests.cli.conftest import run_module  # noqa: E402
from tests.conftest import REPO_ROOT  # noqa: E402


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(folder.rglob("*"))}


def test_export_then_predict_with_saved_model(workspace, tmp_path) -> None:
    export_dir = tmp_path / "export"
    result = run_module("dltk_mm.cli.export", f"--model_dir={workspace['model_dir']}",
                      f"--export_dir={export_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "serve_mr, serve_ct" in result.stdout and "(verified)" in result.stdout
    assert read_export_metadata(export_dir).inference == InferenceConfig()

    out = tmp_path / "predictions"
    images = workspace["inputs"] / "images"
    result = run_module(
        "dltk_mm.cli.predict", f"--saved_model={export_dir}",
        f"--input={images / 'ct_case.nii.gz'}", f"--input={images / 'mr_case.mha'}",
        "--modality=ct", "--modality=mr", f"--output_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # The same labels as the Keras model of the model_dir, on each input's own grid.
    keras_predictor = KerasPredictor.from_loaded(load_trained_model(workspace["model_dir"]))
    for name, modality in (("ct_case", "ct"), ("mr_case", "mr")):
        source = next(images.glob(f"{name}.*"))
        written = sitk.ReadImage(str(out / f"{name}.nii.gz"))
        assert Geometry.from_image(written).grid_differences(
            Geometry.from_image(sitk.ReadImage(str(source))), tol=1e-5) == []
        reference = predict_volume(keras_predictor, source, modality)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(written),
                                      sitk.GetArrayFromImage(reference.labels))


def test_inference_flags_are_recorded_and_overwrite_replaces_an_export(workspace,
                                                                       tmp_path) -> None:
    export_dir = tmp_path / "export"
    args = (f"--model_dir={workspace['model_dir']}", f"--export_dir={export_dir}", "--noverify")
    result = run_module("dltk_mm.cli.export", *args, "--mirror", "--largest_component",
                      "--overlap=0.25")
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_export_metadata(export_dir).inference == InferenceConfig(
        overlap=0.25, mirror=True, largest_component=True)
    again = run_module("dltk_mm.cli.export", *args)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    replaced = run_module("dltk_mm.cli.export", *args, "--overwrite", "--weighting=gaussian")
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert read_export_metadata(export_dir).inference == InferenceConfig(weighting="gaussian")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


@pytest.mark.parametrize("target", ["inputs", "checkpoints"])
def test_overwrite_never_deletes_a_data_or_model_folder(workspace, target) -> None:
    folder = (workspace["inputs"] if target == "inputs"
              else workspace["model_dir"] / "checkpoints")
    before = _snapshot(workspace["root"])
    result = run_module("dltk_mm.cli.export", f"--model_dir={workspace['model_dir']}",
                      f"--export_dir={folder}", "--overwrite")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    reason = ("only replaces a dltk_mm export" if target == "inputs"
              else "inside the model folder")
    assert reason in result.stderr and str(folder) in result.stderr
    assert _snapshot(workspace["root"]) == before


@pytest.mark.parametrize("case", ["data_folder", "not_a_run", "ensemble_member_not_a_run",
                                  "run_twice"])
def test_refuses_bad_paths_without_importing_tensorflow(workspace, tmp_path, case) -> None:
    run, export = f"--model_dir={workspace['model_dir']}", f"--export_dir={tmp_path / 'export'}"
    args = {"data_folder": [run, f"--export_dir={workspace['inputs']}", "--overwrite"],
            "not_a_run": [f"--model_dir={workspace['inputs']}", export],
            "ensemble_member_not_a_run": [run, f"--model_dir={workspace['inputs']}", export],
            "run_twice": [run, run, export]}[case]
    code = (
        "import sys\n"
        "from dltk_mm.cli import export as command\n"
        "try:\n"
        "    command.run()\n"
        "except SystemExit as stop:\n"
        "    print('status', stop.code, 'tensorflow' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.stdout.strip().splitlines()[-1] == "status 2 False", result.stderr
    reason = {"data_folder": "only replaces a dltk_mm export",
              "run_twice": "names a run twice"}.get(case, "no training config")
    assert reason in result.stderr
    assert not (tmp_path / "export").exists()
