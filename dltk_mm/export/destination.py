"""Where an export may be written, and what ``--overwrite`` may replace.

An export never replaces or lands inside anything a user made: :func:`check_export_destination`
refuses, before anything is written,

* a path inside a model folder (a folder holding the ``config.json`` that training writes), or a
  model folder itself: its contents (checkpoints, best weights, history) belong to training;
* an existing non-empty folder without ``overwrite``;
* with ``overwrite``, any folder that is not itself a dltk_mm export (no
  ``assets/dltk_mm_export.json`` beside ``saved_model.pb``), or one that holds anything besides
  an export's own files (``saved_model.pb``, ``fingerprint.pb``, ``variables/``, ``assets/``):
  a data folder (images, labels, a manifest) or a run's checkpoints are never deleted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dltk_mm.errors import ConfigurationError
from dltk_mm.export.metadata import is_saved_model_dir, metadata_path

#: The configuration file training writes in a model folder (``dltk_mm.training.model_dir``'s
#: ``CONFIG_FILE``; named here so that checking a destination does not import TensorFlow).
CONFIG_FILE = "config.json"
#: The top-level entries a SavedModel export consists of.
EXPORT_ENTRIES = frozenset({"saved_model.pb", "saved_model.pbtxt", "fingerprint.pb",
                            "variables", "assets"})
#: Keys every training ``config.json`` holds (how a model folder is recognised).
_TRAINING_CONFIG_KEYS = ("scheme", "preprocessing")


def is_model_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a training ``config.json`` (a folder written by dltk-mm-train).

    A ``config.json`` that cannot be read counts as training's (a damaged run is still a run);
    only a readable one without the training keys (another tool's file) does not.
    """
    config = Path(path) / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return True
    return isinstance(data, dict) and all(key in data for key in _TRAINING_CONFIG_KEYS)


def enclosing_model_folder(path: str | os.PathLike) -> Path | None:
    """``path`` itself or the nearest of its parent folders that is a model folder, or None."""
    resolved = Path(path).expanduser().resolve()
    for folder in (resolved, *resolved.parents):
        if is_model_folder(folder):
            return folder
    return None


def _foreign_entries(export_dir: Path) -> list[str]:
    return sorted(entry.name for entry in export_dir.iterdir()
                  if entry.name not in EXPORT_ENTRIES)


def _check_replaceable(export_dir: Path) -> None:
    if not (is_saved_model_dir(export_dir) and metadata_path(export_dir).is_file()):
        raise ConfigurationError(
            f"{export_dir}: --overwrite only replaces a dltk_mm export (a SavedModel with "
            f"assets/dltk_mm_export.json), and this folder is not one; nothing was deleted. "
            "Choose a new or empty --export_dir"
        )
    foreign = _foreign_entries(export_dir)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise ConfigurationError(
            f"{export_dir}: holds files that are not part of an export ({shown}), which "
            "--overwrite would delete; nothing was deleted. Move them out or choose another "
            "--export_dir"
        )


def check_export_destination(export_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Checks that an export may be written at ``export_dir`` (see the module docstring).

    Args:
        export_dir: the destination folder.
        overwrite: allow replacing an existing dltk_mm export there.

    Returns:
        ``export_dir`` (user home expanded).

    Raises:
        ConfigurationError: naming the folder and why it is refused.
    """
    export_dir = Path(export_dir).expanduser()
    model_folder = enclosing_model_folder(export_dir)
    if model_folder is not None:
        where = ("is" if model_folder == export_dir.resolve()
                 else f"is inside the model folder {model_folder}, so it would be")
        raise ConfigurationError(
            f"{export_dir}: {where} a training run's folder (it holds {CONFIG_FILE}), whose "
            "contents belong to training; choose an --export_dir outside it (e.g. export/<run>)"
        )
    if not export_dir.exists():
        return export_dir
    if not export_dir.is_dir():
        raise ConfigurationError(f"{export_dir}: exists and is not a folder; choose another path")
    if not any(export_dir.iterdir()):
        return export_dir
    if not overwrite:
        raise ConfigurationError(
            f"{export_dir}: already exists and is not empty; pass overwrite=True (--overwrite) to "
            "replace an earlier export there, or choose another folder"
        )
    _check_replaceable(export_dir)
    return export_dir
