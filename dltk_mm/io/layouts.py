"""Dataset layouts: finding the cases of a downloaded collection on disk.

A layout scan lists :class:`Candidate` cases without reading any image. Each candidate's
``prepare()`` returns the :class:`Case` (image and label files, label preset) or raises one
:class:`~dltk_mm.errors.InputDataError` naming the file and the fix, so a broken case never stops
the others (see :mod:`dltk_mm.io.dataset_manifest`). Layouts here: ``btcv``, ``amos`` and
``folders``; ``nnunet`` and ``decathlon`` are in :mod:`dltk_mm.io.dataset_json`, ``chaos`` in
:mod:`dltk_mm.io.chaos`. Nothing is ever written into a dataset's folder.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from dltk_mm.errors import InputDataError
from dltk_mm.io.labels import LabelPreset

#: File endings of volume files, longest first (the stem is the name without them).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")

#: First AMOS case id that is an MR scan. Source: nnU-Net v2's AMOS 2022 conversion
#: (nnunetv2/dataset_conversion/Dataset218_Amos2022_task1.py) keeps the ids up to 500 as "the CT
#: images"; the AMOS organisers' own statement of the split was not found.
AMOS_FIRST_MR_ID = 501


@dataclasses.dataclass(frozen=True)
class Case:
    """One volume of a manifest.

    Attributes:
        subject_id: the manifest's subject id.
        modality: ``ct``, ``mr`` (or another lower-case modality name).
        image: the image file (or DICOM series folder).
        label: the label file, None for an unlabelled case.
        label_preset: a preset name of :data:`dltk_mm.io.labels.PRESETS`, or the name of a preset
            the scan derived (a key of :attr:`LayoutScan.presets`).
    """

    subject_id: str
    modality: str
    image: Path
    label: Path | None
    label_preset: str


@dataclasses.dataclass
class Candidate:
    """A case found on disk, not yet checked.

    Attributes:
        subject_id: the subject id it will get.
        modality: its modality.
        source: where it comes from (shown in messages).
        prepare: returns the :class:`Case` (CHAOS: after conversion) or raises InputDataError.
        labelled: whether the layout gives the case a label (False: a test-set case).
    """

    subject_id: str
    modality: str
    source: Path
    prepare: Callable[[], Case]
    labelled: bool = True


@dataclasses.dataclass
class LayoutScan:
    """What a layout scan found.

    Attributes:
        candidates: the cases, in a stable order.
        presets: label presets derived from the data set (name -> (preset, the data set's own
            label names)); written next to the manifest by the manifest builder.
        notes: things the user should know (e.g. organs a data set does not label).
    """

    candidates: list[Candidate] = dataclasses.field(default_factory=list)
    presets: dict[str, tuple[LabelPreset, dict[int, str]]] = dataclasses.field(
        default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


def volume_stem(path: Path) -> str:
    """The file name without its volume ending (``img0001.nii.gz`` -> ``img0001``)."""
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def volume_files(folder: Path) -> list[Path]:
    """The volume files of a folder, sorted by name (hidden files ignored)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.name.lower().endswith(VOLUME_SUFFIXES))


def require_folder(path: Path, what: str, fix: str) -> Path:
    """``path`` if it is a folder, else an InputDataError saying what was expected there."""
    if not path.is_dir():
        raise InputDataError(f"{path}: {what} folder not found; {fix}")
    return path


def simple_candidate(subject_id: str, modality: str, image: Path, label: Path | None,
                     preset: str, label_expected: bool) -> Candidate:
    """A candidate whose files already exist as they are (no conversion).

    Args:
        subject_id: subject id.
        modality: modality.
        image: the image file.
        label: the label file (may not exist: then ``prepare`` fails if ``label_expected``).
        preset: the label preset name.
        label_expected: whether a missing label is an error (a training case) or means an
            unlabelled case.
    """

    def prepare() -> Case:
        if not image.exists():
            raise InputDataError(f"{image}: image file not found; restore it from the download")
        if label is not None and not label.exists():
            if label_expected:
                raise InputDataError(
                    f"{label}: label file of {subject_id} not found (image {image}); restore it "
                    "from the download, or leave the case out with --skip_invalid")
            return Case(subject_id, modality, image, None, preset)
        return Case(subject_id, modality, image, label, preset)

    return Candidate(subject_id, modality, image, prepare,
                     labelled=label is not None and (label_expected or label.exists()))


def scan_btcv(root: Path) -> LayoutScan:
    """BTCV (Synapse multi-atlas abdomen): ``RawData/Training/img/img*.nii.gz`` with
    ``RawData/Training/label/label*.nii.gz`` (CT, preset ``btcv``) and ``RawData/Testing/img``
    as unlabelled rows. ``root`` may be the folder holding ``RawData`` or ``RawData`` itself."""
    base = root / "RawData" if (root / "RawData").is_dir() else root
    training = require_folder(base / "Training" / "img", "BTCV training image",
                              "--root must hold RawData/Training/img (the unpacked RawData.zip)")
    scan = LayoutScan()
    for split, folder in (("Training", training), ("Testing", base / "Testing" / "img")):
        for image in volume_files(folder):
            stem = volume_stem(image)
            number = re.sub(r"^img", "", stem)
            label = None
            if split == "Training":
                label = base / "Training" / "label" / image.name.replace("img", "label", 1)
            scan.candidates.append(simple_candidate(
                f"btcv_{number}", "ct", image, label, "btcv", label_expected=True))
    return scan


def _amos_id(stem: str) -> int | None:
    match = re.search(r"(\d+)$", stem)
    return int(match.group(1)) if match else None


def _amos_entries(root: Path) -> list[tuple[str, Path, Path | None]]:
    """(split, image, label) of every AMOS case, from dataset.json or the folders."""
    dataset_json = root / "dataset.json"
    entries: list[tuple[str, Path, Path | None]] = []
    if dataset_json.is_file():
        try:
            data = json.loads(dataset_json.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise InputDataError(f"{dataset_json}: cannot be read as JSON ({error}); restore it "
                                 "from the download or delete it to list the folders") from error
        for split in ("training", "validation", "test"):
            for item in data.get(split, []) or []:
                image_text = item["image"] if isinstance(item, dict) else str(item)
                label_text = item.get("label") if isinstance(item, dict) else None
                entries.append((split, (root / image_text).resolve(),
                                (root / label_text).resolve() if label_text else None))
        return entries
    for split, images, labels in (("training", "imagesTr", "labelsTr"),
                                  ("validation", "imagesVa", "labelsVa"),
                                  ("test", "imagesTs", None)):
        for image in volume_files(root / images):
            entries.append((split, image, root / labels / image.name if labels else None))
    return entries


def scan_amos(root: Path, first_mr_id: int = AMOS_FIRST_MR_ID) -> LayoutScan:
    """AMOS22: ``dataset.json`` (training / validation / test lists) or the folders
    ``imagesTr/labelsTr/imagesVa/labelsVa/imagesTs``; CT and MR share the folders, the case id
    tells them apart (MR from ``first_mr_id``, see :data:`AMOS_FIRST_MR_ID`); preset ``amos``."""
    entries = _amos_entries(root)
    if not entries:
        raise InputDataError(f"{root}: no AMOS cases found; --root must hold dataset.json or "
                             "imagesTr/labelsTr (the unpacked amos22 folder)")
    scan = LayoutScan()
    for split, image, label in entries:
        stem = volume_stem(image)
        number = _amos_id(stem)
        if number is None:
            modality = "ct"
            scan.notes.append(f"{image}: no case id in the name; taken as CT")
        else:
            modality = "mr" if number >= first_mr_id else "ct"
        scan.candidates.append(simple_candidate(
            stem, modality, image, label, "amos", label_expected=split != "test"))
    return scan


def scan_folders(images: Path, labels: Path | None, modality: str, preset: str,
                 patterns: Sequence[str] = ()) -> LayoutScan:
    """Any two folders: images and labels matched by file stem (the same name).

    Args:
        images: the image folder.
        labels: the label folder (None: unlabelled rows).
        modality: the modality of every row.
        preset: the label preset of every row.
        patterns: keep only images whose file name matches one of these globs (all if empty).
    """
    require_folder(images, "image", "pass the folder of the images as --images")
    if labels is not None:
        require_folder(labels, "label", "pass the folder of the labels as --labels")
    label_of = {volume_stem(p): p for p in volume_files(labels)} if labels is not None else {}
    scan = LayoutScan()
    for image in volume_files(images):
        if patterns and not any(fnmatch.fnmatch(image.name, p) for p in patterns):
            continue
        stem = volume_stem(image)
        label = label_of.get(stem)
        if labels is not None and label is None:
            label = labels / image.name  # reported as missing by prepare()
        scan.candidates.append(simple_candidate(stem, modality, image, label, preset,
                                                label_expected=labels is not None))
    if not scan.candidates:
        matching = f" matching {list(patterns)}" if patterns else ""
        raise InputDataError(f"{images}: no volume files{matching}; volumes end in "
                             f"{', '.join(VOLUME_SUFFIXES)}")
    return scan
