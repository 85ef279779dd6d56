"""Label presets: map a data set's label ids onto the project's label map.

Project map (:mod:`dltk_mm.core.label_map`): 0 background, 1 liver, 2 spleen, 3 right kidney,
4 left kidney ("right" is the patient's right).

A preset knows every id its data set uses; ids of organs the project does not segment map to
background, and an id outside the data set's known set is an error (a sign that the wrong preset
was chosen) unless ``allow_unknown=True``.

A preset is given by name (:data:`PRESETS`) or as a small file the user can write (see
docs/datasets.md): a JSON file ``{"name": ..., "description": ..., "labels": {"<id>": "<organ>"}}``
or a CSV file with the columns ``id,label``, each id of the data set mapped to a project organ
name (``liver``, ``spleen``, ``right_kidney``, ``left_kidney``), its project id, or
``background``; any other name stands for an organ the project does not segment (background).
Ids the file does not list are unknown ids (an error).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from absl import logging

from dltk_mm.core.label_map import LABEL_NAMES, NUM_CLASSES
from dltk_mm.errors import ConfigurationError, InputDataError
from dltk_mm.io.files import atomic_write_text

__all__ = [
    "LABEL_NAMES",
    "NUM_CLASSES",
    "PRESETS",
    "PRESET_FILE_SUFFIXES",
    "LabelPreset",
    "get_preset",
    "is_preset_file",
    "load_preset_file",
    "map_labels",
    "organ_id_from_name",
    "preset_from_label_names",
    "preset_problem",
    "resolve_preset_reference",
    "write_preset_file",
]

#: File endings of preset files (everything else is a preset name).
PRESET_FILE_SUFFIXES = (".json", ".csv")


@dataclasses.dataclass(frozen=True)
class LabelPreset:
    """How a data set's label ids map to the project map.

    Attributes:
        name: preset name.
        mapping: data-set id -> project id, for the ids that map to an organ.
        valid_ids: every id the data set uses (organ ids not in ``mapping`` go to background).
        description: where the ids come from.
    """

    name: str
    mapping: Mapping[int, int]
    valid_ids: frozenset[int]
    description: str = ""

    def apply(self, array: np.ndarray, source: str = "<array>",
              allow_unknown: bool = False) -> np.ndarray:
        """Maps a label array to the project map.

        Args:
            array: the data set's labels (any integer-valued dtype).
            source: the file name, used in error messages.
            allow_unknown: map unknown ids to background (with a warning) instead of failing.

        Returns:
            uint8 array of project labels, same shape.

        Raises:
            InputDataError: for non-integer values or ids the preset does not know.
        """
        values = np.unique(array)
        if np.issubdtype(values.dtype, np.floating) and (
                not np.all(np.isfinite(values)) or np.any(values != np.round(values))):
            raise InputDataError(
                f"{source}: label volume holds non-integer values (e.g. "
                f"{values[values != np.round(values)][:5].tolist()}); a label map must hold "
                "integer ids: check that the label column points to a segmentation, not an image"
            )
        values = values.astype(np.int64)
        unknown = sorted(int(v) for v in values if int(v) not in self.valid_ids)
        if unknown:
            shown = unknown[:20]
            message = (f"{source}: label values {shown}{' ...' if len(unknown) > 20 else ''} are "
                       f"not ids of the '{self.name}' preset ({self.description}; valid ids "
                       f"{_ids_text(self.valid_ids)})")
            if not allow_unknown:
                raise InputDataError(message + "; choose the matching label preset, or allow "
                                     "unknown labels to map them to background")
            logging.warning("%s; mapping them to background", message)
        ids = np.asarray(array)
        result = np.zeros(ids.shape, dtype=np.uint8)
        for source_id, project_id in self.mapping.items():
            if project_id:
                result[ids == source_id] = project_id
        return result

    def organs(self) -> tuple[str, ...]:
        """Names of the project organs this preset's labels annotate (project id order)."""
        ids = sorted({int(v) for v in self.mapping.values() if v})
        return tuple(LABEL_NAMES[i] for i in ids)

    def inverse(self) -> dict[int, int]:
        """Project id -> the data set's id for that organ (background -> 0)."""
        inverse = {0: 0}
        for source_id, project_id in sorted(self.mapping.items()):
            inverse.setdefault(project_id, source_id)
        return inverse


def _ids_text(ids: frozenset[int]) -> str:
    ordered = sorted(ids)
    if ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}..{ordered[-1]}"
    return str(ordered)


PRESETS: dict[str, LabelPreset] = {
    "identity": LabelPreset(
        "identity", {0: 0, 1: 1, 2: 2, 3: 3, 4: 4}, frozenset(range(5)),
        "already in the project map: 0 bg, 1 liver, 2 spleen, 3 right kidney, 4 left kidney"),
    "btcv": LabelPreset(
        "btcv", {1: 2, 2: 3, 3: 4, 6: 1}, frozenset(range(14)),
        "BTCV: 1 spleen, 2 right kidney, 3 left kidney, 6 liver; 4, 5, 7-13 other organs"),
    "amos": LabelPreset(
        "amos", {1: 2, 2: 3, 3: 4, 6: 1}, frozenset(range(16)),
        "AMOS22: 1 spleen, 2 right kidney, 3 left kidney, 6 liver; 4, 5, 7-15 other organs"),
    "chaos": LabelPreset(
        "chaos", {63: 1, 126: 3, 189: 4, 252: 2}, frozenset({0, 63, 126, 189, 252}),
        "CHAOS MR grey values: 63 liver, 126 right kidney, 189 left kidney, 252 spleen"),
    "chaos_ct": LabelPreset(
        "chaos_ct", {value: 1 for value in range(1, 256)}, frozenset(range(256)),
        "CHAOS CT liver masks: any non-zero grey value is liver (CHAOS CT has no spleen or "
        "kidney labels)"),
    "totalsegmentator": LabelPreset(
        "totalsegmentator", {1: 2, 2: 3, 3: 4, 5: 1}, frozenset(range(118)),
        "TotalSegmentator v2 'total': 1 spleen, 2 kidney_right, 3 kidney_left, 5 liver; "
        "other classes up to 117"),
}


def get_preset(name: str) -> LabelPreset:
    """The preset called ``name``, or the one stored in the preset file ``name``.

    Args:
        name: a preset name of :data:`PRESETS` (any case), or the path of a ``.json`` / ``.csv``
            preset file (see the module docstring).

    Raises:
        ConfigurationError: for an unknown name (the message lists the known ones).
        InputDataError: for a preset file that is missing or malformed (naming the file).
    """
    if is_preset_file(name):
        return load_preset_file(name)
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise ConfigurationError(
            f"unknown label preset {name!r}; choose one of {sorted(PRESETS)} or give a .json/.csv "
            "preset file (see docs/datasets.md)"
        ) from None


def is_preset_file(value: str | os.PathLike) -> bool:
    """Whether a preset reference names a file (it ends in .json or .csv) rather than a preset."""
    return str(value).strip().lower().endswith(PRESET_FILE_SUFFIXES)


def resolve_preset_reference(value: str, base: str | os.PathLike) -> str:
    """A preset reference made independent of the working folder.

    Args:
        value: a preset name or preset file path (e.g. a manifest's ``label_preset`` cell).
        base: the folder relative file paths are relative to (a manifest's folder).

    Returns:
        For a file, its absolute path (case kept); for a name, the lower-case name.
    """
    text = str(value).strip()
    if not is_preset_file(text):
        return text.lower()
    path = Path(os.path.expanduser(text))
    return str(path if path.is_absolute() else (Path(base) / path).resolve())


def preset_problem(value: str) -> str | None:
    """None when ``value`` names a usable preset (name or file), else the reason it is not."""
    try:
        get_preset(value)
    except (ConfigurationError, InputDataError) as error:
        return str(error)
    return None


def organ_id_from_name(name: str) -> int | None:
    """The project id of a label name as data sets spell it, None for any other structure.

    Understands e.g. ``liver``, ``Spleen``, ``right_kidney``, ``kidney_right``, ``Kidney (R)``,
    ``kidney R``, ``left kidney``, ``Kidney_L``; a name with any other word (``liver tumour``,
    ``kidney cyst``) or a kidney without its side (``kidney``) is not an organ of the project map.
    """
    words = [w for w in re.split(r"[^a-z]+", name.lower()) if w]
    if words == ["liver"]:
        return LABEL_NAMES.index("liver")
    if words == ["spleen"]:
        return LABEL_NAMES.index("spleen")
    if len(words) == 2 and "kidney" in words:
        side = words[1] if words[0] == "kidney" else words[0]
        if side in ("right", "r"):
            return LABEL_NAMES.index("right_kidney")
        if side in ("left", "l"):
            return LABEL_NAMES.index("left_kidney")
    if len(words) == 1 and words[0] in ("rk", "lk", "rkidney", "lkidney"):
        return LABEL_NAMES.index("right_kidney" if words[0].startswith("r") else "left_kidney")
    return None


def preset_from_label_names(labels: Mapping[int, str], name: str, description: str = ""
                            ) -> tuple[LabelPreset, tuple[str, ...]]:
    """Derives a preset from a data set's label names (e.g. a ``dataset.json``'s ``labels``).

    Args:
        labels: data-set id -> label name; every id becomes a valid id.
        name: the preset's name.
        description: where the names come from.

    Returns:
        The preset (the four organs recognised by :func:`organ_id_from_name`, everything else
        background) and the names of the project organs the data set does not label.

    Raises:
        InputDataError: if two labels name the same organ (the map would be ambiguous).
    """
    mapping: dict[int, int] = {}
    claimed: dict[int, str] = {}
    for source_id, label_name in sorted(labels.items()):
        organ = organ_id_from_name(str(label_name))
        if not organ:
            continue
        if organ in claimed:
            raise InputDataError(
                f"{name}: labels {claimed[organ]!r} and {label_name!r} both name the "
                f"{LABEL_NAMES[organ]}; write a preset file mapping the ids yourself "
                "(see docs/datasets.md) and pass it as --label_preset")
        claimed[organ] = str(label_name)
        mapping[int(source_id)] = organ
    ids = frozenset(int(i) for i in labels) | {0}
    missing = tuple(LABEL_NAMES[i] for i in range(1, NUM_CLASSES) if i not in claimed)
    return LabelPreset(name, mapping, ids, description), missing


def _project_id(value: object, source: str, key: object) -> int:
    """Project id of a preset file's entry: an organ name, ``background``, other name -> 0."""
    if isinstance(value, bool):
        value = str(value)
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        number = int(value)
        if not 0 <= number < NUM_CLASSES:
            raise InputDataError(
                f"{source}: id {key} maps to project id {number}; project ids are 0..."
                f"{NUM_CLASSES - 1} ({', '.join(LABEL_NAMES)}); fix the entry")
        return number
    text = str(value).strip().lower()
    return LABEL_NAMES.index(text) if text in LABEL_NAMES else 0


def _preset_from_entries(entries: Mapping[object, object], path: Path, name: str,
                         description: str) -> LabelPreset:
    mapping: dict[int, int] = {}
    for key, value in entries.items():
        try:
            source_id = int(str(key).strip())
        except ValueError:
            raise InputDataError(
                f"{path}: label id {key!r} is not an integer; list the data set's integer ids "
                "(e.g. \"6\": \"liver\")") from None
        project = _project_id(value, str(path), key)
        if project:
            mapping[source_id] = project
    if not entries:
        raise InputDataError(f"{path}: lists no label ids; map every id of the data set to an "
                             "organ (see docs/datasets.md)")
    valid = frozenset(int(str(k).strip()) for k in entries) | {0}
    return LabelPreset(name, mapping, valid, description or f"preset file {path}")


def load_preset_file(path: str | os.PathLike) -> LabelPreset:
    """Reads a preset file (JSON or CSV, see the module docstring).

    Raises:
        InputDataError: if the file is missing, cannot be parsed, or holds a bad entry (naming
            the file and the fix).
    """
    path = Path(os.path.expanduser(str(path).strip()))
    if not path.is_file():
        raise InputDataError(f"label preset file {path}: not found; check the path (in a "
                             "manifest it is relative to the manifest's folder)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputDataError(f"label preset file {path}: cannot be read ({error})") from error
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputDataError(f"label preset file {path}: not valid JSON ({error})") from error
        if not isinstance(data, dict) or not isinstance(data.get("labels"), dict):
            raise InputDataError(
                f"label preset file {path}: needs an object with a \"labels\" object mapping "
                "each data-set id to an organ, e.g. {\"labels\": {\"0\": \"background\", "
                "\"1\": \"liver\"}}")
        return _preset_from_entries(data["labels"], path, str(data.get("name") or path.stem),
                                    str(data.get("description") or ""))
    rows = list(csv.DictReader(io.StringIO(text)))
    header = [c.strip().lower() for c in (rows[0].keys() if rows else [])]
    if "id" not in header or "label" not in header:
        raise InputDataError(f"label preset file {path}: needs a header line 'id,label' and one "
                             "row per data-set id (e.g. '6,liver')")
    entries = {}
    for row in rows:
        cells = {str(k).strip().lower(): str(v or "").strip() for k, v in row.items()}
        entries[cells["id"]] = cells["label"]
    return _preset_from_entries(entries, path, path.stem, "")


def write_preset_file(preset: LabelPreset, path: str | os.PathLike,
                      source_labels: Mapping[int, str] | None = None) -> Path:
    """Writes ``preset`` as a JSON preset file (atomically); :func:`load_preset_file` reads it.

    Args:
        preset: the preset.
        path: the ``.json`` file.
        source_labels: the data set's own label names (kept in the file for the reader).

    Returns:
        The written path.
    """
    labels = {}
    for source_id in sorted(preset.valid_ids):
        project = int(preset.mapping.get(source_id, 0))
        if project:
            labels[str(source_id)] = LABEL_NAMES[project]
        else:
            original = (source_labels or {}).get(source_id)
            labels[str(source_id)] = ("background" if source_id == 0 or not original
                                      else f"other: {original}")
    content = {"name": preset.name, "description": preset.description, "labels": labels}
    if source_labels:
        content["source_labels"] = {str(k): str(v) for k, v in sorted(source_labels.items())}
    return atomic_write_text(Path(path), json.dumps(content, indent=2) + "\n")


def map_labels(array: np.ndarray, preset: str | LabelPreset = "identity",
               source: str = "<array>", allow_unknown: bool = False) -> np.ndarray:
    """Maps a label array to the project map with a preset (see :meth:`LabelPreset.apply`)."""
    if isinstance(preset, str):
        preset = get_preset(preset)
    return preset.apply(array, source=source, allow_unknown=allow_unknown)
