"""The benchmark presets: the paper's settings, and what the other presets change."""

from __future__ import annotations

import pytest

from dltk_mm.benchmark.plan import BenchmarkSettings, run_config
from dltk_mm.benchmark.presets import (
    ALL_SCHEMES,
    AVAILABLE_SCHEMES,
    BENCHMARK_PRESETS,
    CODE_SCHEMES,
    get_benchmark_preset,
)
from dltk_mm.errors import ConfigurationError


def preset_config(tmp_path, preset: str, scheme: str):
    settings = BenchmarkSettings(results_dir=tmp_path, preset=get_benchmark_preset(preset))
    return run_config(settings, scheme, 1, 2, tmp_path / "m.csv")


@pytest.mark.parametrize("scheme", AVAILABLE_SCHEMES)
def test_paper_preset_holds_the_paper_settings(tmp_path, scheme: str) -> None:
    config = preset_config(tmp_path, "paper", scheme)
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
    assert config.inference.overlap == 0.5 and config.inference.weighting == "uniform"
    assert config.cache_dir == str(tmp_path / "cache")


def test_cpu_and_smoke_presets_change_only_their_fields(tmp_path) -> None:
    smoke = preset_config(tmp_path, "smoke", "v4")
    assert smoke.steps == 300 and smoke.pipeline.patch_size == (24, 24, 24)
    assert smoke.preprocessing.spacing_mm == 4.0 and smoke.network.num_res_units == 1
    assert smoke.inference.batch_size == 8
    assert smoke.effective_learning_rate == pytest.approx(1e-4)  # the scheme's rate still
    cpu = preset_config(tmp_path, "cpu", "joint")
    assert cpu.network.width == 0.25 and cpu.network.num_res_units == 3
    assert cpu.preprocessing.spacing_mm == 4.0  # the paper's 128 mm field of view
    assert cpu.pipeline.patch_size == (32, 32, 32) and cpu.pipeline.batch_size == 4
    assert cpu.steps == 3000 and cpu.effective_learning_rate == pytest.approx(1e-3)
    paper = preset_config(tmp_path, "paper", "joint")
    assert set(paper.differences(cpu)) == set(BENCHMARK_PRESETS["cpu"].overrides)


def test_presets_restate_no_default(tmp_path) -> None:
    from dltk_mm.flag_fields import get_path

    paper = preset_config(tmp_path, "paper", "v4")
    for preset in BENCHMARK_PRESETS.values():
        for name, value in preset.overrides.items():
            assert get_path(paper, name) != value, (preset.name, name)


def test_presets_run_no_code_variant_and_smoke_runs_msbn() -> None:
    from dltk_mm.networks import SCHEMES

    assert set(AVAILABLE_SCHEMES) == set(SCHEMES)
    assert set(CODE_SCHEMES) == {"v1_code", "v2_code", "v4_code"}
    for preset in BENCHMARK_PRESETS.values():
        assert not set(CODE_SCHEMES) & set(preset.schemes), preset.name
    assert BENCHMARK_PRESETS["smoke"].schemes == ALL_SCHEMES
    assert "msbn" not in BENCHMARK_PRESETS["paper"].schemes


def test_benchmark_presets_are_not_the_label_presets() -> None:
    from dltk_mm.io import labels

    with pytest.raises(ConfigurationError, match="unknown benchmark preset 'gpu'"):
        get_benchmark_preset("gpu")
    assert not set(BENCHMARK_PRESETS) & set(labels.PRESETS)
    assert get_benchmark_preset("SMOKE") is BENCHMARK_PRESETS["smoke"]
