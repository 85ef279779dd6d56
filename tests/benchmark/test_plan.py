"""The plan: runs in order, configurations in layers (defaults, preset, user), nothing written."""

from __future__ import annotations

import pytest

from dltk_mm.benchmark.plan import BenchmarkSettings, plan_runs, run_config, run_dir
from dltk_mm.benchmark.presets import get_benchmark_preset
from dltk_mm.errors import ConfigurationError


def settings(tmp_path, preset: str = "smoke", **options) -> BenchmarkSettings:
    return BenchmarkSettings(results_dir=tmp_path / "results",
                             preset=get_benchmark_preset(preset), **options)


def test_user_overrides_win_over_the_preset(tmp_path) -> None:
    config = run_config(settings(tmp_path, overrides={"steps": 7,
                                                      "network.strided_kernel": "code"}),
                        "v4", 0, 0, tmp_path / "m.csv")
    assert config.steps == 7 and config.network.strided_kernel == "code"
    assert config.pipeline.patch_size == (24, 24, 24)  # the preset's, not overridden
    # an override back to the paper's default still wins over the preset
    config = run_config(settings(tmp_path, overrides={"steps": 10000}), "v4", 0, 0,
                        tmp_path / "m.csv")
    assert config.steps == 10000


def test_runs_are_ordered_seed_fold_scheme_with_their_own_folders(tmp_path) -> None:
    plan = plan_runs(settings(tmp_path, "paper", schemes=("v4", "joint"), seeds=(3, 4)),
                     tmp_path / "m.csv")
    assert [r.name for r in plan] == [
        "v4/fold0/seed3", "joint/fold0/seed3", "v4/fold1/seed3", "joint/fold1/seed3",
        "v4/fold0/seed4", "joint/fold0/seed4", "v4/fold1/seed4", "joint/fold1/seed4"]
    for run in plan:
        assert run.model_dir == run_dir(tmp_path / "results", run.scheme, run.fold, run.seed)
        assert (run.config.scheme, run.config.fold, run.config.seed) == (run.scheme, run.fold,
                                                                          run.seed)
        assert run.config.manifest == str(tmp_path / "m.csv")
    assert not (tmp_path / "results").exists()


def test_evaluation_overrides_change_only_the_evaluation(tmp_path) -> None:
    plan = plan_runs(settings(tmp_path, inference_overrides={"overlap": 0.0, "mirror": True}),
                     tmp_path / "m.csv")
    run = plan[0]
    assert run.inference.overlap == 0.0 and run.inference.mirror
    assert run.inference.batch_size == run.config.inference.batch_size == 8  # the preset's
    assert run.config.inference.overlap == 0.5 and not run.config.inference.mirror


def test_bad_settings_are_refused_naming_the_option(tmp_path) -> None:
    with pytest.raises(ConfigurationError, match="set by the benchmark"):
        settings(tmp_path, overrides={"fold": 1})
    with pytest.raises(ConfigurationError, match="unknown scheme"):
        settings(tmp_path, schemes=("v9",))
    with pytest.raises(ConfigurationError, match="weights"):
        settings(tmp_path, weights="first")
    with pytest.raises(ConfigurationError, match="overlaps"):
        settings(tmp_path, inference_overrides={"overlaps": 0.2})
    with pytest.raises(ConfigurationError, match="steps"):
        run_config(settings(tmp_path, overrides={"steps": 0}), "v4", 0, 0, tmp_path / "m.csv")
    with pytest.raises(ConfigurationError, match="network.widht|widht"):
        run_config(settings(tmp_path, overrides={"network.widht": 2.0}), "v4", 0, 0,
                   tmp_path / "m.csv")
