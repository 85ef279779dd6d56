"""Signals: SIGINT stops a run after the current step with a checkpoint (dltk-mm-train exits 130);
a second signal stops it at once."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from dltk_mm.training import StopOnSignal, TrainingCallback, train
from dltk_mm.training.checkpointing import checkpoint_step, latest_checkpoint
from dltk_mm.training.model_dir import LOCK_FILE
from tests.conftest import interrupt_after_first_checkpoint
from tests.training.conftest import small_config


class SendTwoSigints(TrainingCallback):
    """Sends SIGINT twice when step ``at`` is reported; records the steps reported."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.steps: list[int] = []
        self.checkpoints: list[int] = []

    def on_step_end(self, step, logs) -> None:
        self.steps.append(step)
        if step == self.at:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            self.steps.append(-1)  # not reached: the second signal stops at once

    def on_checkpoint(self, step, path) -> None:
        self.checkpoints.append(step)


def test_a_second_sigint_stops_at_once(small_phantoms: Path, tmp_path: Path) -> None:
    config = small_config(small_phantoms, small_phantoms.parent.parent / "cache", 50,
                          checkpoint_interval=1000, validation_interval=1000)
    recorder = SendTwoSigints(at=2)
    model_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(config, model_dir, callbacks=[recorder])
    assert recorder.steps == [1, 2]  # nothing after the second signal: no step, no checkpoint
    assert recorder.checkpoints == [] and latest_checkpoint(model_dir) is None
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert not (model_dir / LOCK_FILE).exists()


def test_stop_on_signal_restores_the_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with StopOnSignal() as stopper:
        assert signal.getsignal(signal.SIGTERM) != before
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert stopper.received == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before


def test_sigint_exits_130_after_a_checkpoint(small_phantoms: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "dltk_mm.cli.train", f"--manifest={small_phantoms}",
        f"--model_dir={model_dir}", "--scheme=joint", "--filters=2,4,4,4,8",
        "--num_res_units=1", "--spacing_mm=8", "--patch_size=16", "--batch_size=2",
        "--steps=100000", "--checkpoint_interval=2", "--validation_interval=100000",
        f"--cache_dir={small_phantoms.parent.parent / 'cache'}",
    ]
    log = tmp_path / "train.log"
    status = interrupt_after_first_checkpoint(command, model_dir, log, signal.SIGINT)
    text = log.read_text()
    assert status == 130, text
    match = re.search(r"interrupted at step (\d+); rerun the same command to resume", text)
    assert match, text
    assert checkpoint_step(latest_checkpoint(model_dir)) == int(match.group(1)) >= 2
    assert "Traceback" not in text
    assert not (model_dir / LOCK_FILE).exists()
