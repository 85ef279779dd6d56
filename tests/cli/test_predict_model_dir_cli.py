"""dltk-mm-predict on a training model folder (config.json + a checkpoint), run as a real
subprocess: geometry of the outputs and refusal to overwrite (the command's other tests are in
tests/cli/test_predict_cli.py, dltk-mm-export's in tests/cli/test_export_cli.py)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402, N813

from dltk_mm.io.geometry import Geometry  # noqa: E402
from tests.cli.conftest import run_module, write_model_dir  # noqa: E402


def _check_geometry(output: Path, source: Path) -> np.ndarray:
    written, original = sitk.ReadImage(str(output)), sitk.ReadImage(str(source))
    assert Geometry.from_image(written).grid_differences(Geometry.from_image(original),
                                                         tol=1e-5) == []
    return sitk.GetArrayFromImage(written)


def test_predict_from_model_dir_and_refuse_overwrite(workspace) -> None:
    out = workspace["root"] / "pred_model_dir"
    args = (f"--model_dir={workspace['model_dir']}", f"--manifest={workspace['inputs']}/"
            "manifest.csv", f"--output_dir={out}", "--save_probabilities")
    result = run_module("dltk_mm.cli.predict", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[1/2] c1 (ct)" in result.stdout and "[2/2] m1 (mr)" in result.stdout
    assert "windows" in result.stdout
    _check_geometry(out / "c1.nii.gz", workspace["inputs"] / "images" / "ct_case.nii.gz")
    _check_geometry(out / "m1.nii.gz", workspace["inputs"] / "images" / "mr_case.mha")
    maps = nib.load(out / "probabilities" / "c1.nii.gz")
    assert maps.shape == (30, 40, 8, 5)
    np.testing.assert_allclose(maps.affine, nib.load(out / "c1.nii.gz").affine, atol=1e-4)

    before = (out / "c1.nii.gz").read_bytes()
    again = run_module("dltk_mm.cli.predict", *args)
    assert again.returncode == 2
    assert "already exists" in again.stderr and "--overwrite" in again.stderr
    assert "Traceback" not in again.stderr
    assert (out / "c1.nii.gz").read_bytes() == before


def test_repeated_model_dirs_predict_with_their_ensemble(workspace) -> None:
    from dltk_mm.inference.predict import KerasPredictor, inputs_from_manifest, predict_files
    from dltk_mm.io.manifest import load_manifest
    from dltk_mm.training import load_trained_model

    second = workspace["root"] / "model_b"
    if not second.exists():
        write_model_dir(second, np.random.default_rng(6))
    out = workspace["root"] / "pred_ensemble"
    result = run_module("dltk_mm.cli.predict", f"--model_dir={workspace['model_dir']}",
                        f"--model_dir={second}", f"--manifest={workspace['inputs']}/manifest.csv",
                        f"--output_dir={out}", "--save_probabilities")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"loading model {workspace['model_dir']} + {second}" in result.stdout
    _check_geometry(out / "c1.nii.gz", workspace["inputs"] / "images" / "ct_case.nii.gz")

    inputs = inputs_from_manifest(load_manifest(workspace["inputs"] / "manifest.csv",
                                                check_grids=False))
    maps = []
    for index, model_dir in enumerate((workspace["model_dir"], second)):
        predictor = KerasPredictor.from_loaded(load_trained_model(model_dir, weights="auto"))
        predict_files(predictor, inputs, workspace["root"] / f"pred_member{index}",
                      save_probabilities=True)
        maps.append(np.asarray(nib.load(workspace["root"] / f"pred_member{index}" /
                                        "probabilities" / "c1.nii.gz").dataobj))
    assert np.abs(maps[0] - maps[1]).max() > 1e-3  # two different networks
    ensemble = np.asarray(nib.load(out / "probabilities" / "c1.nii.gz").dataobj)
    np.testing.assert_allclose(ensemble, (maps[0] + maps[1]) / 2, atol=1e-5)


def test_a_run_named_twice_is_refused(workspace) -> None:
    result = run_module("dltk_mm.cli.predict", f"--model_dir={workspace['model_dir']}",
                        f"--model_dir={workspace['model_dir']}",
                        f"--manifest={workspace['inputs']}/manifest.csv",
                        f"--output_dir={workspace['root'] / 'never'}")
    assert result.returncode == 2 and "names a run twice" in result.stderr
    assert not (workspace["root"] / "never").exists()
