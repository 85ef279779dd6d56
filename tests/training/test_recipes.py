"""Recipes: named settings layered over TrainConfig's defaults and under the flags given."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dltk_mm.errors import ConfigurationError
from dltk_mm.flag_fields import get_path
from dltk_mm.training import config_flags
from dltk_mm.training.config import TrainConfig
from dltk_mm.training.recipes import RECIPES, recipe_overrides

BASE = ["--manifest=m.csv", "--scheme=v4"]


def _defaults() -> TrainConfig:
    return config_flags.config_from_args(BASE)


def test_paper_is_the_default_and_changes_nothing() -> None:
    assert RECIPES["paper"] == {}
    assert _defaults().recipe == "paper"
    assert config_flags.config_from_args([*BASE, "--recipe=paper"]) == _defaults()


def test_plus_layers_over_the_defaults() -> None:
    plus = config_flags.config_from_args([*BASE, "--recipe=plus"])
    assert plus.recipe == "plus"
    for field, value in RECIPES["plus"].items():
        assert get_path(plus, field) == value, field
    assert plus.loss == "dice_cross_entropy"
    assert plus.inference.largest_component and plus.inference.weighting == "gaussian"
    # Measured and left out: mirroring, flips, the poly schedule.
    assert not plus.inference.mirror and plus.pipeline.augmentation.flip_axes == ()
    assert plus.lr_schedule == "constant"
    # Everything the recipe does not name keeps the paper's default.
    augmentation = plus.pipeline.augmentation
    assert augmentation.gamma_probability > 0 and augmentation.rotation_probability > 0
    assert augmentation.organ_intensity_probability == 0.3
    changed = {key.split(".")[0] for key in plus.differences(_defaults())}
    assert changed == {"loss", "pipeline", "inference", "recipe"}
    assert plus.steps == 10000 and plus.effective_learning_rate == 1e-4


def test_a_flag_given_beats_the_recipe(tmp_path: Path) -> None:
    for args in (["--recipe=plus", "--loss=dice", "--validation_weighting=uniform"],
                 ["--loss=dice", "--validation_weighting=uniform", "--recipe=plus"]):  # any order
        config = config_flags.config_from_args([*BASE, *args])
        assert config.loss == "dice" and config.inference.weighting == "uniform"
        assert config.inference.largest_component
    # ... also when given in a flagfile, and when it equals the paper's default.
    flagfile = tmp_path / "run.cfg"
    flagfile.write_text("--recipe=plus\n--novalidation_largest_component\n")
    config = config_flags.config_from_args([*BASE, f"--flagfile={flagfile}"])
    assert not config.inference.largest_component and config.inference.weighting == "gaussian"
    assert config.loss == "dice_cross_entropy"


def test_config_json_records_the_resolved_fields_and_the_recipe(tmp_path: Path) -> None:
    config = config_flags.config_from_args([*BASE, "--recipe=plus", "--warmup_steps=50"])
    config.save(tmp_path / "config.json")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["recipe"] == "plus" and saved["loss"] == "dice_cross_entropy"
    assert saved["warmup_steps"] == 50
    assert saved["inference"]["largest_component"] is True
    assert saved["inference"]["weighting"] == "gaussian"
    assert TrainConfig.load(tmp_path / "config.json") == config
    # A config.json written before recipes existed loads as the paper recipe.
    del saved["recipe"], saved["lr_schedule"], saved["warmup_steps"]
    old = TrainConfig.from_dict(saved)
    assert old.recipe == "paper" and old.lr_schedule == "constant" and old.warmup_steps == 0


def test_the_recipe_layers_over_a_preset_and_preset_overrides_win() -> None:
    preset = TrainConfig(manifest="m.csv", scheme="joint", steps=300)
    layered = preset.with_overrides(recipe_overrides("plus", {"warmup_steps": 30}))
    assert layered.recipe == "plus" and layered.steps == 300 and layered.warmup_steps == 30
    assert layered.loss == "dice_cross_entropy"
    given = config_flags.overrides_from_args(["--recipe=plus", "--loss=cross_entropy"])
    assert given == {**RECIPES["plus"], "recipe": "plus", "loss": "cross_entropy"}
    with pytest.raises(ConfigurationError, match="unknown recipe 'best'"):
        recipe_overrides("best")
    with pytest.raises(ConfigurationError, match="recipe"):
        TrainConfig(manifest="m.csv", scheme="joint", recipe="best")


def test_train_args_of_a_recipe_run_parse_back() -> None:
    config = config_flags.config_from_args([*BASE, "--recipe=plus", "--loss=dice"])
    args = config_flags.train_args(config, only_changed_from=_defaults())
    assert "--loss=dice" in args  # equal to the default, but the recipe would change it
    assert config_flags.config_from_args([*BASE, *args]) == config
