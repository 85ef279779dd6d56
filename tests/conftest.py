"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dltk_mm  # noqa: E402,F401  (its TensorFlow defaults, before any test imports TensorFlow)

REPO_ROOT = Path(__file__).resolve().parents[1]


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
