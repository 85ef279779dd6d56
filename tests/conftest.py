"""Shared pytest fixtures."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# A suite started in the background by a non-interactive shell (`pytest &`, nohup) inherits SIGINT
# ignored, and so would every command a test runs: the tests of Ctrl-C handling need it delivered.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

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


def small_phantom_manifest(root: Path, num_ct: int, num_mr: int, seed: int) -> Path:
    """Writes phantoms of 48^3 voxels under ``root/data`` (a cache may go beside, in ``cache/``).

    Args:
        root: The folder to write in.
        num_ct: How many CT phantoms.
        num_mr: How many MR phantoms.
        seed: The seed of the phantoms.

    Returns:
        The path of their manifest.
    """
    from dltk_mm.io.phantoms import PhantomConfig, generate_phantom_dataset

    return generate_phantom_dataset(root / "data", num_ct=num_ct, num_mr=num_mr, seed=seed,
                                    config=PhantomConfig(matrix={"ct": 48, "mr": 48})
                                    ).manifest_path


def interrupt_after_first_checkpoint(command: list[str], model_dir: Path, log: Path,
                                     signum: signal.Signals) -> int:
    """Runs ``command`` from the repository root, its output to ``log``, until the first
    checkpoint appears in ``model_dir`` (at most 300 s), then sends it ``signum``.

    Args:
        command: The training command.
        model_dir: Its model folder.
        log: The file its stdout and stderr go to.
        signum: The signal to send.

    Returns:
        Its exit status (within 120 s of the signal).
    """
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=output,
                                   stderr=subprocess.STDOUT,
                                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        try:
            deadline = time.monotonic() + 300
            while not (model_dir / "checkpoints" / "checkpoint").exists():
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "no checkpoint within 300 s"
                time.sleep(0.05)
            process.send_signal(signum)
            return process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()


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
