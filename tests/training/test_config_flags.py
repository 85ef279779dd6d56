"""dltk_mm.training.config_flags: every configuration field has one flag, derived from the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from absl import flags

from dltk_mm import flag_fields
from dltk_mm.errors import ConfigurationError
from dltk_mm.inference.segment import InferenceConfig
from dltk_mm.io.augmentation import AugmentationConfig
from dltk_mm.io.pipeline import PipelineConfig
from dltk_mm.io.preprocessing import PreprocessingConfig
from dltk_mm.training import config_flags
from dltk_mm.training.config import NetworkConfig, TrainConfig
from tests.conftest import REPO_ROOT

PAPER_DIR = REPO_ROOT / "experiments" / "paper"

#: The flags of dltk-mm-train before the flags were derived from the fields (the README, the
#: paper flagfiles and the benchmark presets use them): each must keep its name.
KNOWN_FLAGS = (
    "manifest", "modalities", "order", "fold", "num_folds", "split_seed", "cache_dir",
    "spacing_mm", "normalisation", "label_preset", "allow_unknown_labels", "crop_to_organs",
    "crop_margin_mm", "ct_clip_min", "scheme", "num_classes", "filters", "strides", "width",
    "num_res_units", "strided_kernel", "upscore_kernel", "upsample_border", "patch_size",
    "batch_size", "sampling", "max_centres_per_class", "jitter", "patches_per_volume",
    "shuffle_buffer", "noise_sigma", "offset_sigma", "flip_axes", "learning_rate", "loss",
    "steps", "seed", "deterministic", "jit_compile", "strategy", "mixed_precision",
    "validation_interval", "validation_overlap", "validation_batch_size", "checkpoint_interval",
    "keep_checkpoints", "log_interval", "checkpoint_input_pipeline",
)


def _paths() -> set[str]:
    return {path for spec in config_flags.train_flag_specs() for path in spec.paths}


def test_every_field_has_a_flag() -> None:
    fields = set(flag_fields.leaf_fields(TrainConfig))
    assert fields - _paths() == {"pipeline.seed"}  # derived from --seed, see config_flags
    assert {"adam_beta_1", "network.kernel_size", "network.batch_norm_epsilon",
            "preprocessing.normalisation_region", "pipeline.prefetch",
            "pipeline.augmentation.swap_lr_labels", "inference.mirror",
            "ignore_other_modalities"} <= _paths()


def test_the_known_flag_names_keep_working() -> None:
    names = {spec.name for spec in config_flags.train_flag_specs()}
    assert set(KNOWN_FLAGS) <= names
    by_name = flag_fields.specs_by_name(config_flags.train_flag_specs())
    assert by_name["num_classes"].paths == ("network.num_classes", "pipeline.num_classes")
    assert by_name["validation_overlap"].paths == ("inference.overlap",)
    assert by_name["noise_sigma"].paths == ("pipeline.augmentation.noise_sigma",)


def test_the_flags_defaults_are_the_configs(tmp_path: Path) -> None:
    config = config_flags.config_from_args([f"--manifest={tmp_path / 'm.csv'}", "--scheme=v4"])
    assert config == TrainConfig(manifest=str(tmp_path / "m.csv"), scheme="v4")


def test_flags_give_every_part_of_the_config(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = config_flags.config_from_args([
        "--manifest=data/m.csv", "--scheme=v1", "--cache_dir=cache", "--num_classes=3",
        "--strides=1,2,1x2x2,2,1", "--kernel_size=3,3,1", "--batch_norm_momentum=0.9",
        "--ct_clip_min=none", "--normalisation_region=organ_crop", "--patch_size=32,32,16",
        "--image_pad_value=-1", "--swap_lr_labels=1,2", "--adam_epsilon=1e-7",
        "--validation_overlap=0.25", "--validation_batch_size=2", "--validation_mirror",
        "--validation_weighting=gaussian", "--ignore_other_modalities",
    ])
    assert config.manifest == str(tmp_path / "data" / "m.csv")
    assert config.cache_dir == str(tmp_path / "cache")
    assert config.network == NetworkConfig(num_classes=3, strides=(1, 2, (1, 2, 2), 2, 1),
                                           kernel_size=(3, 3, 1), batch_norm_momentum=0.9)
    assert config.pipeline == PipelineConfig(
        patch_size=(32, 32, 16), num_classes=3, image_pad_value=-1.0,
        augmentation=AugmentationConfig(swap_lr_labels=(1, 2)))
    assert config.preprocessing == PreprocessingConfig(ct_clip_min=None,
                                                       normalisation_region="organ_crop")
    assert config.inference == InferenceConfig(overlap=0.25, batch_size=2, mirror=True,
                                               weighting="gaussian")
    assert config.adam_epsilon == 1e-7 and config.ignore_other_modalities


def test_arguments_round_trip(tmp_path: Path) -> None:
    config = TrainConfig(
        manifest=str(tmp_path / "m.csv"), scheme="msbn", modalities=("ct",), order=("ct",),
        fold=-1, network=NetworkConfig(filters=(2, 4, 4, 4, 8), strides=(1, 2, 2, (2, 2, 1), 1),
                                       width=0.5, upsample_border="zero"),
        preprocessing=PreprocessingConfig(spacing_mm=4.0, crop_to_organs=False),
        pipeline=PipelineConfig(patch_size=(16, 16, 8), batch_size=2, jitter=(-4, 3),
                                num_parallel_calls=2,
                                augmentation=AugmentationConfig(flip_axes=(0, 2))),
        learning_rate=3e-4, loss="dice_cross_entropy", steps=20,
        inference=InferenceConfig(largest_component=True, min_component_voxels=5),
        checkpoint_input_pipeline=False, mixed_precision=True)
    assert config_flags.config_from_args(config_flags.train_args(config)) == config
    changed = config_flags.train_args(config, only_changed_from=config.with_overrides(
        {"steps": 10}))
    assert changed == ["--steps=20"]


def test_flag_errors_and_config_errors() -> None:
    with pytest.raises(flags.IllegalFlagValueError):
        config_flags.config_from_args(["--manifest=m.csv"])  # --scheme is required
    with pytest.raises(flags.IllegalFlagValueError):
        config_flags.config_from_args(["--manifest=m.csv", "--scheme=v9"])
    with pytest.raises(flags.IllegalFlagValueError):
        config_flags.config_from_args(["--manifest=m.csv", "--scheme=v4", "--filters=a,b"])
    with pytest.raises(ConfigurationError, match="divisible"):
        config_flags.config_from_args(["--manifest=m.csv", "--scheme=v4", "--patch_size=20"])
    # --loss is a choice among the losses module's names (a flag error listing them).
    with pytest.raises(flags.IllegalFlagValueError, match="dice_cross_entropy"):
        config_flags.config_from_args(["--manifest=m.csv", "--scheme=v4", "--loss=hinge"])
    for name in ("lr_schedule", "recipe"):
        with pytest.raises(flags.IllegalFlagValueError, match=name):
            config_flags.config_from_args(["--manifest=m.csv", "--scheme=v4", f"--{name}=other"])


def test_overrides_hold_only_the_flags_given(tmp_path: Path) -> None:
    flagfile = tmp_path / "preset.cfg"
    flagfile.write_text("# a preset\n--width=0.25\n--patch_size=32\n")
    overrides = config_flags.overrides_from_args([f"--flagfile={flagfile}", "--steps=10000",
                                                  "--num_classes=3"])
    assert overrides == {"network.width": 0.25, "pipeline.patch_size": (32, 32, 32),
                         "steps": 10000, "network.num_classes": 3, "pipeline.num_classes": 3}
    base = TrainConfig(manifest="m.csv", scheme="v4", steps=50)
    layered = base.with_overrides(overrides)
    assert layered.steps == 10000 and layered.network.width == 0.25  # a default wins back


def test_inference_flags_override_only_what_is_given() -> None:
    fv = flags.FlagValues()
    config_flags.define_inference_flags(fv)
    assert {"overlap", "weighting", "batch_size", "mirror", "largest_component",
            "min_component_voxels"} <= set(fv)
    assert fv["overlap"].default == InferenceConfig().overlap
    base = InferenceConfig(overlap=0.25, batch_size=8)
    fv(["dltk-mm-predict"])
    assert config_flags.inference_from_flags(fv, base) == base
    fv = flags.FlagValues()
    config_flags.define_inference_flags(fv)
    fv(["dltk-mm-predict", "--mirror", "--batch_size=4"])
    assert config_flags.inference_from_flags(fv, base) == InferenceConfig(
        overlap=0.25, batch_size=4, mirror=True)


def test_preprocessing_flags_are_the_train_commands() -> None:
    """dltk-mm-preprocess derives its flags from PreprocessingConfig with no renaming, so that
    it and dltk-mm-train share names and defaults."""
    train = {spec.name: spec.paths for spec in config_flags.train_flag_specs()
             if spec.paths[0].startswith("preprocessing.")}
    own = {spec.name: ("preprocessing." + spec.paths[0],)
           for spec in flag_fields.derive_specs(PreprocessingConfig)}
    assert train == own


@pytest.mark.parametrize("flagfile", sorted(PAPER_DIR.glob("*.cfg")), ids=lambda p: p.name)
def test_the_paper_flagfiles_restate_no_default(flagfile: Path) -> None:
    overrides = config_flags.overrides_from_args([f"--flagfile={flagfile}"])
    if flagfile.name == "common.cfg":
        assert overrides == {}
        return
    assert overrides == {"scheme": flagfile.stem}  # learning rate: SCHEMES; steps: the default
