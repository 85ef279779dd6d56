"""Miniature data sets in their real on-disk layouts (BTCV, AMOS, CHAOS, nnU-Net, Decathlon).

Used by tests/io/test_layouts.py, test_dataset_json.py, test_chaos.py, test_dataset_manifest.py and
tests/cli/test_manifest_cli.py. Volumes are tiny (a few thousand voxels).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SHAPE = (4, 6, 5)  # z, y, x of the NIfTI volumes


def write_nifti(path: Path, array: np.ndarray, spacing: Sequence[float] = (2.0, 2.0, 3.0)) -> Path:
    """Writes a (z, y, x) array as NIfTI with the given spacing (identity direction)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    sitk.WriteImage(image, str(path))
    return path


def organ_label(ids: Sequence[int]) -> np.ndarray:
    """A label volume of SHAPE holding each id of ``ids`` in its own block."""
    label = np.zeros(SHAPE, dtype=np.uint8)
    for position, value in enumerate(ids):
        label[position % SHAPE[0], (position // SHAPE[0]) % SHAPE[1], 1:3] = value
    return label


def image_volume(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 100, SHAPE).astype(np.int16)


def make_btcv(root: Path, train: Sequence[str] = ("0001", "0002"),
              test: Sequence[str] = ("0061",)) -> Path:
    """``root/RawData/{Training/{img,label},Testing/img}`` (BTCV ids: 1 spleen, 6 liver, ...)."""
    for number in train:
        write_nifti(root / "RawData/Training/img" / f"img{number}.nii.gz", image_volume())
        write_nifti(root / "RawData/Training/label" / f"label{number}.nii.gz",
                    organ_label([6, 1, 2, 3, 7]))
    for number in test:
        write_nifti(root / "RawData/Testing/img" / f"img{number}.nii.gz", image_volume())
    return root


AMOS_LABELS = {"0": "background", "1": "spleen", "2": "right kidney", "3": "left kidney",
               "4": "gallbladder", "5": "esophagus", "6": "liver", "7": "stomach", "8": "aorta",
               "9": "postcava", "10": "pancreas", "11": "right adrenal gland",
               "12": "left adrenal gland", "13": "duodenum", "14": "bladder",
               "15": "prostate/uterus"}


def make_amos(root: Path, train: Sequence[int] = (1, 507), validation: Sequence[int] = (8, 588),
              test: Sequence[int] = (9,), with_json: bool = True) -> Path:
    """The amos22 folder: imagesTr/labelsTr/imagesVa/labelsVa/imagesTs (+ dataset.json)."""
    data: dict[str, object] = {"name": "AMOS", "labels": AMOS_LABELS,
                               "modality": {"0": "CT"}, "training": [], "validation": [],
                               "test": []}
    for split, ids, images, labels in (("training", train, "imagesTr", "labelsTr"),
                                       ("validation", validation, "imagesVa", "labelsVa"),
                                       ("test", test, "imagesTs", None)):
        for number in ids:
            name = f"amos_{number:04d}.nii.gz"
            write_nifti(root / images / name, image_volume(number))
            entry = {"image": f"./{images}/{name}"}
            if labels:
                write_nifti(root / labels / name, organ_label([1, 2, 3, 6, 15]))
                entry["label"] = f"./{labels}/{name}"
            data[split].append(entry)
    if with_json:
        (root / "dataset.json").write_text(json.dumps(data, indent=1))
    return root


def make_nnunet(root: Path, channel: str = "CT", labels: dict[str, int] | None = None,
                train: Sequence[str] = ("case_001", "case_002"),
                test: Sequence[str] = ("case_101",)) -> Path:
    """An nnU-Net v2 raw data set: dataset.json, imagesTr/<case>_0000.nii.gz, labelsTr, imagesTs."""
    labels = labels or {"background": 0, "Liver": 1, "Kidney (R)": 2, "kidney_left": 3,
                        "spleen": 4, "stomach": 5}
    data = {"channel_names": {"0": channel}, "labels": labels, "numTraining": len(train),
            "file_ending": ".nii.gz", "name": root.name}
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(data, indent=1))
    ids = sorted(set(labels.values()))
    for case in train:
        write_nifti(root / "imagesTr" / f"{case}_0000.nii.gz", image_volume())
        write_nifti(root / "labelsTr" / f"{case}.nii.gz", organ_label(ids[1:]))
    for case in test:
        write_nifti(root / "imagesTs" / f"{case}_0000.nii.gz", image_volume())
    return root


def make_decathlon(root: Path, modality: str = "MRI",
                   labels: dict[str, str] | None = None) -> Path:
    """A Decathlon task: dataset.json with modality, labels, training, test."""
    labels = labels or {"0": "background", "1": "liver", "2": "spleen"}
    data = {"name": "Task99_Abdomen", "modality": {"0": modality}, "labels": labels,
            "training": [], "test": ["./imagesTs/abd_9.nii.gz"]}
    for number in (1, 2):
        write_nifti(root / "imagesTr" / f"abd_{number}.nii.gz", image_volume(number))
        write_nifti(root / "labelsTr" / f"abd_{number}.nii.gz", organ_label([1, 2]))
        data["training"].append({"image": f"./imagesTr/abd_{number}.nii.gz",
                                 "label": f"./labelsTr/abd_{number}.nii.gz"})
    write_nifti(root / "imagesTs" / "abd_9.nii.gz", image_volume(9))
    (root / "dataset.json").write_text(json.dumps(data, indent=1))
    return root


# --- CHAOS: single-slice DICOM files (one series UID each, as anonymised) and PNG masks ---------

#: In-plane axes of the synthetic CHAOS series: rotated 30 degrees about the z axis (an axial
#: series with a non-identity direction); file names run from superior to inferior.
ROW_DIRECTION = (np.cos(np.pi / 6), np.sin(np.pi / 6), 0.0)
COLUMN_DIRECTION = (-np.sin(np.pi / 6), np.cos(np.pi / 6), 0.0)
PIXEL_SPACING = (1.5, 2.0)  # between columns (x), between rows (y), mm
SLICE_STEP = -4.0  # mm along z from one file to the next
FIRST_POSITION = (-10.0, 5.0, 40.0)
CHAOS_SIZE = (8, 7)  # rows, columns
CHAOS_SLICES = 5
LIVER_BOX = (slice(0, 3), slice(2, 5), slice(1, 4))  # slices (file order), rows, columns
SPLEEN_BOX = (slice(2, 4), slice(5, 7), slice(5, 7))
RIGHT_KIDNEY_BOX = (slice(3, 5), slice(6, 8), slice(0, 2))
LEFT_KIDNEY_BOX = (slice(4, 5), slice(0, 2), slice(5, 7))


def slice_position(k: int) -> np.ndarray:
    return np.asarray(FIRST_POSITION) + np.array([0.0, 0.0, SLICE_STEP * k])


def pixel_world(k: int, row: int, column: int) -> np.ndarray:
    """World (LPS) position of a pixel by the DICOM standard (PS3.3 C.7.6.2.1.1)."""
    return (slice_position(k) + column * PIXEL_SPACING[0] * np.asarray(ROW_DIRECTION)
            + row * PIXEL_SPACING[1] * np.asarray(COLUMN_DIRECTION))


def chaos_volumes() -> tuple[np.ndarray, np.ndarray]:
    """(image, mask) in file order: bright organs drawn where the masks are."""
    image = np.full((CHAOS_SLICES, *CHAOS_SIZE), 100, dtype=np.int16)
    mask = np.zeros((CHAOS_SLICES, *CHAOS_SIZE), dtype=np.uint8)
    image[LIVER_BOX], mask[LIVER_BOX] = 1000, 63
    image[SPLEEN_BOX], mask[SPLEEN_BOX] = 2000, 252
    image[RIGHT_KIDNEY_BOX], mask[RIGHT_KIDNEY_BOX] = 1200, 126
    image[LEFT_KIDNEY_BOX], mask[LEFT_KIDNEY_BOX] = 1400, 189
    return image, mask


def write_dicom_slices(folder: Path, image: np.ndarray, modality: str = "MR") -> list[Path]:
    """One DICOM file per slice, names in file order, each with its own series UID."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    orientation = "\\".join(f"{v:.6f}" for v in (*ROW_DIRECTION, *COLUMN_DIRECTION))
    paths = []
    for k in range(image.shape[0]):
        item = sitk.GetImageFromArray(image[k])
        item.SetSpacing(PIXEL_SPACING)
        tags = {"0008|0060": modality, "0020|0032": "\\".join(f"{v:g}" for v in slice_position(k)),
                "0020|0037": orientation, "0020|000e": f"1.2.826.0.1.3680043.2.1125.{k + 1}",
                "0008|0018": f"1.2.826.0.1.3680043.2.1126.{k + 1}", "0020|0013": str(k + 1)}
        for tag, value in tags.items():
            item.SetMetaData(tag, value)
        path = folder / f"IMG-0001-{k + 1:05d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(item)
        paths.append(path)
    return paths


def write_png_masks(folder: Path, mask: np.ndarray) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(mask.shape[0]):
        path = folder / f"IMG-0001-{k + 1:05d}.png"
        sitk.WriteImage(sitk.GetImageFromArray(mask[k]), str(path))
        paths.append(path)
    return paths


def make_chaos(root: Path, mr_cases: Sequence[str] = ("1", "2"), ct_cases: Sequence[str] = ("1",),
               test_cases: Sequence[str] = ()) -> Path:
    """``root/Train_Sets/{MR/<id>/{T2SPIR,T1DUAL},CT/<id>}`` (+ ``Test_Sets/MR``)."""
    image, mask = chaos_volumes()
    for case in mr_cases:
        base = root / "Train_Sets" / "MR" / case
        write_dicom_slices(base / "T2SPIR" / "DICOM_anon", image)
        write_png_masks(base / "T2SPIR" / "Ground", mask)
        for phase in ("InPhase", "OutPhase"):
            write_dicom_slices(base / "T1DUAL" / "DICOM_anon" / phase, image)
        write_png_masks(base / "T1DUAL" / "Ground", mask)
    for case in ct_cases:
        base = root / "Train_Sets" / "CT" / case
        write_dicom_slices(base / "DICOM_anon", image, modality="CT")
        write_png_masks(base / "Ground", np.where(mask == 63, 255, 0).astype(np.uint8))
    for case in test_cases:
        write_dicom_slices(root / "Test_Sets" / "MR" / case / "T2SPIR" / "DICOM_anon", image)
    return root
