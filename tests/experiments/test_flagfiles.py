"""The paper's flagfiles, the presets layered on them and command-line overrides."""

from __future__ import annotations

import pytest
from absl import app

from dltk_mm.errors import ConfigurationError
from experiments.paper import run
from experiments.paper.presets import (
    ALL_SCHEMES,
    AVAILABLE_SCHEMES,
    CODE_SCHEMES,
    PRESETS,
    get_preset,
    scheme_flagfiles,
)


def settings(tmp_path, preset: str = "paper", overrides: tuple[str, ...] = ()
             ) -> run.BenchmarkSettings:
    return run.BenchmarkSettings(results_dir=tmp_path, preset=get_preset(preset),
                                 train_overrides=overrides)


@pytest.mark.parametrize("scheme", AVAILABLE_SCHEMES)
def test_scheme_flagfiles_hold_the_paper_settings(tmp_path, scheme: str) -> None:
    config = run.train_config(scheme, 1, 2, tmp_path / "m.csv", tmp_path / "run",
                              settings(tmp_path))
    assert config.scheme == scheme and config.fold == 1 and config.seed == 2
    assert config.modalities == ("mr", "ct") and config.num_folds == 2
    assert config.pipeline.batch_size == 16 and config.pipeline.patch_size == (64, 64, 64)
    assert config.preprocessing.spacing_mm == 2.0
    assert config.preprocessing.normalisation == "per_volume"
    assert config.network.filters == (16, 64, 128, 256, 512) and config.network.width == 1.0
    assert config.network.num_res_units == 3
    assert (config.network.strided_kernel, config.network.upscore_kernel) == ("paper", "paper")
    assert config.loss == "dice" and config.steps == 10000
    assert (config.adam_beta_1, config.adam_beta_2, config.adam_epsilon) == (0.9, 0.999, 1e-5)
    expected = 1e-3 if scheme in ("individual", "joint") else 1e-4
    assert config.effective_learning_rate == pytest.approx(expected)
    assert config.pipeline.augmentation.noise_sigma == 0.1
    assert config.pipeline.augmentation.flip_axes == ()


def test_presets_and_command_line_overrides_layer_in_order(tmp_path) -> None:
    smoke = run.train_config("v4", 0, 0, tmp_path / "m.csv", tmp_path / "run",
                             settings(tmp_path, "smoke"))
    assert smoke.steps == 300 and smoke.pipeline.patch_size == (24, 24, 24)
    assert smoke.preprocessing.spacing_mm == 4.0 and smoke.network.num_res_units == 1
    assert smoke.effective_learning_rate == pytest.approx(1e-4)  # the scheme file still applies
    cpu = run.train_config("joint", 0, 0, tmp_path / "m.csv", tmp_path / "run",
                           settings(tmp_path, "cpu"))
    assert cpu.network.width == 0.25 and cpu.network.num_res_units == 3
    assert cpu.pipeline.patch_size == (32, 32, 32) and cpu.pipeline.batch_size == 4
    assert cpu.steps == 3000 and cpu.effective_learning_rate == pytest.approx(1e-3)
    overridden = run.train_config(
        "v4", 0, 0, tmp_path / "m.csv", tmp_path / "run",
        settings(tmp_path, "smoke", ("--steps=7", "--strided_kernel=code")))
    assert overridden.steps == 7 and overridden.network.strided_kernel == "code"
    assert overridden.pipeline.patch_size == (24, 24, 24)
    assert PRESETS["smoke"].schemes == ALL_SCHEMES and "msbn" not in PRESETS["paper"].schemes


def test_code_variants_have_flagfiles_but_never_run_by_default() -> None:
    from dltk_mm.networks import SCHEMES

    assert set(AVAILABLE_SCHEMES) == set(SCHEMES)
    assert set(CODE_SCHEMES) == {name for name in SCHEMES if name.endswith("_code")}
    for preset in PRESETS.values():
        assert not set(CODE_SCHEMES) & set(preset.schemes), preset.name
    assert [f.name for f in scheme_flagfiles("v4_code")] == ["common.cfg", "v4_code.cfg"]


def test_bad_override_names_the_flag(tmp_path) -> None:
    with pytest.raises(ConfigurationError, match="bad training flags"):
        run.train_config("v4", 0, 0, tmp_path / "m.csv", tmp_path / "run",
                         settings(tmp_path, "smoke", ("--steps=zero",)))
    with pytest.raises(ConfigurationError, match="unknown preset"):
        get_preset("gpu")
    with pytest.raises(ConfigurationError, match="no such flagfile"):
        scheme_flagfiles("v9")


def test_split_arguments_sends_training_flags_to_the_runs(tmp_path) -> None:
    from absl import flags

    values = flags.FlagValues()
    run.define_flags(values)
    flagfile = tmp_path / "extra.cfg"
    flagfile.write_text("--upscore_kernel=code\n--seeds=4\n")
    driver, overrides = run.split_arguments(
        ["prog", "--preset=smoke", "--schemes=v4,joint", "--label_preset", "btcv",
         "--nocrop_to_organs", f"--flagfile={flagfile}", "--learning_rate=3e-4"], values)
    assert driver == ["prog", "--preset=smoke", "--schemes=v4,joint", "--seeds=4"]
    assert overrides == ["--label_preset=btcv", "--nocrop_to_organs", "--upscore_kernel=code",
                         "--learning_rate=3e-4"]
    values(driver)
    parsed = run.settings_from_flags(values, overrides)
    assert parsed.effective_schemes == ("v4", "joint") and parsed.effective_seeds == (4,)
    assert str(parsed.results_dir) == "results/smoke"
    with pytest.raises(app.UsageError, match="--fold"):
        run.split_arguments(["prog", "--fold=1"], values)
