"""The CHAOS challenge layout: single-slice DICOM files and PNG masks -> NIfTI volumes.

The organisers' download (CHAOS, Kavur et al., Medical Image Analysis 69, 2021;
https://chaos.grand-challenge.org/Data/) holds, per case::

    Train_Sets/CT/<id>/DICOM_anon/*.dcm          Train_Sets/CT/<id>/Ground/*.png (liver only)
    Train_Sets/MR/<id>/T2SPIR/DICOM_anon/*.dcm   Train_Sets/MR/<id>/T2SPIR/Ground/*.png
    Train_Sets/MR/<id>/T1DUAL/DICOM_anon/{InPhase,OutPhase}/*.dcm   .../T1DUAL/Ground/*.png

and ``Test_Sets`` the same without ``Ground``. The DICOM files are anonymised single slices with
different instance UIDs, so they are not read as one series: every file is read on its own.

Slice order. The organisers define it by the file names, not by the DICOM position tags: the
docstring of ``transformToRealCoordinates`` in their evaluation code (github.com/emrekavur/
CHAOS-evaluation, ``Python/CHAOSmetrics.py``) says "In CHAOS challenge the orientation of the
slices is determined by order of image names NOT by position tags in DICOM files", and that code
pairs the k-th ground-truth PNG with the k-th DICOM file, both sorted by name (their MATLAB
version sorts naturally, ``natsortfiles``). So here DICOM files and PNGs are both sorted by
natural name order and stacked in that order; the volume's grid is built from that order (origin
= the first file's ImagePositionPatient, slice axis = from the first to the last position), which
is what their coordinate transform does. Peers that read the series by position instead (e.g.
nnU-Net v1's CHAOS conversion) have to reverse the PNG stack; here image and label share one
order, so nothing is reversed.

In-plane orientation. A PNG's row r / column c is taken as the DICOM slice's pixel row r /
column c (the masks have the slices' size). The organisers' pages read do not state this in
words; it is an assumption, not a confirmed fact. Grey values: MR masks 63 liver, 126 right
kidney, 189 left kidney, 252 spleen (preset ``chaos``); CT masks are liver only (preset
``chaos_ct``: any non-zero value is liver, as the organisers' evaluation reads them as binary).

The label volume is written on the image's own grid (origin, spacing and direction copied), so the
image/label geometry mismatches other converters produced for some CHAOS MR subjects (nnU-Net
issue #383: patients 21, 22 and 33) cannot occur; a case whose slice positions are not evenly
spaced along one axis is reported instead of being resampled.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from dltk_mm.errors import InputDataError
from dltk_mm.io.geometry import Geometry
from dltk_mm.io.layouts import Candidate, Case, LayoutScan
from dltk_mm.io.readers import write_volume

#: Sequences a CHAOS scan can list: folder parts, modality of the rows, label preset.
SEQUENCES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "ct": ((), "ct", "chaos_ct"),
    "t2spir": (("T2SPIR",), "mr", "chaos"),
    "t1in": (("T1DUAL", "InPhase"), "mr_t1in", "chaos"),
    "t1out": (("T1DUAL", "OutPhase"), "mr_t1out", "chaos"),
}

#: Relative tolerance of the slice-position checks (even spacing, one slice axis).
POSITION_TOLERANCE = 1e-2


def natural_key(path: Path) -> list[object]:
    """Sort key of a file name with digit runs compared as numbers (``2`` before ``10``)."""
    return [int(part) if part.isdigit() else part.lower()
            for part in re.split(r"(\d+)", path.name)]


def _files(folder: Path, suffix: str) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == suffix),
                  key=natural_key)


@dataclasses.dataclass(frozen=True)
class ChaosSource:
    """The files of one CHAOS case and sequence."""

    case_id: str
    sequence: str
    dicom_dir: Path
    ground_dir: Path | None


def _read_slice(path: Path) -> sitk.Image:
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        reason = str(error).strip().splitlines()
        raise InputDataError(
            f"{path}: cannot be read as a DICOM slice ({reason[-1] if reason else 'unknown'}); "
            "download the case again, or leave it out with --skip_invalid") from error
    if image.GetDimension() == 3 and image.GetSize()[2] != 1:
        raise InputDataError(f"{path}: holds {image.GetSize()[2]} slices; CHAOS DICOM files hold "
                             "one slice each")
    return image


def _slice_geometry(slices: Sequence[sitk.Image], files: Sequence[Path]) -> Geometry:
    """The grid of the slices stacked in the given (file-name) order."""
    first = slices[0]
    direction = np.asarray(first.GetDirection(), dtype=float).reshape(3, 3)
    positions = np.asarray([s.GetOrigin() for s in slices], dtype=float)
    for image, path in zip(slices, files, strict=True):
        if image.GetSize()[:2] != first.GetSize()[:2] or not np.allclose(
                image.GetSpacing()[:2], first.GetSpacing()[:2]) or not np.allclose(
                np.asarray(image.GetDirection()).reshape(3, 3)[:, :2], direction[:, :2],
                atol=1e-4):
            raise InputDataError(
                f"{path}: size, pixel spacing or orientation differs from {files[0]}; a CHAOS "
                "case folder must hold the slices of one series")
    if len(slices) == 1:
        axis, step = direction[:, 2], float(first.GetSpacing()[2])
    else:
        extent = positions[-1] - positions[0]
        step = float(np.linalg.norm(extent)) / (len(slices) - 1)
        if step <= 0:
            raise InputDataError(f"{files[0]} and {files[-1]}: same slice position; the case "
                                 "holds repeated slices")
        axis = extent / np.linalg.norm(extent)
        expected = positions[0] + np.outer(np.arange(len(slices)), axis * step)
        deviation = np.linalg.norm(positions - expected, axis=1)
        worst = int(np.argmax(deviation))
        if deviation[worst] > POSITION_TOLERANCE * step or abs(
                abs(float(axis @ direction[:, 2])) - 1) > 1e-3:
            raise InputDataError(
                f"{files[worst]}: slice position {positions[worst].round(3).tolist()} is not on "
                f"the evenly spaced line from {files[0].name} to {files[-1].name} (off by "
                f"{deviation[worst]:.3g} mm, or the slices are tilted); the case cannot be "
                "stacked in file-name order: leave it out with --skip_invalid")
    matrix = direction.copy()
    matrix[:, 2] = axis
    spacing = (float(first.GetSpacing()[0]), float(first.GetSpacing()[1]), step)
    return Geometry(spacing=spacing, origin=tuple(float(v) for v in positions[0]),
                    direction=tuple(float(v) for v in matrix.ravel()),
                    size=(int(first.GetSize()[0]), int(first.GetSize()[1]), len(slices)))


def read_dicom_slices(folder: Path) -> tuple[np.ndarray, Geometry]:
    """The (z, y, x) array and grid of a folder of single-slice DICOM files, stacked in natural
    file-name order (the organisers' slice order, see the module docstring).

    Raises:
        InputDataError: for a missing folder, an unreadable file or inconsistent slices.
    """
    files = _files(folder, ".dcm")
    if not files:
        raise InputDataError(f"{folder}: holds no .dcm files; restore the case's DICOM_anon "
                             "folder from the download")
    slices = [_read_slice(path) for path in files]
    geometry = _slice_geometry(slices, files)
    array = np.stack([sitk.GetArrayFromImage(s).reshape(s.GetSize()[1], s.GetSize()[0])
                      for s in slices])
    return array, geometry


def read_png_masks(folder: Path, slice_count: int, shape: tuple[int, int],
                   dicom_dir: Path) -> np.ndarray:
    """The (z, y, x) uint8 stack of a case's ground-truth PNGs, in natural file-name order.

    Raises:
        InputDataError: if the number of PNGs differs from the slice count, or a PNG is unreadable
            or of another size than the slices.
    """
    files = _files(folder, ".png")
    if len(files) != slice_count:
        raise InputDataError(
            f"{folder}: holds {len(files)} PNG mask(s) but {dicom_dir} holds {slice_count} DICOM "
            "slice(s); each slice needs its mask: restore the case from the download, or leave it "
            "out with --skip_invalid")
    masks = []
    for path in files:
        try:
            mask = sitk.ReadImage(str(path))
        except RuntimeError as error:
            raise InputDataError(f"{path}: cannot be read as a PNG mask; restore it from the "
                                 "download, or leave the case out with --skip_invalid") from error
        array = sitk.GetArrayFromImage(mask)
        if mask.GetNumberOfComponentsPerPixel() != 1 or array.shape != shape:
            raise InputDataError(
                f"{path}: a {array.shape} mask with {mask.GetNumberOfComponentsPerPixel()} "
                f"channel(s); the masks must be single-channel {shape} images like the slices")
        masks.append(array.astype(np.uint8))
    return np.stack(masks)


def convert_case(source: ChaosSource, image_path: Path, label_path: Path | None) -> None:
    """Writes one CHAOS case as NIfTI (atomically): the image, and the label on its grid."""
    array, geometry = read_dicom_slices(source.dicom_dir)
    label = None
    if source.ground_dir is not None and label_path is not None:
        label = read_png_masks(source.ground_dir, array.shape[0], array.shape[1:],
                               source.dicom_dir)
    write_volume(array, image_path, geometry)
    if label is not None:
        write_volume(label, label_path, geometry)


def _candidate(source: ChaosSource, subject: str, converted_dir: Path) -> Candidate:
    _, modality, preset = SEQUENCES[source.sequence]
    name = f"{subject}_{source.sequence}.nii.gz"
    image_path = converted_dir / "images" / name
    label_path = converted_dir / "labels" / name if source.ground_dir is not None else None

    def prepare() -> Case:
        done = image_path.exists() and (label_path is None or label_path.exists())
        if not done:
            convert_case(source, image_path, label_path)
        return Case(subject, modality, image_path, label_path, preset)

    return Candidate(subject, modality, source.dicom_dir, prepare,
                     labelled=label_path is not None)


def _case_folders(root: Path) -> list[tuple[Path, str]]:
    """(folder of CT/ and MR/, split) pairs under ``root``."""
    if (root / "CT").is_dir() or (root / "MR").is_dir():
        return [(root, "train" if "test" not in root.name.lower() else "test")]
    found = [(root / name, split) for name, split in (("Train_Sets", "train"),
                                                      ("Test_Sets", "test"))
             if (root / name).is_dir()]
    if not found:
        raise InputDataError(f"{root}: holds no Train_Sets or Test_Sets folder; --root must be the "
                             "unpacked CHAOS download (the folder holding Train_Sets)")
    return found


def scan_chaos(root: Path, converted_dir: Path, sequences: Sequence[str] = ("t2spir",)
               ) -> LayoutScan:
    """The cases of the CHAOS download for the given sequences (``ct``, ``t2spir``, ``t1in``,
    ``t1out``); converted NIfTI files go to ``converted_dir`` (images/ and labels/)."""
    unknown = sorted(set(sequences) - set(SEQUENCES))
    if unknown:
        raise InputDataError(f"unknown CHAOS sequence(s) {unknown}; choose from "
                             f"{sorted(SEQUENCES)}")
    scan = LayoutScan()
    for folder, split in _case_folders(root):
        for sequence in sequences:
            parts, modality, _ = SEQUENCES[sequence]
            kind = "CT" if sequence == "ct" else "MR"
            cases = sorted((p for p in (folder / kind).iterdir() if p.is_dir()),
                           key=natural_key) if (folder / kind).is_dir() else []
            for case_dir in cases:
                base = case_dir / parts[0] if parts else case_dir
                if not base.is_dir():
                    continue  # this case has no scan of that sequence
                dicom_dir = base / "DICOM_anon" / Path(*parts[1:]) if parts[1:] else (
                    base / "DICOM_anon")
                ground = base / "Ground" if split == "train" else None
                subject = f"chaos_{'ct' if sequence == 'ct' else 'mr'}_{case_dir.name}"
                scan.candidates.append(_candidate(ChaosSource(case_dir.name, sequence, dicom_dir,
                                                              ground), subject, converted_dir))
    if "ct" in sequences:
        scan.notes.append("CHAOS CT rows carry liver-only labels (CHAOS CT has no spleen or "
                          "kidney labels; preset chaos_ct, column label_organs)")
    return scan
