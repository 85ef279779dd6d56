"""What ``dltk-mm-predict`` segments: volumes with their modality and subject id, checked early.

Inputs are volume files or DICOM series folders given one by one (:func:`inputs_from_paths`) or
the rows of a manifest CSV (:func:`inputs_from_manifest`). :func:`manifest_files` lists every file
a manifest names (images and labels, all rows), which prediction never writes over, and
:func:`check_inputs` reads every input in full before the first output is written, so that a
truncated file or NaN/Inf voxels stop a run before it has written anything.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
from absl import logging

from dltk_mm.errors import ConfigurationError, InputDataError
from dltk_mm.io.manifest import load_manifest
from dltk_mm.io.readers import read_image

#: suffixes stripped from an input file name to get its subject id
_VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".dcm")
#: problems listed in one error at most
_SHOWN_PROBLEMS = 50


@dataclasses.dataclass(frozen=True)
class PredictionInput:
    """One volume to segment.

    Attributes:
        subject_id: names the output ``<subject_id>.nii.gz``.
        modality: lower-case modality.
        image: a volume file or a DICOM series folder.
        label: the manifest's label file of this volume, if any (never read; never written over).
    """

    subject_id: str
    modality: str
    image: Path
    label: Path | None = None


def subject_id_from_path(path: str | os.PathLike) -> str:
    """The file name without its volume suffix (``case1.nii.gz`` -> ``case1``); a folder's name."""
    path = Path(path)
    name = path.name
    if path.is_dir():
        return name
    lower = name.lower()
    for suffix in _VOLUME_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return path.stem or name


def inputs_from_paths(paths: Sequence[str | os.PathLike], modalities: Sequence[str] | str,
                      subject_ids: Sequence[str] | None = None) -> list[PredictionInput]:
    """Prediction inputs from files / DICOM folders with their modality.

    Args:
        paths: volume files or DICOM series folders.
        modalities: one modality for all, or one per path.
        subject_ids: optional ids, one per path (default: the file names without suffix).

    Raises:
        InputDataError: a missing input.
        ConfigurationError: mismatched list lengths.
    """
    paths = [Path(p).expanduser() for p in paths]
    if isinstance(modalities, str):
        modalities = [modalities] * len(paths)
    modalities = [str(m).strip().lower() for m in modalities]
    if len(modalities) == 1 and len(paths) > 1:
        modalities = modalities * len(paths)
    if len(modalities) != len(paths):
        raise ConfigurationError(
            f"got {len(paths)} input(s) but {len(modalities)} modalities; give one modality for "
            "all inputs or one per input, in the same order"
        )
    if subject_ids is not None and len(subject_ids) != len(paths):
        raise ConfigurationError(
            f"got {len(paths)} input(s) but {len(subject_ids)} subject ids; give one per input")
    inputs = []
    for position, (path, modality) in enumerate(zip(paths, modalities, strict=True)):
        if not path.exists():
            raise InputDataError(f"{path}: input not found; check the path")
        subject = subject_ids[position] if subject_ids is not None else subject_id_from_path(path)
        inputs.append(PredictionInput(str(subject), modality, path))
    return inputs


def _load(manifest: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    if isinstance(manifest, pd.DataFrame):
        return manifest
    return load_manifest(manifest, check_grids=False)


def inputs_from_manifest(manifest: str | os.PathLike | pd.DataFrame,
                         modality: str | None = None) -> list[PredictionInput]:
    """Prediction inputs from a manifest CSV (labels are recorded, to protect them, not read).

    Args:
        manifest: a CSV path (validated with :func:`~dltk_mm.io.manifest.load_manifest`) or a
            loaded manifest.
        modality: keep only the rows of this modality.
    """
    frame = _load(manifest)
    inputs = []
    for record in frame.to_dict("records"):
        label = record.get("label")
        inputs.append(PredictionInput(
            str(record["subject_id"]), str(record["modality"]).lower(), Path(record["image"]),
            Path(label) if isinstance(label, str) and label else None))
    if modality is not None:
        inputs = [i for i in inputs if i.modality == modality.strip().lower()]
        if not inputs:
            raise InputDataError(f"manifest {manifest}: no row has modality {modality!r}")
    return inputs


def manifest_files(manifest: str | os.PathLike | pd.DataFrame) -> frozenset[Path]:
    """Every file a manifest names (images and labels of all rows) and the CSV itself, resolved.

    Prediction never writes over any of them, whichever rows it predicts.
    """
    frame = _load(manifest)
    files = {Path(value).resolve() for column in ("image", "label") if column in frame
             for value in frame[column] if isinstance(value, str) and value}
    csv_path = frame.attrs.get("manifest_path") or (
        None if isinstance(manifest, pd.DataFrame) else manifest)
    if csv_path:
        files.add(Path(csv_path).resolve())
    return frozenset(files)


def check_inputs(inputs: Sequence[PredictionInput],
                 on_checked: Callable[[int, int], None] | None = None) -> None:
    """Reads every input in full and raises one error listing all that cannot be predicted.

    Each volume is read as :func:`~dltk_mm.io.readers.read_image` reads it (a truncated NIfTI,
    an unreadable header, a volume that is not 3-D, NaN or infinite voxels are refused), one at a
    time, so the memory of one volume is needed.

    Args:
        inputs: the volumes.
        on_checked: called as ``on_checked(done, total)`` after each volume.

    Raises:
        InputDataError: naming every bad input and the fix, before anything is written.
    """
    problems = []
    for index, item in enumerate(inputs, start=1):
        try:
            read_image(item.image, check_values=True)
        except InputDataError as error:
            problems.append(f"{item.subject_id} ({item.modality}): {error}")
        if on_checked is not None:
            on_checked(index, len(inputs))
    if problems:
        shown = problems[:_SHOWN_PROBLEMS]
        more = len(problems) - len(shown)
        raise InputDataError(
            f"{len(problems)} of {len(inputs)} input(s) cannot be predicted (nothing was "
            "written):\n  " + "\n  ".join(shown) + (f"\n  ... and {more} more" if more else ""))
    logging.info("checked %d input volume(s)", len(inputs))


__all__ = [
    "PredictionInput",
    "check_inputs",
    "inputs_from_manifest",
    "inputs_from_paths",
    "manifest_files",
    "subject_id_from_path",
]
