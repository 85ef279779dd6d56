"""Individual trained as the paper did: every stream gets ``steps`` updates of its own modality
from an Adam of its own, as if trained alone (docs/paper.md, section 4.4)."""

from __future__ import annotations

import csv
import signal
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from dltk_mm.errors import ConfigurationError
from dltk_mm.training import TrainingCallback, restore_checkpoint, train
from dltk_mm.training import trainer as trainer_module
from dltk_mm.training.checkpointing import (
    TrainingCheckpoint,
    checkpoint_step,
    latest_checkpoint,
)
from dltk_mm.training.trainer import separate_streams
from tests.training.conftest import SendSigint, small_config

STEPS = 4
STOP_AFTER = 1


def individual_config(manifest: Path, cache_dir: Path, **overrides):
    """A deterministic individual run on MR and CT, validating and checkpointing every 2 steps."""
    values = dict(deterministic=True, validation_interval=2, checkpoint_interval=2,
                  log_interval=2)
    values.update(overrides)
    return small_config(manifest, cache_dir, STEPS, scheme="individual", **values)


def _state(model_dir: Path) -> dict[str, np.ndarray]:
    """Every tensor of the newest checkpoint but the input pipeline's serialised position and the
    number of checkpoints written (``save_counter``)."""
    reader = tf.train.load_checkpoint(latest_checkpoint(model_dir))
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
            if not key.startswith(("_CHECKPOINTABLE_OBJECT_GRAPH", "iterator", "save_counter"))}


def _iterations(state: dict[str, np.ndarray], modality: str) -> int:
    return int(state[f"optimizer/streams/{modality}/_iterations/.ATTRIBUTES/VARIABLE_VALUE"])


class Steps(TrainingCallback):
    """The steps reported, the history records and the validations."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.logs: dict[int, dict[str, float]] = {}
        self.validated: list[int] = []
        self.info = None

    def on_train_begin(self, info) -> None:
        self.info = info

    def on_step_end(self, step, logs) -> None:
        self.steps.append(step)
        self.logs[step] = dict(logs)

    def on_validation_end(self, step, result) -> None:
        self.validated.append(step)


def _counting_step_fn(batches: Counter):
    """Wraps the trainer's step function to count the batches of each modality index fed."""
    original = trainer_module._make_step_fn

    def make(config, strategy, model, cycle):
        step_fn = original(config, strategy, model, cycle)

        def counted(batch):
            batches[int(batch[2].numpy()[0])] += 1
            return step_fn(batch)

        return counted

    return make


def _train(config, model_dir: Path, callbacks=()) -> tuple:
    batches: Counter = Counter()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer_module, "_make_step_fn", _counting_step_fn(batches))
        result = train(config, model_dir, callbacks=list(callbacks))
    return result, batches


@pytest.fixture(scope="module")
def both(small_phantoms: Path, tmp_path_factory: pytest.TempPathFactory):
    """An individual run on MR and CT."""
    config = individual_config(small_phantoms, small_phantoms.parent.parent / "cache")
    model_dir = tmp_path_factory.mktemp("individual") / "run"
    recorder = Steps()
    result, batches = _train(config, model_dir, [recorder])
    return config, model_dir, result, batches, recorder, _state(model_dir)


def test_every_stream_gets_steps_updates_from_its_own_adam(both) -> None:
    """Fails on the shared schedule: one Adam at ``steps`` and ``steps / 2`` batches per stream."""
    config, model_dir, result, batches, recorder, state = both
    assert separate_streams(config) and recorder.info.batches_per_step == 2
    assert result.step == STEPS and result.completed
    assert recorder.steps == list(range(1, STEPS + 1))
    assert batches == {0: STEPS, 1: STEPS}  # STEPS MR batches and STEPS CT batches
    assert _iterations(state, "mr") == _iterations(state, "ct") == STEPS
    assert not any(k.startswith("optimizer/_iterations") for k in state)  # no shared Adam
    assert checkpoint_step(latest_checkpoint(model_dir)) == STEPS


def test_steps_record_validate_and_checkpoint_as_other_schemes(both) -> None:
    config, model_dir, result, _, recorder, _ = both
    assert recorder.validated == [2, 4] and result.best["step"] in (2, 4)
    assert (model_dir / "best" / "model.index").is_file()
    assert sorted(p.name for p in (model_dir / "checkpoints").glob("*.index")) == [
        "ckpt-2.index", "ckpt-4.index"]
    assert all({"loss", "loss_mr", "loss_ct"} <= set(logs) for logs in recorder.logs.values())
    with (model_dir / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert all(row["loss_mr"] and row["loss_ct"] and row["val_dice_mean"] for row in rows)


def test_the_mr_stream_is_the_mr_only_run(both, small_phantoms: Path, tmp_path: Path) -> None:
    """The MR stream of an individual MR+CT run equals an MR-only individual run of the same
    seed: same weights, batch-norm statistics, Adam moments and iteration count, bit for bit.

    This holds because nothing the MR stream sees depends on CT: the streams share no layer; the
    weights are initialised stream after stream in modality order from the same global seed (MR
    first, so MR draws the same numbers in both runs); MR's patch stream is seeded from the run's
    seed and MR's modality index (0 in both); the folds are drawn per modality; and the CT
    batches go through CT's own Adam only.
    """
    config, _, _, _, _, expected = both
    mr_only = individual_config(small_phantoms, Path(config.cache_dir), modalities=("mr",),
                                ignore_other_modalities=True)
    result, batches = _train(mr_only, tmp_path / "mr")
    assert result.step == STEPS and batches == {0: STEPS}
    alone = _state(tmp_path / "mr")
    assert _iterations(alone, "mr") == _iterations(expected, "mr") == STEPS
    mr_keys = [k for k in alone if k != "step/.ATTRIBUTES/VARIABLE_VALUE"]
    assert any(k.startswith("model/streams/mr/") for k in mr_keys)
    assert not any("/ct/" in k for k in mr_keys)
    assert set(mr_keys) <= set(expected)
    differing = [k for k in mr_keys if not np.array_equal(alone[k], expected[k])]
    assert not differing, differing[:5]


def test_interrupted_and_resumed_individual_ends_at_the_same_counts(both, tmp_path: Path) -> None:
    config, _, _, _, _, expected = both
    model_dir = tmp_path / "run"
    first, before = _train(config, model_dir, [SendSigint(STOP_AFTER)])
    assert first.interrupted_by == signal.SIGINT and first.step == STOP_AFTER + 1
    stopped = _state(model_dir)
    assert _iterations(stopped, "mr") == _iterations(stopped, "ct") == first.step
    second, after = _train(config, model_dir)
    assert second.initial_step == first.step and second.step == STEPS
    assert before + after == {0: STEPS, 1: STEPS}
    final = _state(model_dir)
    assert _iterations(final, "mr") == _iterations(final, "ct") == STEPS
    differing = [k for k in expected if not np.array_equal(final[k], expected[k])]
    assert sorted(final) == sorted(expected) and not differing, differing[:5]


def test_a_shared_optimizer_checkpoint_is_refused_with_the_fix(both, tmp_path: Path) -> None:
    """A checkpoint of the older schedule (one Adam for both streams) names how to resume it."""
    config, _, _, _, _, _ = both
    model = config.build_model()
    shared = trainer_module._make_optimizer(config)
    model.compile(optimizer=shared)
    path = TrainingCheckpoint(tmp_path, model, shared).save(3)
    fresh = config.build_model()
    optimizers = {m: trainer_module._make_optimizer(config) for m in config.modalities}
    fresh.compile(optimizer=optimizers)
    with pytest.raises(ConfigurationError, match="individual_shared_steps.*--restart"):
        restore_checkpoint(path, fresh, optimizers)
    assert restore_checkpoint(path, fresh) == 3  # the weights alone still load


def test_individual_shared_steps_is_the_older_schedule(both, tmp_path: Path) -> None:
    """One Adam for both streams and one steps budget: each stream gets half the batches."""
    config, _, _, _, _, _ = both
    shared = individual_config(Path(config.manifest), Path(config.cache_dir), fold=-1,
                               individual_shared_steps=True)
    assert not separate_streams(shared)
    result, batches = _train(shared, tmp_path / "run")
    assert result.step == STEPS and batches == {0: STEPS // 2, 1: STEPS // 2}
    state = _state(tmp_path / "run")
    assert int(state["optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"]) == STEPS
    assert not any(k.startswith("optimizer/streams/") for k in state)
    default = individual_config(Path(config.manifest), Path(config.cache_dir), fold=-1)
    with pytest.raises(ConfigurationError, match="individual_shared_steps"):
        train(default, tmp_path / "run")


def test_a_distribution_strategy_is_refused(both, tmp_path: Path) -> None:
    config, _, _, _, _, _ = both
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with pytest.raises(ConfigurationError, match="individual_shared_steps"):
        train(config, tmp_path / "run", strategy=strategy)
    assert not (tmp_path / "run").exists()
