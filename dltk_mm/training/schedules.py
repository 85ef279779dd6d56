"""The learning rate over a run: constant (the paper), or a warm-up and a poly or cosine decay.

:func:`learning_rate_schedule` turns :attr:`TrainConfig.lr_schedule
<dltk_mm.training.config.TrainConfig.lr_schedule>` and ``warmup_steps`` into what
:func:`dltk_mm.networks.multistream.make_optimizer` takes: the paper's constant learning rate
(docs/paper.md, section 4.4) as a plain number, anything else as a
``keras.optimizers.schedules.LearningRateSchedule`` of the optimiser's step ``t`` (0 for the
first update, ``steps - 1`` for the last), with base rate ``r``, ``w`` warm-up steps and
``T = steps``:

* warm-up: ``r * (t + 1) / w`` for ``t < w`` (it reaches ``r`` at the last warm-up step);
* then, with ``p = (t - w) / (T - w)``: ``"constant"`` ``r``; ``"poly"`` ``r * (1 - p) ** 0.9``;
  ``"cosine"`` ``r * (1 + cos(pi * p)) / 2`` - both decay from ``r`` to 0 at step ``T``.

The schedule is a function of the optimiser's step alone, so a resumed run continues it exactly.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from dltk_mm.errors import ConfigurationError
from dltk_mm.training.config import LR_SCHEDULES, TrainConfig

#: Exponent of the poly decay (the usual 0.9).
POLY_POWER = 0.9


@keras.saving.register_keras_serializable(package="dltk_mm")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """A linear warm-up, then a constant, poly or cosine decay (see the module docstring).

    Args:
        learning_rate: the base rate ``r`` (after warm-up, before decay).
        total_steps: ``T``, the run's optimiser steps.
        decay: ``"constant"``, ``"poly"`` or ``"cosine"``.
        warmup_steps: ``w`` (0: none).
        power: exponent of the poly decay.
    """

    def __init__(self, learning_rate: float, total_steps: int, decay: str = "constant",
                 warmup_steps: int = 0, power: float = POLY_POWER) -> None:
        if decay not in LR_SCHEDULES:
            raise ConfigurationError(f"unknown learning-rate schedule {decay!r}; use one of "
                                     f"{list(LR_SCHEDULES)}")
        if total_steps < 1 or warmup_steps < 0:
            raise ConfigurationError(f"total_steps must be >= 1 and warmup_steps >= 0, got "
                                     f"{total_steps} and {warmup_steps}")
        self.learning_rate = float(learning_rate)
        self.total_steps = int(total_steps)
        self.decay = decay
        self.warmup_steps = int(warmup_steps)
        self.power = float(power)

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float32")
        rate = ops.convert_to_tensor(self.learning_rate, "float32")
        if self.warmup_steps > 0:
            rate = rate * ops.minimum(1.0, (step + 1.0) / float(self.warmup_steps))
        if self.decay == "constant":
            return rate
        span = float(max(self.total_steps - self.warmup_steps, 1))
        progress = ops.clip((step - float(self.warmup_steps)) / span, 0.0, 1.0)
        if self.decay == "poly":
            return rate * ops.power(1.0 - progress, self.power)
        return rate * 0.5 * (1.0 + ops.cos(math.pi * progress))

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments (Keras serialisation)."""
        return {"learning_rate": self.learning_rate, "total_steps": self.total_steps,
                "decay": self.decay, "warmup_steps": self.warmup_steps, "power": self.power}


def learning_rate_schedule(config: TrainConfig) -> float | WarmupDecay:
    """The learning rate of ``config`` for ``make_optimizer``: a number when it is constant
    without warm-up (the paper), else a :class:`WarmupDecay` over ``config.steps``."""
    if config.lr_schedule == "constant" and config.warmup_steps == 0:
        return config.effective_learning_rate
    return WarmupDecay(config.effective_learning_rate, config.steps, config.lr_schedule,
                       config.warmup_steps)
