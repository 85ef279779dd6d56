"""Learning-rate schedules: the paper's constant rate, warm-up, poly and cosine decay."""

from __future__ import annotations

import math

import keras
import pytest

from dltk_mm.errors import ConfigurationError
from dltk_mm.networks.multistream import make_optimizer
from dltk_mm.training.config import TrainConfig
from dltk_mm.training.schedules import WarmupDecay, learning_rate_schedule

RATE, STEPS, WARMUP = 1e-3, 100, 10


def _config(**fields) -> TrainConfig:
    return TrainConfig(manifest="m.csv", scheme="joint", steps=STEPS, learning_rate=RATE,
                       **fields)


def _values(schedule: WarmupDecay, steps) -> list[float]:
    return [float(schedule(step)) for step in steps]


def test_the_paper_default_is_the_constant_number() -> None:
    config = TrainConfig(manifest="m.csv", scheme="v4")
    assert config.lr_schedule == "constant" and config.warmup_steps == 0
    rate = learning_rate_schedule(config)
    assert isinstance(rate, float) and rate == config.effective_learning_rate == 1e-4


@pytest.mark.parametrize("decay", ["poly", "cosine"])
def test_warmup_then_decay_to_zero(decay: str) -> None:
    schedule = learning_rate_schedule(_config(lr_schedule=decay, warmup_steps=WARMUP))
    assert isinstance(schedule, WarmupDecay)
    assert float(schedule(0)) == pytest.approx(RATE / WARMUP)
    assert float(schedule(WARMUP - 1)) == pytest.approx(RATE)  # warm-up ends at the full rate
    assert float(schedule(WARMUP)) == pytest.approx(RATE)  # the decay starts from it
    assert float(schedule(STEPS)) == pytest.approx(0.0, abs=1e-12)
    assert 0 < float(schedule(STEPS - 1)) < RATE / 10
    rising = _values(schedule, range(WARMUP))
    falling = _values(schedule, range(WARMUP, STEPS + 1))
    assert all(a < b for a, b in zip(rising, rising[1:], strict=False))
    assert all(a > b for a, b in zip(falling, falling[1:], strict=False))


def test_poly_and_cosine_values_halfway() -> None:
    middle = WARMUP + (STEPS - WARMUP) // 2
    poly = learning_rate_schedule(_config(lr_schedule="poly", warmup_steps=WARMUP))
    cosine = learning_rate_schedule(_config(lr_schedule="cosine", warmup_steps=WARMUP))
    assert float(poly(middle)) == pytest.approx(RATE * 0.5 ** 0.9, rel=1e-5)
    assert float(cosine(middle)) == pytest.approx(RATE * 0.5, rel=1e-5)
    no_warmup = learning_rate_schedule(_config(lr_schedule="cosine"))
    assert float(no_warmup(0)) == pytest.approx(RATE)
    assert float(no_warmup(STEPS // 4)) == pytest.approx(RATE * (1 + math.cos(math.pi / 4)) / 2,
                                                         rel=1e-5)


def test_constant_with_warmup_stays_at_the_rate() -> None:
    schedule = learning_rate_schedule(_config(warmup_steps=WARMUP))
    assert float(schedule(0)) == pytest.approx(RATE / WARMUP)
    assert _values(schedule, (WARMUP - 1, WARMUP, STEPS, 10 * STEPS)) == pytest.approx([RATE] * 4)


def test_the_optimizer_follows_its_step_and_the_schedule_serialises() -> None:
    schedule = learning_rate_schedule(_config(lr_schedule="poly", warmup_steps=WARMUP))
    optimizer = make_optimizer(schedule)
    optimizer.iterations.assign(WARMUP + 20)
    assert float(optimizer.learning_rate) == pytest.approx(float(schedule(WARMUP + 20)))
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert isinstance(again, WarmupDecay) and again.get_config() == schedule.get_config()


def test_bad_values_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="lr_schedule"):
        _config(lr_schedule="step")
    with pytest.raises(ConfigurationError, match="warmup_steps"):
        _config(warmup_steps=-1)
    with pytest.raises(ConfigurationError, match="schedule"):
        WarmupDecay(RATE, STEPS, decay="linear")


def test_steps_may_change_on_resume_only_with_a_constant_rate() -> None:
    assert _config().incompatible_differences(_config().with_overrides({"steps": 500})) == {}
    poly = _config(lr_schedule="poly")
    assert "steps" in poly.incompatible_differences(poly.with_overrides({"steps": 500}))
