"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dltk_mm  # noqa: E402,F401  (its TensorFlow defaults, before any test imports TensorFlow)
from dltk_mm.io.pipeline import PipelineConfig  # noqa: E402
from dltk_mm.io.preprocessing import PreprocessingConfig  # noqa: E402
from dltk_mm.training import NetworkConfig, TrainConfig  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def tiny_train_config(manifest: Path, scheme: str, cache_dir: Path, steps: int,
                      **overrides: object) -> TrainConfig:
    """A small network trained on the whole field of view at 4 mm with 24^3 patches, validating
    and checkpointing once at the end: learns phantoms and real volumes in a few hundred steps.

    The whole field of view (no organ crop), because the tests segment whole volumes and the model
    must know what lies outside the organ box (the paper's crop is for its cropped evaluation).
    """
    settings: dict[str, object] = {
        "manifest": str(manifest),
        "scheme": scheme,
        "modalities": ("mr", "ct"),
        "network": NetworkConfig(filters=(8, 16, 16, 32, 32), num_res_units=1),
        "preprocessing": PreprocessingConfig(spacing_mm=4.0, crop_to_organs=False),
        "cache_dir": str(cache_dir),
        "pipeline": PipelineConfig(patch_size=(24, 24, 24), batch_size=4, jitter=(-6, 5)),
        "learning_rate": 3e-3,
        "steps": steps,
        "seed": 0,
        "validation_interval": steps,
        "checkpoint_interval": steps,
    }
    settings.update(overrides)
    return TrainConfig(**settings)


def find_real_data_dir() -> Path | None:
    """The folder of real CT/MR test volumes, or None where it is absent.

    It is ``$DLTK_MM_REAL_DATA`` if set, else ``../shared/data/real`` beside the repository.
    """
    candidate = os.environ.get("DLTK_MM_REAL_DATA")
    path = Path(candidate) if candidate else REPO_ROOT.parent / "shared" / "data" / "real"
    return path if (path / "manifest.csv").is_file() else None


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """Path of the real-volume folder; skips the test where it is absent."""
    path = find_real_data_dir()
    if path is None:
        pytest.skip(
            "real CT/MR volumes not found: set DLTK_MM_REAL_DATA or place them in "
            "../shared/data/real beside the repository"
        )
    return path
