"""The dltk-mm-benchmark command line: its own flags, dltk-mm-train flags as overrides of every
run, ``--eval_*`` flags for the evaluation, and refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from absl import flags

from dltk_mm.cli import benchmark as cli
from dltk_mm.errors import ConfigurationError
from tests.conftest import REPO_ROOT


def parse(*args: str) -> flags.FlagValues:
    values = flags.FlagValues()
    cli.define_flags(values)
    values(["dltk-mm-benchmark", *args])
    return values


def test_training_flags_become_overrides_of_every_run(tmp_path) -> None:
    flagfile = tmp_path / "extra.cfg"
    flagfile.write_text("--upscore_kernel=code\n--seeds=4\n")
    values = parse("--preset=smoke", "--schemes=v4,joint", "--label_preset", "btcv",
                   "--nocrop_to_organs", f"--flagfile={flagfile}", "--learning_rate=3e-4",
                   "--steps=10000", "--cache_dir=relative/cache")
    settings = cli.settings_from_flags(values)
    assert settings.effective_schemes == ("v4", "joint") and settings.effective_seeds == (4,)
    assert str(settings.results_dir) == "results/smoke"
    assert dict(settings.overrides) == {
        "preprocessing.label_preset": "btcv", "preprocessing.crop_to_organs": False,
        "network.upscore_kernel": "code", "learning_rate": 3e-4, "steps": 10000,
        "cache_dir": str(Path("relative/cache").resolve())}
    assert dict(settings.inference_overrides) == {}


def test_a_recipe_brings_its_fields_over_the_preset_and_under_the_flags(tmp_path) -> None:
    """--recipe=plus trains the plus settings, not only its name (a flag given still wins)."""
    from dltk_mm.benchmark import plan_runs
    from dltk_mm.training.recipes import RECIPES

    values = parse("--preset=cpu", "--schemes=joint", "--recipe=plus", "--loss=dice")
    settings = cli.settings_from_flags(values)
    (run,) = plan_runs(settings, tmp_path / "m.csv")[:1]
    config = run.config
    assert config.recipe == "plus" and config.loss == "dice"
    assert config.inference.weighting == RECIPES["plus"]["inference.weighting"] != "uniform"
    assert config.inference.largest_component and config.network.width == 0.25  # recipe, preset


def test_eval_flags_change_the_evaluation_not_the_validation(tmp_path) -> None:
    from dltk_mm.benchmark import plan_runs

    values = parse("--preset=smoke", "--schemes=v4", "--eval_overlap=0", "--eval_mirror",
                   "--validation_overlap=0.25")
    settings = cli.settings_from_flags(values)
    assert dict(settings.inference_overrides) == {"overlap": 0.0, "mirror": True}
    (run,) = plan_runs(settings, tmp_path / "m.csv")
    assert run.config.inference.overlap == 0.25 and not run.config.inference.mirror
    assert run.inference.overlap == 0.0 and run.inference.mirror


@pytest.mark.parametrize(("flag", "instead"), [("--fold=1", "--folds"), ("--seed=2", "--seeds"),
                                                ("--scheme=v4", "--schemes")])
def test_flags_set_for_every_run_are_refused(flag: str, instead: str) -> None:
    from dltk_mm.benchmark.plan import RUN_FIELDS

    with pytest.raises(flags.IllegalFlagValueError, match=instead):
        parse(flag)
    assert {"manifest", *cli.RESERVED_TRAIN_FLAGS} == set(RUN_FIELDS)


def test_malformed_folds_are_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="--folds"):
        cli.settings_from_flags(parse("--folds=0,one"))


def test_command_refuses_bad_options_with_exit_2(tmp_path) -> None:
    command = "from dltk_mm.cli.benchmark import run; run()"
    result = subprocess.run(
        [sys.executable, "-c", command, "--preset=smoke", f"--results_dir={tmp_path}",
         f"--manifest={tmp_path}/missing.csv"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "missing.csv" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written
