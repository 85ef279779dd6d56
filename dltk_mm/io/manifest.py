"""Manifests: CSV files listing the volumes of a data set.

Columns: ``subject_id, modality, image, label`` (``label`` optional, may be empty for prediction);
optional ``label_preset``: the label preset of that row's label file (e.g. ``btcv`` for BTCV CT
rows and ``chaos`` for CHAOS MR rows in one manifest), overriding the preprocessing configuration's
``label_preset`` where it is not empty (see :func:`row_label_preset`); extra columns (e.g.
``fold``) are kept. Relative paths are relative to the CSV's folder; absolute
paths are allowed. :func:`load_manifest` validates everything up front and raises one
:class:`~dltk_mm.errors.InputDataError` listing every bad row (CSV line number and subject) with the
fix.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from dltk_mm.errors import InputDataError
from dltk_mm.io.files import atomic_write
from dltk_mm.io.labels import preset_problem, resolve_preset_reference
from dltk_mm.io.readers import read_geometry

REQUIRED_COLUMNS = ("subject_id", "modality", "image")
OPTIONAL_COLUMNS = ("label", "label_preset")
LABEL_PRESET_COLUMN = "label_preset"


def _resolve(value: str, base: Path) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else (base / path)


def _record_lines(csv_path: Path, rows: int) -> list[int]:
    """The file line on which each data row starts (blank lines and multi-line quoted cells
    counted as pandas reads them); ``position + 2`` where the file cannot be read that way."""
    fallback = [position + 2 for position in range(rows)]
    try:
        with csv_path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            starts: list[int] = []
            previous_end = 0
            for record in reader:
                start, previous_end = previous_end + 1, reader.line_num
                if record:
                    starts.append(start)
    except (OSError, UnicodeDecodeError, csv.Error):
        return fallback
    starts = starts[1:]  # the header
    return starts if len(starts) == rows else fallback


def _read_frame(csv_path: Path) -> pd.DataFrame:
    """The manifest table, column names stripped; it must have the required columns and a row."""
    if not csv_path.is_file():
        raise InputDataError(f"manifest {csv_path}: file not found; check the --manifest path")
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InputDataError(
            f"manifest {csv_path}: cannot be parsed as CSV ({error}); it needs a header line "
            f"with the columns {', '.join(REQUIRED_COLUMNS)}[, label] and one row per volume"
        ) from error
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InputDataError(
            f"manifest {csv_path}: missing column(s) {missing} (found {list(frame.columns)}); the "
            f"header must name the columns {', '.join(REQUIRED_COLUMNS)} and optionally label"
        )
    if frame.empty:
        raise InputDataError(f"manifest {csv_path}: has no rows; list one volume per row")
    if "label" not in frame.columns:
        frame["label"] = ""
    return frame


def _file_problems(where: str, image_path: Path | None, label_path: Path | None, base: Path,
                   check_grids: bool, grid_tolerance: float) -> list[str]:
    """What is wrong with a row's files: missing, unreadable header, label on another grid."""
    problems: list[str] = []
    geometries = {}
    for kind, file_path in (("image", image_path), ("label", label_path)):
        if file_path is None:
            continue
        if not file_path.exists():
            problems.append(f"{where}: {kind} file {file_path} not found; fix the path "
                            f"(relative paths are relative to {base})")
            continue
        try:
            geometries[kind] = read_geometry(file_path)
        except InputDataError as error:
            problems.append(f"{where}: {kind} {error}")
    if check_grids and len(geometries) == 2:
        differences = geometries["image"].grid_differences(geometries["label"], grid_tolerance)
        if differences:
            problems.append(
                f"{where}: image {image_path} and label {label_path} are on different grids "
                f"({'; '.join(differences)}); resample the label onto the image grid (nearest "
                "neighbour) or pair the right files"
            )
    return problems


def _row_problems(where: str, subject: str, modality: str, image_path: Path | None,
                  allowed: set[str] | None) -> list[str]:
    """What is wrong with a row's own cells (subject id, modality, image path)."""
    problems = []
    if not subject:
        problems.append(f"{where}: empty subject_id; give every row a subject id")
    if not modality:
        problems.append(f"{where}: empty modality; use e.g. 'ct' or 'mr'")
    elif allowed is not None and modality not in allowed:
        problems.append(f"{where}: unknown modality '{modality}'; allowed modalities are "
                        f"{sorted(allowed)} (fix the modality or the allowed list)")
    if image_path is None:
        problems.append(f"{where}: empty image path; give the image file of this volume")
    return problems


def load_manifest(path: str | os.PathLike, modalities: Sequence[str] | None = None,
                  require_labels: bool = False, check_files: bool = True,
                  check_grids: bool = True, grid_tolerance: float = 1e-3) -> pd.DataFrame:
    """Reads and validates a manifest CSV.

    Args:
        path: the CSV file.
        modalities: allowed modalities (lower-case); None allows any.
        require_labels: every row must have a label (training / evaluation).
        check_files: check that every image/label exists and its header can be read.
        check_grids: check that each label lies on its image's grid (needs ``check_files``).
        grid_tolerance: relative tolerance of the grid check (see ``Geometry.grid_differences``).

    Returns:
        DataFrame with columns subject_id, modality (lower-case), image and label as absolute path
        strings (label None where absent), label_preset (a lower-case preset name or the absolute
        path of a preset file, None where empty; only if the CSV has that column), plus the CSV's
        extra columns.

    Raises:
        InputDataError: naming the CSV, each bad row (line number, subject) and the fix.
    """
    csv_path = Path(path).expanduser().resolve()
    frame = _read_frame(csv_path)
    allowed = None if modalities is None else {m.lower() for m in modalities}
    base = csv_path.parent
    problems: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    columns: dict[str, list] = {"modality": [], "image": [], "label": [], "preset": []}
    for line, record in zip(_record_lines(csv_path, len(frame)), frame.to_dict("records"),
                            strict=True):
        subject = str(record["subject_id"]).strip()
        modality = str(record["modality"]).strip().lower()
        image_text = str(record["image"]).strip()
        label_text = str(record.get("label", "")).strip()
        where = f"line {line} (subject {subject or '?'!s})"
        image_path = _resolve(image_text, base) if image_text else None
        label_path = _resolve(label_text, base) if label_text else None
        preset = _preset_reference(record.get(LABEL_PRESET_COLUMN), base)
        columns["modality"].append(modality)
        columns["image"].append(str(image_path) if image_path else "")
        columns["label"].append(str(label_path) if label_path else None)
        columns["preset"].append(preset)
        problems += _row_problems(where, subject, modality, image_path, allowed)
        key = (subject, modality)
        if subject and key in seen:
            problems.append(f"{where}: duplicate subject '{subject}' with modality '{modality}' "
                            f"(also on line {seen[key]}); give each volume a unique subject id or "
                            "remove the duplicate row")
        else:
            seen[key] = line
        if preset is not None and (problem := preset_problem(preset)):
            problems.append(f"{where}: {problem}")
        if require_labels and label_path is None:
            problems.append(f"{where}: no label; training and evaluation need a label file for "
                            "every row (fill the label column)")
        if check_files:
            problems += _file_problems(where, image_path, label_path, base, check_grids,
                                       grid_tolerance)
    if problems:
        shown = problems[:50]
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise InputDataError(f"manifest {csv_path}: {len(problems)} problem(s):\n  "
                             + "\n  ".join(shown) + more)
    frame["subject_id"] = frame["subject_id"].str.strip()
    frame["modality"] = columns["modality"]
    frame["image"] = columns["image"]
    frame["label"] = pd.Series(columns["label"], dtype=object, index=frame.index)
    if LABEL_PRESET_COLUMN in frame.columns:
        frame[LABEL_PRESET_COLUMN] = pd.Series(columns["preset"], dtype=object, index=frame.index)
    frame.attrs["manifest_path"] = str(csv_path)
    return frame


def row_label_preset(record: Mapping[str, object], default: str) -> str:
    """The label preset of one manifest row: its ``label_preset`` column, else ``default``.

    Args:
        record: one manifest row (a ``DataFrame.to_dict("records")`` entry; a preset file in it
            is an absolute path after :func:`load_manifest`).
        default: the preset of the preprocessing configuration.

    Returns:
        The lower-case preset name, or the preset file's path.

    Raises:
        InputDataError: an unusable preset in the row (naming the subject and why).
    """
    preset = _preset_reference(record.get(LABEL_PRESET_COLUMN), Path.cwd())
    if preset is None:
        return default
    problem = preset_problem(preset)
    if problem:
        raise InputDataError(
            f"manifest row of subject {record.get('subject_id', '?')} "
            f"({record.get('modality', '?')}): {problem}"
        )
    return preset


def _preset_reference(value: object, base: Path) -> str | None:
    """A ``label_preset`` cell: a lower-case name or an absolute preset file path; None if empty."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or not str(value).strip():
        return None
    return resolve_preset_reference(str(value), base)


def write_manifest(frame: pd.DataFrame, path: str | os.PathLike, relative: bool = True) -> Path:
    """Writes a manifest CSV (atomically), with paths relative to its folder where possible.

    Args:
        frame: rows with at least subject_id, modality, image (label optional).
        path: output CSV.
        relative: write image/label paths relative to the CSV's folder.

    Returns:
        The written path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = frame.copy()
    if relative:
        base = path.parent.resolve()
        for column in ("image", "label"):
            if column in out.columns:
                out[column] = [_relative(v, base) for v in out[column]]
    return atomic_write(path, lambda target: out.to_csv(target, index=False))


def _relative(value: object, base: Path) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value == "":
        return ""
    candidate = Path(str(value))
    if not candidate.is_absolute():
        return str(candidate)
    try:
        return candidate.resolve().relative_to(base).as_posix()
    except ValueError:
        return str(candidate)
