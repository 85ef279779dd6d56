"""TrainConfig: JSON round trip, validation, and the model-folder compatibility check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tensorflow as tf

from dltk_mm.errors import ConfigurationError
from dltk_mm.inference.segment import InferenceConfig
from dltk_mm.io.augmentation import AugmentationConfig
from dltk_mm.io.pipeline import PipelineConfig
from dltk_mm.io.preprocessing import PreprocessingConfig
from dltk_mm.training.config import RESUMABLE_FIELDS, NetworkConfig, TrainConfig
from dltk_mm.training.model_dir import CONFIG_FILE, prepare_model_dir


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
    assert config.inference == InferenceConfig() and config.inference.overlap == 0.5
    assert not config.ignore_other_modalities
    assert _config(learning_rate=None).effective_learning_rate == 1e-4


def test_a_config_json_of_the_previous_layout_loads(tmp_path: Path) -> None:
    """config.json files written before ``inference`` existed held validation_overlap and
    validation_batch_size (None: the training batch size); they load with the same meaning."""
    config = _config(inference=InferenceConfig(overlap=0.25, batch_size=2))
    data = config.to_dict()
    del data["inference"], data["ignore_other_modalities"]
    data.update(validation_overlap=0.25, validation_batch_size=None)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    assert TrainConfig.load(path) == config  # batch None -> pipeline.batch_size (2)
    data["validation_batch_size"] = 3
    path.write_text(json.dumps(data))
    assert TrainConfig.load(path).inference == InferenceConfig(overlap=0.25, batch_size=3)
    data["inference"] = {"overlap": 0.5}
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigurationError, match="keep only 'inference'"):
        TrainConfig.load(path)


def test_inference_settings_round_trip() -> None:
    config = _config(inference=InferenceConfig(weighting="gaussian", mirror=True,
                                               min_component_voxels=10))
    assert TrainConfig.from_json(config.to_json()) == config
    assert json.loads(config.to_json())["inference"]["weighting"] == "gaussian"


def test_with_overrides_changes_dotted_fields_and_validates() -> None:
    config = _config()
    changed = config.with_overrides({"network.width": 0.25, "pipeline.patch_size": (32, 32, 16),
                                     "pipeline.augmentation.noise_sigma": 0.0, "steps": 5,
                                     "inference.mirror": True})
    assert changed.network.width == 0.25 and changed.network.filters == config.network.filters
    assert changed.pipeline.patch_size == (32, 32, 16) and changed.pipeline.batch_size == 2
    assert changed.pipeline.augmentation == AugmentationConfig(noise_sigma=0.0, flip_axes=(2,))
    assert changed.steps == 5 and changed.inference.mirror
    assert set(config.differences(changed)) == {
        "network.width", "pipeline.patch_size", "pipeline.augmentation.noise_sigma", "steps",
        "inference.mirror"}
    assert config.steps == 20  # the original is unchanged
    whole = config.with_overrides({"inference": InferenceConfig(overlap=0.25)})
    assert whole.inference == InferenceConfig(overlap=0.25)
    assert config.with_overrides({}) == config
    with pytest.raises(ConfigurationError, match=r"unknown option\(s\) \['widht'\]"):
        config.with_overrides({"network.widht": 2})
    with pytest.raises(ConfigurationError, match="divisible"):
        config.with_overrides({"pipeline.patch_size": (20, 16, 16)})


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
        ({"modalities": "ct"}, "modalities"),
        ({"lr_schedule": "step"}, "lr_schedule"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"recipe": "best"}, "recipe"),
        ({"individual_shared_steps": True}, "applies only to scheme 'individual'"),
        ({"scheme": "individual"}, r"repeats a modality: scheme individual"),  # order ct, mr, mr
    ],
)
def test_invalid_options_are_rejected(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        _config(**overrides)


def test_individual_shared_steps_keeps_the_old_individual_schedule_reachable() -> None:
    shared = _config(scheme="individual", individual_shared_steps=True)
    assert shared.order == ("ct", "mr", "mr")  # the old alternating cycle is allowed again
    assert TrainConfig.from_json(shared.to_json()) == shared
    assert not _config().individual_shared_steps  # default: each stream its own steps and Adam
    assert "individual_shared_steps" not in RESUMABLE_FIELDS
    assert _config(scheme="individual", order=("ct", "mr")).order == ("ct", "mr")


@pytest.mark.parametrize("name", ["strided_kernel", "upscore_kernel", "upsample_border"])
def test_unknown_network_variants_are_rejected(name: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        NetworkConfig(**{name: "mirror"})


def test_differences_name_the_fields() -> None:
    config = _config()
    other = _config(steps=40, pipeline=PipelineConfig(patch_size=(16, 16, 8), batch_size=4,
                                                      jitter=(-4, 3),
                                                      augmentation=AugmentationConfig(
                                                          flip_axes=(2,))))
    assert set(config.differences(other)) == {"steps", "pipeline.batch_size"}
    assert set(config.incompatible_differences(other)) == {"pipeline.batch_size"}
    assert "steps" in RESUMABLE_FIELDS
    faster = config.with_overrides({"inference.batch_size": 9, "pipeline.prefetch": 2})
    assert config.incompatible_differences(faster) == {}
    mirrored = config.with_overrides({"inference.mirror": True})
    assert set(config.incompatible_differences(mirrored)) == {"inference.mirror"}


def test_resumable_fields_are_fields() -> None:
    names = set(TrainConfig(manifest="m.csv", scheme="v4").differences(
        TrainConfig(manifest="n.csv", scheme="joint", seed=1)))
    flat = {f"{prefix}{name}" for prefix, kind in (("", TrainConfig),
                                                   ("pipeline.", PipelineConfig),
                                                   ("inference.", InferenceConfig))
            for name in kind.__dataclass_fields__}
    assert {"manifest", "scheme", "seed"} == names
    assert flat >= RESUMABLE_FIELDS


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


def test_an_individual_run_of_the_previous_layout_keeps_its_shared_schedule(tmp_path: Path
                                                                             ) -> None:
    """An individual run started before each stream had its own Adam resumes with the schedule it
    was trained with (its checkpoint holds one shared optimizer)."""
    data = _config(scheme="individual", learning_rate=None, order=None).to_dict()
    for key in ("inference", "individual_shared_steps"):
        del data[key]
    data.update(validation_overlap=0.5, validation_batch_size=None)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    assert TrainConfig.load(path).individual_shared_steps
    current = _config(scheme="individual", learning_rate=None, order=None)
    assert not TrainConfig.from_json(current.to_json()).individual_shared_steps
