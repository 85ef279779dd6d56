"""Deterministic training is repeatable, and an interrupted and resumed run ends with the weights
of an uninterrupted one."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from dltk_mm.training import train
from dltk_mm.training.checkpointing import checkpoint_step, latest_checkpoint
from tests.training.conftest import SendSigint, small_config

STEPS = 6
STOP_AFTER = 3


def _final_state(model_dir: Path) -> dict[str, np.ndarray]:
    """Every tensor of the newest checkpoint but the input pipeline's serialised position."""
    reader = tf.train.load_checkpoint(latest_checkpoint(model_dir))
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
            if not key.startswith(("_CHECKPOINTABLE_OBJECT_GRAPH", "iterator"))}


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    differing = [key for key in a if not np.array_equal(a[key], b[key])]
    assert not differing, differing[:5]


@pytest.fixture(scope="module")
def uninterrupted(small_phantoms: Path, tmp_path_factory: pytest.TempPathFactory):
    config = small_config(small_phantoms, small_phantoms.parent.parent / "cache", STEPS,
                          deterministic=True, fold=-1)
    model_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = train(config, model_dir)
    assert result.completed
    return config, _final_state(model_dir)


def test_deterministic_training_twice_gives_identical_weights(uninterrupted,
                                                              tmp_path: Path) -> None:
    config, expected = uninterrupted
    train(config, tmp_path / "again")
    _assert_same(_final_state(tmp_path / "again"), expected)
    weights = [k for k in expected if k.startswith("model/")]
    optimizer = [k for k in expected if k.startswith("optimizer/")]
    assert len(weights) > 20 and len(optimizer) > 2 * 10  # weights and Adam moments compared


def test_interrupted_and_resumed_training_ends_with_the_same_weights(uninterrupted,
                                                                     tmp_path: Path) -> None:
    config, expected = uninterrupted
    model_dir = tmp_path / "run"
    first = train(config, model_dir, callbacks=[SendSigint(STOP_AFTER)])
    # Step k is reported once step k+1 was dispatched: the run stops after that step.
    assert first.interrupted_by == signal.SIGINT and first.step == STOP_AFTER + 1
    assert checkpoint_step(latest_checkpoint(model_dir)) == first.step
    second = train(config, model_dir)
    assert second.initial_step == first.step and second.step == STEPS
    _assert_same(_final_state(model_dir), expected)
