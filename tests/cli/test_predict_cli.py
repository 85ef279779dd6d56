"""dltk-mm-predict as a real subprocess: what it never writes over, early input checks, resuming.

(Prediction from a model folder and from an export: tests/cli/test_predict_export_cli.py.)
"""

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
from tests.cli.conftest import run_module, write_model_dir  # noqa: E402
from tests.conftest import REPO_ROOT  # noqa: E402


def _predict(*args: str) -> subprocess.CompletedProcess:
    return run_module("dltk_mm.cli.predict", *args)


def _dataset(root: Path) -> Path:
    """images/<id>.nii.gz, labels/<id>.nii.gz (the names predictions get) and manifest.csv."""
    rows = []
    rng = np.random.default_rng(0)
    for subject, modality in (("ct1", "ct"), ("mr1", "mr")):
        geometry = Geometry.from_orientation("RAS", (2.0, 2.0, 5.0), (0.0, 0.0, 0.0), (12, 12, 6))
        for folder, array in (("images", rng.normal(size=geometry.shape).astype(np.float32)),
                              ("labels", np.ones(geometry.shape, np.uint8))):
            (root / folder).mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(geometry.image_from_array(array),
                            str(root / folder / f"{subject}.nii.gz"))
        rows.append({"subject_id": subject, "modality": modality,
                     "image": f"images/{subject}.nii.gz", "label": f"labels/{subject}.nii.gz"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("modality_filter", [[], ["--modality=ct"]])
def test_never_writes_over_the_manifests_labels_even_with_overwrite(tmp_path,
                                                                    modality_filter) -> None:
    manifest = _dataset(tmp_path)
    before = _contents(tmp_path / "labels")
    result = _predict(f"--model_dir={tmp_path / 'model'}", f"--manifest={manifest}",
                      f"--output_dir={tmp_path / 'labels'}", "--overwrite", *modality_filter)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "ct1.nii.gz: is the label of subject ct1" in result.stderr
    assert "Traceback" not in result.stderr
    assert _contents(tmp_path / "labels") == before


def test_a_bad_input_is_refused_before_any_output_is_written(tmp_path) -> None:
    manifest = _dataset(tmp_path)
    bad = tmp_path / "images" / "mr1.nii.gz"
    array = np.zeros((12, 12, 6), np.float32)
    array[2, 3, 4] = np.inf
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(bad))
    out = tmp_path / "predictions"
    result = _predict(f"--model_dir={tmp_path / 'model'}", f"--manifest={manifest}",
                      f"--output_dir={out}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "1 of 2 input(s) cannot be predicted" in result.stderr
    assert f"{bad}: holds 1 NaN or infinite voxel" in result.stderr
    assert not out.exists()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A model folder in the training package's format (config.json and one checkpoint)."""
    return write_model_dir(tmp_path_factory.mktemp("predict_cli") / "model")


def test_skip_existing_predicts_only_what_is_missing(tmp_path, model_dir) -> None:
    manifest = _dataset(tmp_path)
    out = tmp_path / "predictions"
    out.mkdir()
    (out / "ct1.nii.gz").write_bytes(b"finished before the interruption")
    result = _predict(f"--model_dir={model_dir}", f"--manifest={manifest}",
                      f"--output_dir={out}", "--skip_existing", "--mirror",
                      "--largest_component", "--min_component_voxels=2", "--weighting=gaussian")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ct1.nii.gz exists, skipped" in result.stdout
    assert "gaussian weighting, mirroring, largest component, components >= 2" in result.stdout
    assert "done: 1 prediction(s)" in result.stdout and "(1 skipped)" in result.stdout
    assert (out / "ct1.nii.gz").read_bytes() == b"finished before the interruption"
    assert sitk.ReadImage(str(out / "mr1.nii.gz")).GetSize() == (12, 12, 6)


def test_the_command_checks_flags_and_inputs_before_importing_tensorflow(tmp_path) -> None:
    manifest = _dataset(tmp_path)
    script = (
        "import sys\n"
        "from dltk_mm.cli import predict\n"
        "from dltk_mm.cli._common import tensorflow_imported\n"
        "predict.FLAGS([sys.argv[0], f'--manifest={sys.argv[1]}', f'--output_dir={sys.argv[2]}',"
        " '--model_dir=missing'])\n"
        "try:\n"
        "    predict.main([sys.argv[0]])\n"
        "except SystemExit as stop:\n"
        "    print('exit', stop.code, 'tensorflow', tensorflow_imported())\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(manifest),
                             str(tmp_path / "labels")], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert "exit 2 tensorflow False" in result.stdout, result.stderr[-3000:]


def test_flag_errors_exit_2_like_bad_input(tmp_path) -> None:
    for args in (["--output_dir=out", "--manifest=m.csv", "--overlapp=0.5"],  # unknown flag
                 ["--output_dir=out", "--manifest=m.csv", "--overlap=abc"],  # malformed value
                 ["--output_dir=out", "--manifest=m.csv", "extra.nii.gz"]):  # positional
        result = _predict(*args)
        assert result.returncode == 2, (args, result.stderr[-3000:])
        assert "Traceback" not in result.stderr
