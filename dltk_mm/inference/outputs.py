"""Where predictions are written, checked before anything is predicted.

``<output_dir>/<subject_id>.nii.gz`` (uint8 labels) and, if asked,
``<output_dir>/probabilities/<subject_id>.nii.gz`` (a 4-D float32 NIfTI of class probabilities).
:func:`plan_outputs` refuses, whatever the flags (``overwrite`` included), any output that is an
input volume, lies inside a DICOM input folder, or is a file a manifest names (its images and
labels: the usual ``labels/<subject_id>.nii.gz`` layout has exactly the output names); an existing
output is replaced only with ``overwrite``, or skipped with ``skip_existing`` (an interrupted
prediction continues where it stopped).
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from dltk_mm.errors import ConfigurationError
from dltk_mm.inference.inputs import PredictionInput
from dltk_mm.io.files import atomic_write


@dataclasses.dataclass(frozen=True)
class PlannedOutput:
    """Where the prediction of one input goes.

    Attributes:
        input: the input.
        labels: the label map file.
        probabilities: the probability map file, or None.
        skip: every output already exists and ``skip_existing`` was asked: nothing is predicted.
    """

    input: PredictionInput
    labels: Path
    probabilities: Path | None
    skip: bool = False


def _file_key(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


class _Protected:
    """The files no output may replace: resolved paths and (device, inode) of existing files."""

    def __init__(self, inputs: Sequence[PredictionInput], extra: Iterable[Path]) -> None:
        self.reasons: dict[Path, str] = {}
        for path in extra:
            self.reasons[Path(path).resolve()] = "is a file the manifest names"
        for item in inputs:
            if item.label is not None:
                self.reasons[item.label.resolve()] = f"is the label of subject {item.subject_id}"
            self.reasons[item.image.resolve()] = "is an input volume"
        self.keys = {key: reason for path, reason in self.reasons.items()
                     if (key := _file_key(path)) is not None}
        self.folders = [i.image.resolve() for i in inputs if i.image.is_dir()]

    def check(self, path: Path) -> None:
        resolved = path.resolve()
        reason = self.reasons.get(resolved)
        if reason is None and (key := _file_key(resolved)) is not None:
            reason = self.keys.get(key)
        if reason is not None:
            raise ConfigurationError(
                f"{path}: {reason}; predictions never write over inputs or a manifest's files "
                "(not even with --overwrite): choose another --output_dir")
        if any(folder == resolved or folder in resolved.parents for folder in self.folders):
            raise ConfigurationError(
                f"{path}: lies inside the DICOM input folder of a volume; choose an "
                "--output_dir outside the inputs")


def _check_subject_ids(inputs: Sequence[PredictionInput]) -> None:
    seen: dict[str, PredictionInput] = {}
    for item in inputs:
        if not item.subject_id or any(c in item.subject_id for c in "/\\\0") or item.subject_id in (
                ".", ".."):
            raise ConfigurationError(
                f"subject id {item.subject_id!r} of {item.image} cannot name a file; use letters, "
                "digits, '_', '-' and '.'")
        if item.subject_id in seen:
            other = seen[item.subject_id]
            raise ConfigurationError(
                f"subject id {item.subject_id!r} appears twice ({other.image} [{other.modality}] "
                f"and {item.image} [{item.modality}]); outputs are named <subject_id>.nii.gz, so "
                "give unique ids or predict each modality into its own folder (--modality)"
            )
        seen[item.subject_id] = item


def plan_outputs(inputs: Sequence[PredictionInput], output_dir: str | os.PathLike,
                 overwrite: bool = False, save_probabilities: bool = False,
                 skip_existing: bool = False,
                 protected: Iterable[str | os.PathLike] = ()) -> list[PlannedOutput]:
    """Output paths of every input, checked before anything is predicted.

    Args:
        inputs: the volumes.
        output_dir: the output folder.
        overwrite: replace existing outputs (never an input or a protected file).
        save_probabilities: also plan ``probabilities/<subject_id>.nii.gz``.
        skip_existing: skip the inputs whose outputs all exist already.
        protected: more files no output may replace (e.g. :func:`manifest_files`).

    Raises:
        ConfigurationError: duplicate subject ids, an output that is an input, a protected file
            or lies inside a DICOM input folder, or an existing output without ``overwrite``.
    """
    if not inputs:
        raise ConfigurationError("no inputs to predict")
    output_dir = Path(output_dir).expanduser()
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigurationError(
            f"{output_dir}: exists and is not a folder; choose an output folder")
    _check_subject_ids(inputs)
    guard = _Protected(inputs, (Path(p) for p in protected))
    planned = []
    for item in inputs:
        labels = output_dir / f"{item.subject_id}.nii.gz"
        probabilities = (output_dir / "probabilities" / f"{item.subject_id}.nii.gz"
                         if save_probabilities else None)
        paths = [p for p in (labels, probabilities) if p is not None]
        for path in paths:
            guard.check(path)
        skip = skip_existing and all(p.exists() for p in paths)
        if not skip and not overwrite:
            for path in paths:
                if path.exists():
                    raise ConfigurationError(
                        f"{path}: already exists; pass --overwrite (overwrite=True) to replace "
                        "it, --skip_existing to keep finished outputs, or choose another "
                        "--output_dir")
        planned.append(PlannedOutput(item, labels, probabilities, skip))
    return planned


def write_probabilities(probabilities: sitk.Image, path: str | os.PathLike) -> Path:
    """Writes a C-component probability image as a 4-D float32 NIfTI ``(x, y, z, C)``.

    The spatial affine is the image's own grid (LPS world coordinates converted to NIfTI's RAS),
    so it equals the input's; the fourth axis is the class. Written atomically, gzip-compressed.
    """
    import nibabel as nib

    path = Path(path)
    array_zyxc = sitk.GetArrayViewFromImage(probabilities)
    if array_zyxc.ndim == 3:
        array_zyxc = array_zyxc[..., np.newaxis]
    direction = np.asarray(probabilities.GetDirection(), dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(probabilities.GetSpacing(), dtype=float)
    affine[:3, 3] = probabilities.GetOrigin()
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS -> RAS
    nifti = nib.Nifti1Image(np.asarray(array_zyxc, dtype=np.float32).transpose(2, 1, 0, 3),
                            affine)
    nifti.header.set_xyzt_units("mm")
    nifti.set_qform(affine, code=1)
    nifti.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(target: Path) -> None:
        with gzip.open(target, "wb", compresslevel=6) as stream:
            nifti.to_file_map({"image": nib.fileholders.FileHolder(fileobj=stream)})

    return atomic_write(path, write)


__all__ = ["PlannedOutput", "plan_outputs", "write_probabilities"]
