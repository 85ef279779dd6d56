"""The dltk-mm-train command: flags, exit statuses and fast refusals, and a real SIGTERM +
resume in subprocesses."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf
from absl import flags

from dltk_mm.cli.train import define_flags
from dltk_mm.networks.multistream import make_optimizer
from dltk_mm.training import load_config, restore_checkpoint
from dltk_mm.training.checkpointing import checkpoint_step, latest_checkpoint
from dltk_mm.training.config_flags import config_from_flags
from tests.conftest import REPO_ROOT, interrupt_after_first_checkpoint, small_phantom_manifest

STEPS = 30


def _parse(*args: str) -> flags.FlagValues:
    values = flags.FlagValues()
    define_flags(values)
    values(["dltk-mm-train", *args])
    return values


def test_flags_give_the_config(tmp_path: Path) -> None:
    values = _parse(f"--manifest={tmp_path}/m.csv", f"--model_dir={tmp_path}/run", "--scheme=v4",
                    "--modalities=ct", "--patch_size=32", "--batch_size=4", "--width=0.25",
                    "--jitter=-8,7", "--flip_axes=2", "--fold=-1", "--steps=100",
                    "--learning_rate=0.01", "--loss=cross_entropy", "--deterministic",
                    "--spacing_mm=4", "--label_preset=btcv", "--strided_kernel=code")
    config = config_from_flags(values)
    assert config.manifest == str((tmp_path / "m.csv").resolve())
    assert config.scheme == "v4" and config.modalities == ("ct",) and config.fold == -1
    assert config.pipeline.patch_size == (32, 32, 32) and config.pipeline.batch_size == 4
    assert config.pipeline.jitter == (-8, 7)
    assert config.pipeline.augmentation.flip_axes == (2,)
    assert config.network.width == 0.25 and config.network.strided_kernel == "code"
    assert config.effective_learning_rate == 0.01 and config.loss == "cross_entropy"
    assert config.deterministic and config.steps == 100
    assert config.preprocessing.spacing_mm == 4 and config.preprocessing.label_preset == "btcv"
    defaults = config_from_flags(_parse("--manifest=m.csv", "--model_dir=r", "--scheme=v1"))
    assert defaults.effective_learning_rate == 1e-4 and defaults.steps == 10000
    assert defaults.pipeline.patch_size == (64, 64, 64) and defaults.modalities == ("mr", "ct")
    with pytest.raises(flags.IllegalFlagValueError):
        _parse("--manifest=m.csv", "--model_dir=r")  # --scheme is required
    with pytest.raises(flags.IllegalFlagValueError):
        _parse("--manifest=m.csv", "--scheme=v1")  # --model_dir is required
    assert _parse("--manifest=m.csv", "--model_dir=r", "--scheme=v1", "--restart").restart


_FAST_REFUSAL = (
    "import sys\n"
    "from dltk_mm.cli import train\n"
    "from dltk_mm.cli._common import tensorflow_imported\n"
    "try:\n"
    "    train.run(['dltk-mm-train', *sys.argv[1:]])\n"
    "except SystemExit as stop:\n"
    "    print('exit', stop.code, 'tensorflow', tensorflow_imported())\n"
)


def _refusal(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _FAST_REFUSAL, *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, env=_environment())


def test_bad_input_is_refused_with_exit_2_before_importing_tensorflow(tmp_path: Path) -> None:
    missing = _refusal(f"--manifest={tmp_path / 'nowhere.csv'}", f"--model_dir={tmp_path / 'r'}",
                       "--scheme=v4")
    assert "exit 2 tensorflow False" in missing.stdout, missing.stderr[-3000:]
    assert "nowhere.csv" in missing.stderr and "Traceback" not in missing.stderr
    broken = tmp_path / "broken.csv"
    broken.write_text("subject_id,modality,image\ns1,ct,images/s1.nii.gz\n")
    flagfile = tmp_path / "run.cfg"
    flagfile.write_text(f"--manifest={broken}\n--scheme=v4\n")
    bad_rows = _refusal(f"--flagfile={flagfile}", f"--model_dir={tmp_path / 'r'}")
    assert "exit 2 tensorflow False" in bad_rows.stdout, bad_rows.stderr[-3000:]
    assert "s1.nii.gz" in bad_rows.stderr
    (tmp_path / "a_file").write_text("not a folder")
    model_file = _refusal(f"--manifest={broken}", f"--model_dir={tmp_path / 'a_file'}",
                          "--scheme=v4")
    assert "exit 2 tensorflow False" in model_file.stdout, model_file.stderr[-3000:]
    assert "is a file" in model_file.stderr
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_phantom_manifest(tmp_path_factory.mktemp("phantoms"), 3, 0, seed=1)


def _command(manifest: Path, model_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "dltk_mm.cli.train", f"--manifest={manifest}",
        f"--model_dir={model_dir}", "--scheme=joint", "--modalities=ct",
        "--filters=2,4,4,4,8", "--num_res_units=1", "--spacing_mm=8", "--patch_size=16",
        "--batch_size=2", f"--steps={STEPS}", "--checkpoint_interval=3",
        f"--validation_interval={STEPS}", "--log_interval=5",
        f"--cache_dir={manifest.parent.parent / 'cache'}", "--deterministic", *extra,
    ]


def _environment() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_flag_errors_exit_2(phantoms: Path, tmp_path: Path) -> None:
    given = [f"--manifest={phantoms}", "--scheme=v4", f"--model_dir={tmp_path / 'run'}"]
    for args, named in ((given[:2], "--model_dir"),  # a required flag missing
                        ([*given, "--scheme=v9"], "v9"),
                        ([*given, "--filtres=2"], "filtres"),  # a typo
                        ([*given, "--loss=hinge"], "dice_cross_entropy"),  # a choice's names
                        ([*given, "extra"], "positional")):
        result = subprocess.run([sys.executable, "-m", "dltk_mm.cli.train", *args], cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=120, env=_environment())
        assert result.returncode == 2, (args, result.stderr[-3000:])
        assert named in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_sigterm_saves_and_the_same_command_resumes(phantoms: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "run"
    command = _command(phantoms, model_dir)
    log = tmp_path / "first.log"
    status = interrupt_after_first_checkpoint(command, model_dir, log, signal.SIGTERM)
    first = log.read_text()
    assert status == 143, first
    assert "data 3/3: " in first and "\r" not in first and "\x1b[" not in first  # not a terminal
    match = re.search(r"interrupted at step (\d+); rerun the same command to resume", first)
    assert match, first
    stopped = int(match.group(1))
    assert 3 <= stopped < STEPS
    prefix = latest_checkpoint(model_dir)
    assert prefix.endswith(f"ckpt-{stopped}") and checkpoint_step(prefix) == stopped

    # The checkpoint restores into a model rebuilt from config.json alone.
    config = load_config(model_dir)
    model = config.build_model()
    optimizer = make_optimizer(config.effective_learning_rate)
    model.compile(optimizer=optimizer)
    assert restore_checkpoint(prefix, model, optimizer) == stopped
    assert int(optimizer.iterations.numpy()) == stopped

    second = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                            env=_environment(), timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"resuming from step {stopped} (checkpoint {prefix})" in second.stdout
    assert f"done: step {STEPS} of {STEPS} ({STEPS - stopped} trained now" in second.stdout
    assert "best validation Dice" in second.stdout
    final = latest_checkpoint(model_dir)
    assert checkpoint_step(final) == STEPS
    # Exactly STEPS optimiser updates in total: the restored Adam state kept counting.
    iterations = tf.train.load_checkpoint(final).get_tensor(
        "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")
    assert int(iterations) == STEPS
    with (model_dir / "history.csv").open() as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle)]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS

    # The same folder with a different configuration is refused, naming the option.
    refused = subprocess.run(_command(phantoms, model_dir, "--batch_size=4"), cwd=REPO_ROOT,
                             capture_output=True, text=True, env=_environment(), timeout=300)
    assert refused.returncode == 2
    assert "pipeline.batch_size: 2 (saved) != 4 (now)" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert checkpoint_step(latest_checkpoint(model_dir)) == STEPS


def test_a_recipe_run_records_the_resolved_settings(phantoms: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "plus"
    command = [*_command(phantoms, model_dir), "--recipe=plus", "--steps=4", "--warmup_steps=2",
               "--lr_schedule=poly", "--validation_interval=4",
               "--novalidation_largest_component"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                            env=_environment(), timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "(2 warm-up steps, poly decay)" in result.stdout
    assert "recipe: plus" in result.stdout and "done: step 4 of 4" in result.stdout
    saved = json.loads((model_dir / "config.json").read_text())
    assert saved["recipe"] == "plus" and saved["loss"] == "dice_cross_entropy"
    assert saved["lr_schedule"] == "poly" and saved["warmup_steps"] == 2  # the flags given
    assert saved["inference"]["mirror"] is False and saved["inference"]["weighting"] == "gaussian"
    assert saved["inference"]["largest_component"] is False  # the flag won over the recipe
