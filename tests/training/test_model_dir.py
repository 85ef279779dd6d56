"""The model folder's rules: one run at a time, resume only on the same data and below the target
step, and no leftovers of a killed checkpoint write."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dltk_mm.errors import ConfigurationError
from dltk_mm.training import train
from dltk_mm.training.checkpointing import checkpoint_step, latest_checkpoint
from dltk_mm.training.model_dir import (
    DATA_FILE,
    LOCK_FILE,
    FolderLock,
    data_changes,
    read_lock_holder,
    remove_stale_checkpoint_temps,
)
from tests.conftest import REPO_ROOT
from tests.training.conftest import small_config

STEPS = 2


@pytest.fixture(scope="module")
def trained(small_phantoms: Path, tmp_path_factory: pytest.TempPathFactory):
    """A finished 2-step run (its data: the session's phantoms)."""
    model_dir = tmp_path_factory.mktemp("model_dir") / "run"
    config = small_config(small_phantoms, small_phantoms.parent.parent / "cache", STEPS)
    train(config, model_dir)
    return config, model_dir


# ---------------------------------------------------------------------------------------------
# Lock


def test_a_second_lock_is_refused_naming_the_holder(tmp_path: Path) -> None:
    with FolderLock(tmp_path / "run", "model_dir") as first:
        holder = read_lock_holder(first.path)
        assert holder is not None
        assert (holder.host, holder.pid) == (socket.gethostname(), os.getpid())
        with pytest.raises(ConfigurationError, match=(
                rf"model_dir .*run is in use by process {os.getpid()} on host "
                rf"{socket.gethostname()}")):
            FolderLock(tmp_path / "run", "model_dir").acquire()
    assert not (tmp_path / "run" / LOCK_FILE).exists()
    with FolderLock(tmp_path / "run"):  # free again once released
        pass


def test_a_second_trainer_is_refused_before_writing(small_phantoms: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "run"
    config = small_config(small_phantoms, small_phantoms.parent.parent / "cache", STEPS)
    with FolderLock(model_dir, "model_dir"), pytest.raises(
            ConfigurationError, match=rf"in use by process {os.getpid()} on host"):
        train(config, model_dir)
    assert [p.name for p in model_dir.iterdir()] == []


_HOLDER = """
import sys, time
from dltk_mm.training.model_dir import FolderLock
FolderLock(sys.argv[1], "model_dir").acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_lock_of_another_process_and_its_stale_file_after_sigkill(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        assert process.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigurationError, match=rf"in use by process {process.pid} on"):
            FolderLock(folder, "model_dir").acquire()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    # The killed holder's file is left behind; the lock is free, and taken over.
    assert read_lock_holder(folder / LOCK_FILE).pid == process.pid
    with FolderLock(folder, "model_dir") as lock:
        assert read_lock_holder(lock.path).pid == os.getpid()


# ---------------------------------------------------------------------------------------------
# Resume rules


def test_steps_below_the_step_reached_are_refused_without_touching_the_config(trained) -> None:
    config, model_dir = trained
    saved = (model_dir / "config.json").read_bytes()
    with pytest.raises(ConfigurationError, match=(
            rf"already trained to step {STEPS}, past steps=1; nothing was changed.*--steps="
            rf"{STEPS} or more.*--restart")):
        train(config.with_overrides({"steps": 1}), model_dir)
    assert (model_dir / "config.json").read_bytes() == saved
    assert checkpoint_step(latest_checkpoint(model_dir)) == STEPS


def test_resume_on_other_manifest_rows_is_refused(trained) -> None:
    config, model_dir = trained
    manifest = Path(config.manifest)
    original = manifest.read_text()
    saved = {name: (model_dir / name).read_bytes() for name in ("config.json", DATA_FILE,
                                                               "split.csv")}
    first_ct = next(line for line in original.splitlines() if ",ct," in line)
    try:  # the same path, one row more: a subject copied under a new id
        manifest.write_text(original + first_ct.replace("phantom_ct_000", "extra_ct", 1) + "\n")
        with pytest.raises(ConfigurationError, match=(
                r"trained on other data than the manifest gives now: .*row extra_ct \(ct\) "
                r"added.*--restart")):
            train(config, model_dir)
    finally:
        manifest.write_text(original)
    assert {name: (model_dir / name).read_bytes() for name in saved} == saved


def test_resume_on_modified_files_is_refused(trained) -> None:
    config, model_dir = trained
    label = Path(json.loads((model_dir / DATA_FILE).read_text())["rows"][0]["label"])
    stat = label.stat()
    try:
        os.utime(label, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        with pytest.raises(ConfigurationError, match=rf"{label} was modified since the run"):
            train(config, model_dir)
    finally:
        os.utime(label, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_data_changes_name_removed_rows_roles_and_sizes() -> None:
    row = {"subject_id": "a", "modality": "ct", "image": "/i", "label": "/l", "fold": 0,
           "role": "train"}
    saved = {"manifest": "/m.csv", "rows": [row, {**row, "subject_id": "b"}],
             "files": {"/i": {"size": 10, "mtime_ns": 1}, "/l": {"size": 5, "mtime_ns": 1}}}
    now = {"manifest": "/m.csv", "rows": [{**row, "role": "validation"}],
           "files": {"/i": {"size": 11, "mtime_ns": 2}, "/l": {"size": 5, "mtime_ns": 1}}}
    assert data_changes(saved, now) == [
        "a (ct) role: 'train' (then) != 'validation' (now)",
        "row b (ct) removed",
        "/i changed size (10 -> 11 bytes)",
    ]
    assert data_changes(saved, saved) == []


# ---------------------------------------------------------------------------------------------
# Leftovers of a killed checkpoint write


def test_stale_checkpoint_temp_folders_are_removed_at_the_next_start(trained,
                                                                     tmp_path: Path) -> None:
    config, source = trained
    model_dir = tmp_path / "run"
    shutil.copytree(source, model_dir)
    checkpoints = model_dir / "checkpoints"
    for name in ("ckpt-3_temp", "ckpt-4_temp_0123abcd"):
        (checkpoints / name).mkdir()
        (checkpoints / name / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x")
    (checkpoints / "notes_temp.txt").write_text("a user's file")
    before = sorted(p.name for p in checkpoints.iterdir() if "_temp" not in p.name)
    result = train(config, model_dir)
    assert result.initial_step == result.step == STEPS
    assert sorted(p.name for p in checkpoints.iterdir()) == sorted([*before, "notes_temp.txt"])


def test_remove_stale_checkpoint_temps_without_checkpoints(tmp_path: Path) -> None:
    assert remove_stale_checkpoint_temps(tmp_path) == []
