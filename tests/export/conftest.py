"""Tiny exported models shared by the export tests (a dual-stream v4 and an msbn model)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from dltk_mm.export import export_saved_model
from dltk_mm.inference.segment import InferenceConfig
from dltk_mm.io.preprocessing import PreprocessingConfig
from dltk_mm.networks import build_multistream

PREPROCESSING = PreprocessingConfig(spacing_mm=4.0, normalisation="per_slice")
PATCH = (16, 16, 16)
INFERENCE = InferenceConfig(overlap=0.25, mirror=True, largest_component=True)
#: The environment of subprocesses (TensorFlow's C++ start-up noise off).
SUBPROCESS_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def saved_model_cli() -> list[str]:
    """TensorFlow's ``saved_model_cli`` (the console script beside this Python, else its module)."""
    script = Path(sys.executable).with_name("saved_model_cli")
    found = str(script) if script.is_file() else shutil.which("saved_model_cli")
    return [found] if found else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


def tiny_model(scheme: str = "v4", modalities: tuple[str, ...] = ("mr", "ct"), seed: int = 1):
    """A tiny network whose batch-norm moving statistics are far from their initial values, so
    that an export must carry them (inference mode) to reproduce the Keras probabilities."""
    model = build_multistream(scheme, modalities=modalities, filters=(2, 4, 4, 4, 8),
                              num_res_units=1)
    rng = np.random.default_rng(seed)
    for variable in model.non_trainable_variables:
        if "moving_variance" in variable.path:
            variable.assign(rng.uniform(0.5, 2.0, variable.shape).astype(np.float32))
        elif "moving_mean" in variable.path:
            variable.assign(rng.normal(0.0, 0.3, variable.shape).astype(np.float32))
    for variable in model.trainable_variables:  # non-default weights, as after training
        variable.assign(variable.numpy()
                        + rng.normal(0.0, 0.05, variable.shape).astype(np.float32))
    return model


def _export(tmp_path_factory, scheme: str):
    model = tiny_model(scheme)
    export_dir = tmp_path_factory.mktemp(f"export_{scheme}") / f"{scheme}_model"
    export_saved_model(model, export_dir, PREPROCESSING, patch_size=PATCH, inference=INFERENCE,
                       verify=True, extra={"note": "test"})
    return model, export_dir


@pytest.fixture(scope="session")
def exported_v4(tmp_path_factory):
    """``(model, export_dir)`` of a tiny dual-stream v4 model (verified on export)."""
    return _export(tmp_path_factory, "v4")


@pytest.fixture(scope="session")
def exported_msbn(tmp_path_factory):
    """``(model, export_dir)`` of a tiny msbn model (shared weights, per-modality batch norm)."""
    return _export(tmp_path_factory, "msbn")
