"""dltk-mm-predict on a training model folder (config.json + a checkpoint), run as a real
subprocess: geometry of the outputs and refusal to overwrite (the command's other tests are in
tests/cli/test_predict_cli.py, dltk-mm-export's in tests/cli/test_export_cli.py)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import SimpleITK as sitk  # noqa: E402, N813

from dltk_mm.io.geometry import Geometry  # noqa: E402
from dltk_mm.io.pipeline import PipelineConfig  # noqa: E402
from dltk_mm.io.preprocessing import PreprocessingConfig  # noqa: E402
from dltk_mm.networks import make_optimizer  # noqa: E402
from dltk_mm.training.checkpointing import TrainingCheckpoint  # noqa: E402
from dltk_mm.training.config import NetworkConfig, TrainConfig  # noqa: E402
from tests.conftest import REPO_ROOT  # noqa: E402


def _command(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=240, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    """A model_dir in the training package's format (config.json + a checkpoint) and inputs."""
    root = tmp_path_factory.mktemp("cli")
    model_dir = root / "model"
    config = TrainConfig(
        manifest=str(root / "train.csv"), scheme="v4", modalities=("mr", "ct"),
        network=NetworkConfig(filters=(2, 4, 4, 4, 8), num_res_units=1),
        preprocessing=PreprocessingConfig(spacing_mm=4.0),
        pipeline=PipelineConfig(patch_size=(16, 16, 16), batch_size=2), steps=1,
    )
    config.save(model_dir / "config.json")
    model = config.build_model()
    model.compile(optimizer=make_optimizer("v4"))
    rng = np.random.default_rng(5)
    for variable in model.trainable_variables:  # non-default weights, as after training
        variable.assign(variable.numpy() + rng.normal(0, 0.05, variable.shape).astype(np.float32))
    TrainingCheckpoint(model_dir, model, model.optimizer).save(1)

    inputs = root / "inputs"
    inputs.mkdir()
    cases = {"ct_case.nii.gz": ("LAI", (0.9, 1.1, 5.0), (30, 40, 8), "ct"),
             "mr_case.mha": ("RAS", (1.6, 1.6, 3.0), (24, 20, 14), "mr")}
    for name, (orientation, spacing, size, _) in cases.items():
        geometry = Geometry.from_orientation(orientation, spacing, (5.0, -12.0, 40.0), size)
        array = rng.normal(100.0, 200.0, geometry.shape).astype(np.float32)
        sitk.WriteImage(geometry.image_from_array(array), str(inputs / name))
    pd.DataFrame({"subject_id": ["c1", "m1"], "modality": ["ct", "mr"],
                  "image": ["ct_case.nii.gz", "mr_case.mha"]}).to_csv(
        inputs / "manifest.csv", index=False)
    return {"root": root, "model_dir": model_dir, "inputs": inputs}


def _check_geometry(output: Path, source: Path) -> np.ndarray:
    written, original = sitk.ReadImage(str(output)), sitk.ReadImage(str(source))
    assert Geometry.from_image(written).grid_differences(Geometry.from_image(original),
                                                         tol=1e-5) == []
    return sitk.GetArrayFromImage(written)


def test_predict_from_model_dir_and_refuse_overwrite(workspace) -> None:
    out = workspace["root"] / "pred_model_dir"
    args = (f"--model_dir={workspace['model_dir']}", f"--manifest={workspace['inputs']}/"
            "manifest.csv", f"--output_dir={out}", "--save_probabilities")
    result = _command("dltk_mm.cli.predict", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[1/2] c1 (ct)" in result.stdout and "[2/2] m1 (mr)" in result.stdout
    assert "windows" in result.stdout
    _check_geometry(out / "c1.nii.gz", workspace["inputs"] / "ct_case.nii.gz")
    _check_geometry(out / "m1.nii.gz", workspace["inputs"] / "mr_case.mha")
    maps = nib.load(out / "probabilities" / "c1.nii.gz")
    assert maps.shape == (30, 40, 8, 5)
    np.testing.assert_allclose(maps.affine, nib.load(out / "c1.nii.gz").affine, atol=1e-4)

    before = (out / "c1.nii.gz").read_bytes()
    again = _command("dltk_mm.cli.predict", *args)
    assert again.returncode == 2
    assert "already exists" in again.stderr and "--overwrite" in again.stderr
    assert "Traceback" not in again.stderr
    assert (out / "c1.nii.gz").read_bytes() == before
