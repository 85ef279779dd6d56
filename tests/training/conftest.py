"""Fixtures of the training tests: phantom data and a network small enough to train in seconds."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from dltk_mm.io.pipeline import PipelineConfig
from dltk_mm.io.preprocessing import PreprocessingConfig
from dltk_mm.training import NetworkConfig, TrainConfig, TrainingCallback
from tests.conftest import small_phantom_manifest, tiny_train_config


class SendSigint(TrainingCallback):
    """A callback that sends SIGINT to this process once, when step ``at`` is reported."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, step, logs) -> None:
        if step == self.at:
            os.kill(os.getpid(), signal.SIGINT)


def small_config(manifest: Path, cache_dir: Path, steps: int, scheme: str = "joint",
                 **overrides: object) -> TrainConfig:
    """:func:`tests.conftest.tiny_train_config` made smaller still: 8 mm phantoms, 16^3 patches,
    batch 2, 2-8 channels; validation and checkpoint at the end unless overridden."""
    settings: dict[str, object] = {
        "network": NetworkConfig(filters=(2, 4, 4, 4, 8), num_res_units=1),
        "preprocessing": PreprocessingConfig(spacing_mm=8.0),
        "pipeline": PipelineConfig(patch_size=(16, 16, 16), batch_size=2),
    }
    settings.update(overrides)
    return tiny_train_config(manifest, scheme, cache_dir, steps, **settings)


@pytest.fixture(scope="session")
def small_phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The manifest of 2 CT and 2 MR phantoms of 48^3 voxels (cache beside it in ``cache/``)."""
    return small_phantom_manifest(tmp_path_factory.mktemp("small_phantoms"), 2, 2, seed=3)
