"""The model folder of a training run: its layout and the policies that keep it safe.

Layout (names are the constants below and in :mod:`dltk_mm.training.checkpointing`)::

    config.json          the TrainConfig (all a later predict/export needs)
    data.json            fingerprint of the data the run was started on (rows, split, files)
    split.csv            subject_id, modality, fold, role (train / validation / test)
    checkpoints/         ckpt-<step>.* (newest few) + 'checkpoint' index
    best/                model.* weights + best.json (step, scores)  [when validating]
    history.csv          step, losses per modality, validation Dice per modality and organ
    logs/train, logs/validation   TensorBoard event files
    dltk_mm.lock         host and PID of the run using the folder (while it runs)
    previous_<time>/     an earlier run moved aside by restart=True
    cache/               the preprocessing cache, when the manifest's folder is not writable

Policies: one run at a time (:class:`FolderLock`); a folder is resumed only with a compatible
configuration, a target step not below the step reached, and the same data
(:func:`check_model_dir`, :func:`check_data_fingerprint`); nothing is deleted - ``restart``
moves the old run aside - except the temporary folders a killed checkpoint write leaves behind
(:func:`remove_stale_checkpoint_temps`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import re
import shutil
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from absl import logging

from dltk_mm.errors import ConfigurationError
from dltk_mm.io.files import atomic_write_text
from dltk_mm.io.preprocessing import default_cache_dir
from dltk_mm.training.checkpointing import (
    BEST_DIR,
    CHECKPOINT_DIR,
    best_weights_prefix,
    checkpoint_step,
    latest_checkpoint,
)
from dltk_mm.training.config import TrainConfig

try:  # POSIX advisory locks; elsewhere the lock falls back to the PID check alone.
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

CONFIG_FILE = "config.json"
SPLIT_FILE = "split.csv"
DATA_FILE = "data.json"
HISTORY_FILE = "history.csv"
LOG_DIR = "logs"
LOCK_FILE = "dltk_mm.lock"
CACHE_SUBDIR = "cache"
PREVIOUS_PREFIX = "previous_"

#: Entries of a model folder that belong to no run (never moved aside, never a sign of a run).
_NOT_RUN_FILES = (CACHE_SUBDIR, LOCK_FILE)
#: What TensorFlow names the folder a checkpoint is written to before it is renamed into place.
_CHECKPOINT_TEMP = re.compile(r"^.+_temp(_[0-9a-f]+)?$")


# ---------------------------------------------------------------------------------------------
# Lock


@dataclasses.dataclass(frozen=True)
class LockHolder:
    """Who holds a :class:`FolderLock` (the lock file's contents)."""

    host: str
    pid: int
    started: str = ""
    command: str = ""

    def describe(self) -> str:
        """E.g. ``process 1234 on host gpu1 (since 2026-01-01T10:00:00: dltk-mm-train ...)``."""
        since = f" (since {self.started}: {self.command})" if self.started else ""
        return f"process {self.pid} on host {self.host}{since}"

    def is_running(self) -> bool | None:
        """Whether the process still runs: None when it is on another host (unknown)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def read_lock_holder(path: str | os.PathLike) -> LockHolder | None:
    """The holder written in a lock file, or None when the file is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return LockHolder(host=str(data["host"]), pid=int(data["pid"]),
                          started=str(data.get("started", "")),
                          command=str(data.get("command", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class FolderLock:
    """An exclusive lock on a folder for the life of a run (a context manager).

    The lock file (``<folder>/dltk_mm.lock``) holds the host, PID, start time and command of the
    holder. Exclusion is an advisory ``flock`` on that file, which the operating system releases
    when the holder exits in any way (SIGKILL included), so a lock left by a process that is gone
    is stale and taken over (with a warning naming the old holder). Without ``flock`` (not POSIX)
    a lock whose process no longer runs on this host is stale.

    Args:
        folder: the folder to lock (created if missing).
        purpose: what the folder is, for messages (``"model_dir"``, ``"results folder"``).

    Raises:
        ConfigurationError: from :meth:`acquire`, naming the holder, when another process (or
            another lock object of this process) holds the folder.
    """

    def __init__(self, folder: str | os.PathLike, purpose: str = "folder") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.purpose = purpose
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def _refuse(self, holder: LockHolder | None) -> ConfigurationError:
        who = holder.describe() if holder else "another process"
        return ConfigurationError(
            f"{self.purpose} {self.folder} is in use by {who}: only one run may use it at a "
            f"time; wait for that run to end or stop it, or choose another {self.purpose} (the "
            f"lock is {self.path}; remove it only if no such process runs)"
        )

    def acquire(self) -> FolderLock:
        """Takes the lock (at once or not at all) and writes this process into the lock file."""
        if self.held:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            previous = read_lock_holder(self.path)
            if not self._lock(fd, previous):
                os.close(fd)
                raise self._refuse(previous)
            try:  # the file may have been replaced between open and lock: lock the current one
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:  # pragma: no cover - only under a storm of competing processes
            raise self._refuse(read_lock_holder(self.path))
        if previous is not None and previous.pid != os.getpid():
            logging.warning("%s %s: taking over the stale lock of %s (no longer running)",
                            self.purpose, self.folder, previous.describe())
        self._write(fd)
        self._fd = fd
        return self

    @staticmethod
    def _lock(fd: int, previous: LockHolder | None) -> bool:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False
            except OSError as error:  # e.g. a file system without flock
                logging.warning("no flock on this file system (%s); using the PID check", error)
        return previous is None or previous.is_running() is False

    @staticmethod
    def _write(fd: int) -> None:
        holder = {
            "host": socket.gethostname(), "pid": os.getpid(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:500] if sys.argv
            else "",
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(holder) + "\n").encode("utf-8"))
        os.fsync(fd)

    def release(self) -> None:
        """Removes the lock file and releases the lock (idempotent)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


# ---------------------------------------------------------------------------------------------
# Resume rules and preparation


def has_training_state(model_dir: str | os.PathLike) -> bool:
    """Whether the folder holds a checkpoint or best weights."""
    return latest_checkpoint(model_dir) is not None or best_weights_prefix(model_dir) is not None


def _run_entries(model_dir: Path) -> list[Path]:
    if not model_dir.is_dir():
        return []
    return sorted(e for e in model_dir.iterdir()
                  if not e.name.startswith(PREVIOUS_PREFIX) and e.name not in _NOT_RUN_FILES)


def move_aside(model_dir: str | os.PathLike, entries: Sequence[Path]) -> Path:
    """Moves ``entries`` of ``model_dir`` into a new ``model_dir/previous_<time>/``."""
    model_dir = Path(model_dir)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = model_dir / f"{PREVIOUS_PREFIX}{stamp}"
    suffix = 1
    while target.exists():
        target = model_dir / f"{PREVIOUS_PREFIX}{stamp}_{suffix}"
        suffix += 1
    target.mkdir()
    for entry in entries:
        os.replace(entry, target / entry.name)
    logging.info("restart: moved the previous run's files to %s", target)
    return target


def _describe(differences: Mapping[str, tuple[Any, Any]]) -> str:
    return "; ".join(f"{key}: {old!r} (saved) != {new!r} (now)"
                     for key, (old, new) in differences.items())


def _restart_hint(model_dir: Path) -> str:
    return (f"pass --restart to keep the old run in {model_dir}/{PREVIOUS_PREFIX}<time>/ and "
            "start over")


def check_model_dir(model_dir: str | os.PathLike, config: TrainConfig,
                    restart: bool = False) -> None:
    """Checks, writing nothing, that ``config`` may run in ``model_dir``.

    An empty or new folder is fine, and so is any folder with ``restart``. A folder holding a run
    may be resumed only with an equal configuration, except for the options in
    :data:`~dltk_mm.training.config.RESUMABLE_FIELDS`, and with ``steps`` not below the step its
    newest checkpoint reached.

    Raises:
        ConfigurationError: naming every differing option, the step reached, or when the folder
            is not a model folder.
    """
    model_dir = Path(model_dir)
    if model_dir.exists() and not model_dir.is_dir():
        raise ConfigurationError(f"model_dir {model_dir} exists and is not a folder")
    if restart or not _run_entries(model_dir):
        return
    if not (model_dir / CONFIG_FILE).is_file():
        raise ConfigurationError(
            f"model_dir {model_dir} is not empty and has no {CONFIG_FILE}, so it is not a "
            "dltk_mm model folder; choose a new or empty --model_dir, or pass --restart to move "
            f"its contents to {model_dir}/{PREVIOUS_PREFIX}<time>/"
        )
    saved = TrainConfig.load(model_dir / CONFIG_FILE)
    incompatible = saved.incompatible_differences(config)
    if incompatible and has_training_state(model_dir):
        raise ConfigurationError(
            f"model_dir {model_dir} holds a run with a different configuration: "
            f"{_describe(incompatible)}. Rerun with the saved options to resume, choose "
            f"another --model_dir, or {_restart_hint(model_dir)}"
        )
    prefix = latest_checkpoint(model_dir)
    reached = checkpoint_step(prefix) if prefix is not None else 0
    if reached > config.steps:
        raise ConfigurationError(
            f"model_dir {model_dir} is already trained to step {reached}, past steps="
            f"{config.steps}; nothing was changed. Pass --steps={reached} or more to resume it "
            f"(its weights are in {BEST_DIR}/ and {CHECKPOINT_DIR}/), or {_restart_hint(model_dir)}"
        )


def prepare_model_dir(
    model_dir: str | os.PathLike, config: TrainConfig, restart: bool = False
) -> Path | None:
    """Checks that ``config`` may run in ``model_dir`` (:func:`check_model_dir`) and writes
    ``config.json``.

    Nothing is ever deleted: with ``restart=True`` the previous run's files are moved to
    ``model_dir/previous_<time>/`` (the preprocessing cache ``model_dir/cache`` and the lock
    stay).

    Returns:
        The ``previous_<time>`` folder if files were moved aside, else None.

    Raises:
        ConfigurationError: see :func:`check_model_dir`.
    """
    model_dir = Path(model_dir)
    check_model_dir(model_dir, config, restart)
    entries = _run_entries(model_dir)
    moved = move_aside(model_dir, entries) if entries and restart else None
    config_path = model_dir / CONFIG_FILE
    if moved is None and config_path.is_file():
        saved = TrainConfig.load(config_path)
        incompatible = saved.incompatible_differences(config)
        if incompatible:
            logging.warning("model_dir %s has no checkpoint yet; replacing its configuration (%s)",
                            model_dir, _describe(incompatible))
        changed = {k: v for k, v in saved.differences(config).items() if k not in incompatible}
        if changed:
            logging.info("changed options (allowed when resuming): %s", _describe(changed))
    model_dir.mkdir(parents=True, exist_ok=True)
    config.save(config_path)
    return moved


def remove_stale_checkpoint_temps(model_dir: str | os.PathLike) -> list[Path]:
    """Removes the ``checkpoints/ckpt-<n>_temp*`` folders a checkpoint write killed half-way
    leaves (TensorFlow writes there, then renames the files into place).

    Call it only while holding the folder's :class:`FolderLock` (a running trainer's write would
    look the same).

    Returns:
        The removed paths.
    """
    directory = Path(model_dir) / CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    removed = []
    for entry in sorted(directory.iterdir()):
        if entry.is_dir() and _CHECKPOINT_TEMP.match(entry.name):
            shutil.rmtree(entry)
            removed.append(entry)
            logging.warning("removed %s, left by a checkpoint write that was interrupted", entry)
    return removed


def resolve_cache_dir(config: TrainConfig, model_dir: str | os.PathLike) -> Path:
    """The preprocessing cache: ``config.cache_dir``, else ``<manifest folder>/.dltk_mm_cache``
    when that folder is writable, else ``<model_dir>/cache``."""
    if config.cache_dir is not None:
        return Path(config.cache_dir).expanduser()
    candidate = default_cache_dir(config.manifest)
    try:
        candidate.mkdir(exist_ok=True)
        if os.access(candidate, os.W_OK):
            return candidate
    except OSError:
        pass
    return Path(model_dir) / CACHE_SUBDIR


# ---------------------------------------------------------------------------------------------
# Data fingerprint


def _file_stat(path: str) -> dict[str, int]:
    stat = os.stat(path)
    return {"size": int(stat.st_size), "mtime_ns": int(stat.st_mtime_ns)}


def data_fingerprint(manifest: str | os.PathLike, rows: Sequence[Mapping[str, Any]]
                     ) -> dict[str, Any]:
    """What a run trains and validates on: the manifest, its used rows and their files.

    Args:
        manifest: the manifest's path.
        rows: per volume ``subject_id``, ``modality``, ``image``, ``label``, ``fold``, ``role``.

    Returns:
        A JSON-serialisable dict: ``manifest``, ``rows`` and ``files`` (path -> size in bytes and
        modification time in ns).
    """
    keys = ("subject_id", "modality", "image", "label", "fold", "role")
    kept = [{k: (None if row.get(k) is None else (int(row[k]) if k == "fold" else str(row[k])))
             for k in keys} for row in rows]
    paths = sorted({r[k] for r in kept for k in ("image", "label") if r[k]})
    return {"manifest": str(manifest), "rows": kept,
            "files": {path: _file_stat(path) for path in paths}}


def _row_changes(saved: Sequence[Mapping[str, Any]], now: Sequence[Mapping[str, Any]]
                 ) -> list[str]:
    old = {(r["subject_id"], r["modality"]): r for r in saved}
    new = {(r["subject_id"], r["modality"]): r for r in now}
    changes = [f"row {s} ({m}) removed" for s, m in old.keys() - new.keys()]
    changes += [f"row {s} ({m}) added" for s, m in new.keys() - old.keys()]
    for key in sorted(old.keys() & new.keys()):
        for field in ("image", "label", "fold", "role"):
            if old[key].get(field) != new[key].get(field):
                changes.append(f"{key[0]} ({key[1]}) {field}: {old[key].get(field)!r} (then) "
                               f"!= {new[key].get(field)!r} (now)")
    return sorted(changes)


def data_changes(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two :func:`data_fingerprint` results."""
    changes = []
    if saved.get("manifest") != now.get("manifest"):
        changes.append(f"manifest {saved.get('manifest')} (then) != {now.get('manifest')} (now)")
    changes += _row_changes(saved.get("rows", []), now.get("rows", []))
    old_files, new_files = saved.get("files", {}), now.get("files", {})
    for path in sorted(old_files.keys() & new_files.keys()):
        before, after = old_files[path], new_files[path]
        if before.get("size") != after.get("size"):
            changes.append(f"{path} changed size ({before.get('size')} -> {after.get('size')} "
                           "bytes)")
        elif before.get("mtime_ns") != after.get("mtime_ns"):
            changes.append(f"{path} was modified since the run started")
    return changes


def check_data_fingerprint(model_dir: str | os.PathLike, fingerprint: Mapping[str, Any]) -> None:
    """Refuses to resume a run in ``model_dir`` on other data than it was started on.

    Only a folder with training state is checked; one whose run predates fingerprints is accepted
    (and gets one from :func:`write_data_fingerprint`).

    Raises:
        ConfigurationError: naming what changed (rows, split, files) and pointing to --restart.
    """
    model_dir = Path(model_dir)
    path = model_dir / DATA_FILE
    if not has_training_state(model_dir):
        return
    if not path.is_file():
        logging.info("%s has no %s (an older run): recording the current data", model_dir,
                     DATA_FILE)
        return
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"{path}: unreadable ({error}); {_restart_hint(model_dir)}"
                                 ) from error
    changes = data_changes(saved, fingerprint)
    if changes:
        shown = "; ".join(changes[:10]) + (f"; and {len(changes) - 10} more"
                                           if len(changes) > 10 else "")
        raise ConfigurationError(
            f"model_dir {model_dir} was trained on other data than the manifest gives now: "
            f"{shown}. Resuming would mix two data sets (and validation sets); restore the data "
            f"the run started on, or {_restart_hint(model_dir)}"
        )


def write_data_fingerprint(model_dir: str | os.PathLike, fingerprint: Mapping[str, Any]) -> Path:
    """Writes ``model_dir/data.json`` (atomically)."""
    return atomic_write_text(Path(model_dir) / DATA_FILE, json.dumps(fingerprint, indent=1) + "\n")
