"""Shared helpers and fixtures of the command-line tests: running a command as a subprocess and
a model folder in the training package's format."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    """Runs ``python -m module args`` from the repository root, capturing its text output.

    Args:
        module: The module to run, e.g. ``dltk_mm.cli.predict``.
        *args: Its command-line arguments.

    Returns:
        The finished process.
    """
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=240, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


def write_model_dir(folder: Path, rng: np.random.Generator | None = None) -> Path:
    """Writes a tiny model folder in the training package's format (config.json + a checkpoint).

    Args:
        folder: The model folder to write; its parent holds the (unwritten) training manifest.
        rng: Where given, the weights and batch-norm statistics are moved off their defaults
            with draws from it, as after training.

    Returns:
        ``folder``.
    """
    from dltk_mm.io.pipeline import PipelineConfig
    from dltk_mm.io.preprocessing import PreprocessingConfig
    from dltk_mm.networks import make_optimizer
    from dltk_mm.training.checkpointing import TrainingCheckpoint
    from dltk_mm.training.config import NetworkConfig, TrainConfig

    config = TrainConfig(
        manifest=str(folder.parent / "train.csv"), scheme="v4", modalities=("mr", "ct"),
        network=NetworkConfig(filters=(2, 4, 4, 4, 8), num_res_units=1),
        preprocessing=PreprocessingConfig(spacing_mm=4.0),
        pipeline=PipelineConfig(patch_size=(16, 16, 16), batch_size=2), steps=1,
    )
    config.save(folder / "config.json")
    model = config.build_model()
    model.compile(optimizer=make_optimizer("v4"))
    for variable in model.variables if rng is not None else ():
        if "moving_variance" in variable.path:
            variable.assign(rng.uniform(0.5, 2.0, variable.shape).astype(np.float32))
        elif variable.trainable or "moving_mean" in variable.path:
            variable.assign(variable.numpy()
                            + rng.normal(0, 0.05, variable.shape).astype(np.float32))
    TrainingCheckpoint(folder, model, model.optimizer).save(1)
    return folder


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    """A model_dir with non-default weights, and inputs: ``inputs/images/{ct_case.nii.gz,
    mr_case.mha}`` on differently oriented grids, and ``inputs/manifest.csv``."""
    import pandas as pd
    import SimpleITK as sitk  # noqa: N813

    from dltk_mm.io.geometry import Geometry

    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(5)
    model_dir = write_model_dir(root / "model", rng)
    inputs = root / "inputs"
    (inputs / "images").mkdir(parents=True)
    cases = {"ct_case.nii.gz": ("LAI", (0.9, 1.1, 5.0), (30, 40, 8)),
             "mr_case.mha": ("RAS", (1.6, 1.6, 3.0), (24, 20, 14))}
    for name, (orientation, spacing, size) in cases.items():
        geometry = Geometry.from_orientation(orientation, spacing, (5.0, -12.0, 40.0), size)
        array = rng.normal(100.0, 200.0, geometry.shape).astype(np.float32)
        sitk.WriteImage(geometry.image_from_array(array), str(inputs / "images" / name))
    pd.DataFrame({"subject_id": ["c1", "m1"], "modality": ["ct", "mr"],
                  "image": ["images/ct_case.nii.gz", "images/mr_case.mha"]}).to_csv(
        inputs / "manifest.csv", index=False)
    return {"root": root, "model_dir": model_dir, "inputs": inputs}
