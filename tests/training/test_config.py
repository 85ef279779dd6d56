"""TrainConfig: JSON round trip, validation, and the model-folder compatibility check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tensorflow as tf

from dltk_mm.errors import ConfigurationError
from dltk_mm.io.augmentation import AugmentationConfig
from dltk_mm.io.pipeline import PipelineConfig
from dltk_mm.io.preprocessing import PreprocessingConfig
from dltk_mm.training.config import RESUMABLE_FIELDS, NetworkConfig, TrainConfig
from dltk_mm.training.trainer import CONFIG_FILE, prepare_model_dir


def _config(**overrides) -> TrainConfig:
    values = dict(
        manifest="/data/manifest.csv",
        scheme="v4",
        modalities=("mr", "ct"),
        order=("ct", "mr", "mr"),
        fold=1,
        network=NetworkConfig(filters=(2, 4, 4, 4, 8), strides=(1, 2, 2, (2, 2, 1), 1),
                              num_res_units=1, strided_kernel="code", width=0.5),
        preprocessing=PreprocessingConfig(spacing_mm=8.0, label_preset="btcv",
                                          ct_clip_min=None),
        pipeline=PipelineConfig(patch_size=(16, 16, 8), batch_size=2, jitter=(-4, 3),
                                augmentation=AugmentationConfig(flip_axes=(2,))),
        learning_rate=3e-4,
        loss="dice_cross_entropy",
        steps=20,
        seed=7,
    )
    values.update(overrides)
    return TrainConfig(**values)


def test_json_round_trip_is_exact(tmp_path: Path) -> None:
    config = _config()
    text = config.to_json()
    data = json.loads(text)
    assert data["pipeline"]["augmentation"]["flip_axes"] == [2]
    assert data["network"]["strides"][3] == [2, 2, 1]
    restored = TrainConfig.from_json(text)
    assert restored == config
    assert restored.differences(config) == {}
    path = config.save(tmp_path / "sub" / "config.json")
    assert TrainConfig.load(path) == config


def test_defaults_are_the_papers() -> None:
    config = TrainConfig(manifest="m.csv", scheme="v4")
    assert config.effective_learning_rate == pytest.approx(1e-4)
    assert TrainConfig(manifest="m.csv", scheme="joint").effective_learning_rate == 1e-3
    assert config.pipeline.patch_size == (64, 64, 64) and config.pipeline.batch_size == 16
    assert config.steps == 10000 and config.num_folds == 2 and config.loss == "dice"
    assert (config.adam_beta_1, config.adam_beta_2, config.adam_epsilon) == (0.9, 0.999, 1e-5)
    assert config.effective_order == ("mr", "ct")
    assert config.validation_overlap == 0.5
    assert _config(learning_rate=None).effective_learning_rate == 1e-4


def test_unknown_options_are_rejected() -> None:
    data = _config().to_dict()
    data["batch"] = 3
    with pytest.raises(ConfigurationError, match="batch"):
        TrainConfig.from_dict(data)
    data = _config().to_dict()
    data["pipeline"]["patchsize"] = 3
    with pytest.raises(ConfigurationError, match="patchsize"):
        TrainConfig.from_dict(data)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"strategy": "horovod"}, "strategy"),
        ({"pipeline": PipelineConfig(patch_size=(20, 16, 16))}, "divisible"),
        ({"pipeline": PipelineConfig(seed=3)}, "seed"),
        ({"scheme": "v9"}, "scheme"),
        ({"order": ("ct", "pet")}, "order"),
        ({"loss": "hinge"}, "loss"),
        ({"fold": -2}, "fold"),
        ({"validation_overlap": 1.0}, "overlap"),
        ({"modalities": "ct"}, "modalities"),
    ],
)
def test_invalid_options_are_rejected(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        _config(**overrides)


def test_differences_name_the_fields() -> None:
    config = _config()
    other = _config(steps=40, pipeline=PipelineConfig(patch_size=(16, 16, 8), batch_size=4,
                                                      jitter=(-4, 3),
                                                      augmentation=AugmentationConfig(
                                                          flip_axes=(2,))))
    assert set(config.differences(other)) == {"steps", "pipeline.batch_size"}
    assert set(config.incompatible_differences(other)) == {"pipeline.batch_size"}
    assert "steps" in RESUMABLE_FIELDS


def _fake_checkpoint(model_dir: Path) -> None:
    """A real (tiny) TensorFlow checkpoint, so the folder counts as holding a trained run."""
    tf.train.Checkpoint(step=tf.Variable(3)).save(str(model_dir / "checkpoints" / "ckpt"))


def test_model_dir_refuses_a_different_configuration(tmp_path: Path) -> None:
    model_dir = tmp_path / "run"
    config = _config()
    assert prepare_model_dir(model_dir, config) is None
    assert TrainConfig.load(model_dir / CONFIG_FILE) == config
    _fake_checkpoint(model_dir)
    # Same configuration, or only resumable options changed: fine, config.json updated.
    prepare_model_dir(model_dir, config)
    prepare_model_dir(model_dir, _config(steps=50, validation_interval=5))
    assert TrainConfig.load(model_dir / CONFIG_FILE).steps == 50
    changed = _config(steps=50, validation_interval=5, seed=8, scheme="joint")
    with pytest.raises(ConfigurationError) as error:
        prepare_model_dir(model_dir, changed)
    text = str(error.value)
    assert "seed: 7 (saved) != 8 (now)" in text and "scheme: 'v4'" in text
    assert "--restart" in text
    assert TrainConfig.load(model_dir / CONFIG_FILE).seed == 7  # untouched


def test_restart_moves_the_old_run_aside(tmp_path: Path) -> None:
    model_dir = tmp_path / "run"
    prepare_model_dir(model_dir, _config())
    _fake_checkpoint(model_dir)
    (model_dir / "cache").mkdir()
    moved = prepare_model_dir(model_dir, _config(seed=8), restart=True)
    assert moved is not None and moved.parent == model_dir
    assert moved.name.startswith("previous_")
    assert TrainConfig.load(moved / CONFIG_FILE).seed == 7
    assert (moved / "checkpoints" / "checkpoint").is_file()
    assert TrainConfig.load(model_dir / CONFIG_FILE).seed == 8
    assert not (model_dir / "checkpoints").exists()
    assert (model_dir / "cache").is_dir()  # the preprocessing cache stays


def test_a_foreign_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigurationError, match="not a dltk_mm model folder"):
        prepare_model_dir(tmp_path, _config())
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_an_untrained_folder_takes_a_new_configuration(tmp_path: Path) -> None:
    prepare_model_dir(tmp_path, _config())
    prepare_model_dir(tmp_path, _config(seed=99))  # no checkpoint yet: nothing to lose
    assert TrainConfig.load(tmp_path / CONFIG_FILE).seed == 99
