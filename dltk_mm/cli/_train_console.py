"""What ``dltk-mm-train`` prints while it trains: data, model, resume, progress, validation.

Imported by :func:`dltk_mm.cli.train.main` once the flags and the manifest are checked (it pulls
in TensorFlow through the training callbacks). The progress bar is :class:`dltk_mm.cli._common.
ProgressBar`: redrawn in place on a terminal, plain lines (no carriage return, no ANSI colour)
every 10 s in a log file or pipe.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from typing import Any

from dltk_mm.cli._common import ProgressBar
from dltk_mm.training.callbacks import TrainingCallback
from dltk_mm.training.results import TrainingInfo, TrainResult, ValidationResult


def _dice_line(dice: Mapping[str, Mapping[str, float]]) -> str:
    parts = []
    for modality, organs in dice.items():
        values = " ".join(f"{organ} {value:.3f}" for organ, value in organs.items())
        parts.append(f"{modality}: {values}")
    return "; ".join(parts)


def _schedule(config: Any) -> str:
    parts = [] if config.lr_schedule == "constant" else [f"{config.lr_schedule} decay"]
    if config.warmup_steps:
        parts.insert(0, f"{config.warmup_steps} warm-up steps")
    return f" ({', '.join(parts)})" if parts else ""


class ConsoleReporter(TrainingCallback):
    """Prints what the run does: data, model, resume, a progress bar, validation, summary."""

    def __init__(self) -> None:
        self.progbar: ProgressBar | None = None
        self.interactive = sys.stdout.isatty()
        self.interval_s = 0.1 if self.interactive else 10.0
        self._shown = 0.0

    def on_preprocess(self, done: int, total: int, volume: Any) -> None:
        state = "cache" if volume.from_cache else "preprocessed"
        # Redrawn in place on a terminal; one plain line each (no carriage return) elsewhere.
        start = "\r" if self.interactive else ""
        end = "\n" if done == total or not self.interactive else ""
        print(f"{start}data {done}/{total}: {volume.subject_id} ({volume.modality}, {state})",
              end=end, flush=True)

    def on_train_begin(self, info: TrainingInfo) -> None:
        config = info.config
        if info.moved_previous is not None:
            print(f"restart: the previous run was moved to {info.moved_previous}")
        for modality in config.modalities:
            print(f"{modality}: {len(info.train_subjects[modality])} training and "
                  f"{len(info.validation_subjects[modality])} validation volumes")
        held_out = "none (trained on all)" if config.fold < 0 else f"fold {config.fold}"
        if config.validation_holdout:
            held_out += (f", never read; validation on {config.validation_holdout} training "
                         "subject(s) per modality taken out of training")
        print(f"held out: {held_out}; cache: {info.cache_dir}")
        print(f"model: scheme {config.scheme}, modalities {'/'.join(config.modalities)}, "
              f"{info.num_parameters:,} trainable parameters; learning rate "
              f"{config.effective_learning_rate:g}{_schedule(config)}, loss {config.loss}, batch "
              f"{config.pipeline.batch_size} x {'x'.join(map(str, config.pipeline.patch_size))}")
        if config.recipe != "paper":
            print(f"recipe: {config.recipe} (dltk_mm.training.recipes), under the flags given")
        if info.resumed_from is not None:
            print(f"resuming from step {info.initial_step} (checkpoint {info.resumed_from})")
        if info.initial_step >= config.steps:
            print(f"already trained to step {info.initial_step} of {config.steps}: nothing to do")
            return
        print(f"training steps {info.initial_step + 1}..{config.steps} into {info.model_dir}",
              flush=True)
        self.progbar = ProgressBar(config.steps, prefix="step ")
        self.progbar.done = info.initial_step
        self._shown = time.monotonic()

    def on_step_end(self, step: int, logs: Mapping[str, float]) -> None:
        if self.progbar is None:
            return
        now = time.monotonic()
        if step < self.progbar.total and now - self._shown < self.interval_s:
            return
        self._shown = now
        self.progbar.update(step, " ".join(f"{k} {float(v):.4f}" for k, v in logs.items()))

    def on_validation_end(self, step: int, result: ValidationResult) -> None:
        prefix = "\n" if self.interactive else ""
        print(f"{prefix}step {step}: validation Dice {result.mean:.4f} ({_dice_line(result.dice)})",
              flush=True)

    def on_train_end(self, result: TrainResult) -> None:
        print(flush=True)
        if result.interrupted_by is not None:
            return
        minutes = result.elapsed_s / 60.0
        print(f"done: step {result.step} of {result.steps} ({result.step - result.initial_step} "
              f"trained now in {minutes:.1f} min); last checkpoint {result.checkpoint}")
        best = result.best
        if best and best.get("score") is not None and math.isfinite(best["score"]):
            print(f"best validation Dice {best['score']:.4f} at step {best['step']} "
                  f"({result.model_dir / 'best'})")
        elif result.last_validation is None:
            print("no validation (fold -1 or no held-out volumes)")
        print(f"configuration: {result.model_dir / 'config.json'}", flush=True)
