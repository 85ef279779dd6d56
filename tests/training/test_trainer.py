"""A short training run on phantoms: outputs in the model folder, checkpoint restore, loading."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from dltk_mm.errors import ConfigurationError
from dltk_mm.io.pipeline import PipelineConfig
from dltk_mm.networks.multistream import make_optimizer
from dltk_mm.training import (
    TrainConfig,
    TrainingCallback,
    load_trained_model,
    read_split,
    restore_checkpoint,
    train,
)
from dltk_mm.training import trainer as trainer_module
from dltk_mm.training.checkpointing import checkpoint_step, model_trackable
from tests.training.conftest import small_config

STEPS = 6


class Recorder(TrainingCallback):
    """Keeps what the trainer reports."""

    def __init__(self) -> None:
        self.info = None
        self.steps: list[int] = []
        self.step_logs: dict[int, dict[str, float]] = {}
        self.validations = []
        self.checkpoints: list[tuple[int, str]] = []
        self.result = None

    def on_train_begin(self, info) -> None:
        self.info = info

    def on_step_end(self, step, logs) -> None:
        self.steps.append(step)
        self.step_logs[step] = dict(logs)
        assert all(math.isfinite(v) for v in logs.values())

    def on_validation_end(self, step, result) -> None:
        self.validations.append(result)

    def on_checkpoint(self, step, path) -> None:
        self.checkpoints.append((step, path))

    def on_train_end(self, result) -> None:
        self.result = result


def tiny_config(manifest: Path, cache_dir: Path, **overrides) -> TrainConfig:
    """The small network, validating and checkpointing every 3 steps, recording every 2."""
    values = dict(validation_interval=3, checkpoint_interval=3, log_interval=2)
    values.update(overrides)
    return small_config(manifest, cache_dir, STEPS, **values)


@pytest.fixture(scope="module")
def run(small_phantoms: Path, tmp_path_factory: pytest.TempPathFactory):
    model_dir = tmp_path_factory.mktemp("run") / "model"
    config = tiny_config(small_phantoms, small_phantoms.parent.parent / "cache")
    recorder = Recorder()
    with pytest.MonkeyPatch.context() as patch:  # keep the validation's probability functions
        created = recorder.stream_probabilities = []
        original = trainer_module.StreamProbabilities
        patch.setattr(trainer_module, "StreamProbabilities",
                      lambda *args, **kwargs: created.append(original(*args, **kwargs))
                      or created[-1])
        result = train(config, model_dir, callbacks=[recorder])
    return config, model_dir, result, recorder


def test_trains_exactly_the_steps_and_writes_the_model_dir(run) -> None:
    config, model_dir, result, recorder = run
    assert result.step == STEPS and result.completed and result.interrupted_by is None
    assert result.initial_step == 0 and result.resumed_from is None
    assert recorder.steps == list(range(1, STEPS + 1))
    assert recorder.result is result
    assert recorder.info.num_parameters > 0
    assert TrainConfig.load(model_dir / "config.json") == config
    assert [s for s, _ in recorder.checkpoints] == [3, 6]
    assert checkpoint_step(result.checkpoint) == STEPS
    assert (model_dir / "checkpoints" / "ckpt-3.index").is_file()
    split = read_split(model_dir)
    assert set(split.role) == {"train", "validation"}
    assert set(split.modality) == {"mr", "ct"}
    assert sorted(sum(recorder.info.validation_subjects.values(), [])) == sorted(
        split.subject_id[split.role == "validation"])


def test_step_logs_hold_the_modalities_trained_since_the_last_record(run) -> None:
    """Losses are read one step late (no device sync per step) yet belong to their own step."""
    _, model_dir, _, recorder = run
    # joint, order mr, ct, mr, ...; records every 2 steps reset the running means.
    assert {step: set(logs) for step, logs in recorder.step_logs.items()} == {
        1: {"loss", "loss_mr"}, 2: {"loss", "loss_mr", "loss_ct"},
        3: {"loss", "loss_mr"}, 4: {"loss", "loss_mr", "loss_ct"},
        5: {"loss", "loss_mr"}, 6: {"loss", "loss_mr", "loss_ct"},
    }
    with (model_dir / "history.csv").open() as handle:
        rows = {int(r["step"]): r for r in csv.DictReader(handle)}
    for step in (2, 4, 6):
        for key in ("loss", "loss_mr", "loss_ct"):
            assert recorder.step_logs[step][key] == pytest.approx(float(rows[step][key]), rel=1e-6)
    for step in (3, 5):  # the first step after a record: its own MR loss alone
        logs = recorder.step_logs[step]
        assert logs["loss"] == pytest.approx(logs["loss_mr"], rel=1e-6)
    assert recorder.step_logs[1]["loss_mr"] != recorder.step_logs[3]["loss_mr"]


def test_validation_traces_each_stream_once_per_run(run) -> None:
    _, _, _, recorder = run
    assert len(recorder.validations) == 2 and len(recorder.stream_probabilities) == 1
    functions = recorder.stream_probabilities[0]
    assert [functions.function(m).experimental_get_tracing_count() for m in ("mr", "ct")] == [1, 1]


def test_validation_dice_per_organ_and_modality(run) -> None:
    _, model_dir, result, recorder = run
    assert [v.step for v in recorder.validations] == [3, 6]
    last = recorder.validations[-1]
    assert set(last.dice) == {"mr", "ct"}
    assert set(last.dice["ct"]) == {"liver", "spleen", "right_kidney", "left_kidney"}
    values = [v for organs in last.dice.values() for v in organs.values()]
    assert all(0.0 <= v <= 1.0 for v in values if not math.isnan(v))
    assert 0.0 <= last.mean <= 1.0
    assert last.mean == pytest.approx(np.nanmean(values))
    best = result.best
    assert best is not None and best["step"] in (3, 6)
    assert best["score"] == pytest.approx(max(v.mean for v in recorder.validations))
    assert (model_dir / "best" / "model.index").is_file()


def test_history_csv(run) -> None:
    _, model_dir, _, _ = run
    with (model_dir / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [2, 3, 4, 6]
    for row in rows:
        if int(row["step"]) in (2, 4, 6):
            assert 0.0 < float(row["loss_mr"]) <= 1.0 and 0.0 < float(row["loss_ct"]) <= 1.0
        if int(row["step"]) in (3, 6):
            for key in ("val_dice_mr_liver", "val_dice_ct_spleen", "val_dice_mean"):
                assert row[key] == "" or 0.0 <= float(row[key]) <= 1.0
            assert row["val_dice_mean"] != ""


def _event_tags(folder: Path) -> dict[str, list[tuple[int, float]]]:
    tags: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor))
                tags.setdefault(value.tag, []).append((event.step, number))
    return tags


def test_tensorboard_event_files(run) -> None:
    _, model_dir, _, _ = run
    train_tags = _event_tags(model_dir / "logs" / "train")
    assert {"loss", "loss/mr", "loss/ct"} <= set(train_tags)
    assert [s for s, _ in train_tags["loss/mr"]] == [2, 4, 6]
    validation_tags = _event_tags(model_dir / "logs" / "validation")
    assert {"dice/mean", "dice/mr/liver", "dice/ct/left_kidney", "dice/ct/mean"} <= set(
        validation_tags)
    assert all(0.0 <= v <= 1.0 for _, v in validation_tags["dice/mean"])


def _assert_state_equals_checkpoint(prefix: str, model, optimizer, tmp_path: Path) -> int:
    """Writes the in-memory state with the checkpoint's structure and compares every tensor."""
    written = tf.train.Checkpoint(model=model_trackable(model), optimizer=optimizer).write(
        str(tmp_path / "state"))
    saved, current = tf.train.load_checkpoint(prefix), tf.train.load_checkpoint(written)
    keys = [k for k in current.get_variable_to_shape_map() if k != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    differing = [k for k in keys
                 if not np.array_equal(saved.get_tensor(k), current.get_tensor(k))]
    return len(keys) - len(differing) if not differing else -len(differing)


def test_restore_checkpoint_restores_weights_statistics_and_optimizer(run, tmp_path: Path) -> None:
    config, model_dir, _, _ = run
    prefix = str(model_dir / "checkpoints" / "ckpt-3")
    model = config.build_model()
    optimizer = make_optimizer(config.effective_learning_rate, epsilon=config.adam_epsilon)
    model.compile(optimizer=optimizer)
    # Before the restore the fresh state differs from the checkpoint (the check can fail).
    assert _assert_state_equals_checkpoint(prefix, model, optimizer, tmp_path / "a") < 0
    assert restore_checkpoint(prefix, model, optimizer) == 3
    assert int(optimizer.iterations.numpy()) == 3
    matched = _assert_state_equals_checkpoint(prefix, model, optimizer, tmp_path / "b")
    # All weights, batch-norm moving statistics and Adam moments (2 per weight) were compared.
    assert matched >= len(model.weights) + 2 * len(model.trainable_weights)
    moving = [v for v in model.non_trainable_weights if "moving_variance" in v.path]
    assert moving and any(not np.allclose(v.numpy(), 1.0) for v in moving)
    other = tiny_config(Path(config.manifest), Path(config.cache_dir), scheme="v4").build_model()
    with pytest.raises(ConfigurationError, match="does not match"):
        restore_checkpoint(prefix, other)


def test_load_trained_model(run) -> None:
    config, model_dir, result, _ = run
    best = load_trained_model(model_dir)
    assert best.weights == "best" and best.step == result.best["step"]
    last = load_trained_model(model_dir, weights="last")
    assert last.weights == "last" and last.step == STEPS
    assert last.config == config
    reader = tf.train.load_checkpoint(str(model_dir / "checkpoints" / f"ckpt-{STEPS}"))
    trained = config.build_model()
    restore_checkpoint(str(model_dir / "checkpoints" / f"ckpt-{STEPS}"), trained)
    for a, b in zip(last.model.weights, trained.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert reader.has_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")
    image = np.random.default_rng(0).normal(size=(1, 16, 16, 16, 1)).astype(np.float32)
    out = last.model.predict_modality(image, "ct")
    assert out["probabilities"].shape == (1, 16, 16, 16, 5)
    with pytest.raises(ConfigurationError, match="weights must be"):
        load_trained_model(model_dir, weights="newest")


def test_rerun_of_a_finished_run_resumes_and_does_nothing(run) -> None:
    config, model_dir, _, _ = run
    recorder = Recorder()
    result = train(config, model_dir, callbacks=[recorder])
    assert result.resumed_from.endswith(f"ckpt-{STEPS}")
    assert result.initial_step == result.step == STEPS and recorder.steps == []
    with pytest.raises(ConfigurationError, match=r"pipeline\.batch_size: 2 \(saved\) != 4"):
        train(tiny_config(Path(config.manifest), Path(config.cache_dir),
                          pipeline=PipelineConfig(patch_size=(16, 16, 16), batch_size=4)),
              model_dir)
