"""Tests of dltk_mm.io.readers: one SimpleITK path for NIfTI, MetaImage, NRRD and DICOM."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dltk_mm.errors import InputDataError
from dltk_mm.io.geometry import Geometry
from dltk_mm.io.readers import read_geometry, read_image, read_volume, write_volume


def _volume(dtype=np.int16) -> tuple[np.ndarray, Geometry]:
    rng = np.random.default_rng(1)
    array = rng.integers(-1000, 1000, (6, 9, 11)).astype(dtype)
    geometry = Geometry.from_orientation("RAS", (0.8, 0.9, 2.5), (120.0, -30.0, 55.5),
                                         (11, 9, 6))
    return array, geometry


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha", ".mhd", ".nrrd"])
def test_write_read_round_trip(tmp_path: Path, suffix: str) -> None:
    array, geometry = _volume()
    path = write_volume(array, tmp_path / f"volume{suffix}", geometry)
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.array, array)
    assert volume.geometry.same_grid(geometry, tol=1e-5)
    assert volume.geometry.orientation == "RAS"
    assert read_geometry(path).same_grid(geometry, tol=1e-5)
    # the temporary file of the atomic write is gone
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_dicom_series_folder(tmp_path: Path) -> None:
    array, geometry = _volume()
    image = geometry.image_from_array(array)
    image = sitk.DICOMOrient(image, "LPS")  # DICOM slices stacked along +z
    folder = tmp_path / "series"
    folder.mkdir()
    direction = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        slice_image = image[:, :, k]
        slice_image.SetMetaData("0008|0060", "CT")
        slice_image.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1.42")
        slice_image.SetMetaData("0020|0013", str(k + 1))
        slice_image.SetMetaData("0020|0032", "\\".join(
            f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))))
        slice_image.SetMetaData("0020|0037", "\\".join(
            f"{v:.6f}" for v in (direction[0], direction[3], direction[6], direction[1],
                                 direction[4], direction[7])))
        slice_image.SetMetaData("0028|0030", f"{image.GetSpacing()[1]:.6f}\\"
                                             f"{image.GetSpacing()[0]:.6f}")
        writer.SetFileName(str(folder / f"slice_{k:03d}.dcm"))
        writer.Execute(slice_image)
    volume = read_volume(folder)
    np.testing.assert_array_equal(volume.array, sitk.GetArrayFromImage(image))
    assert volume.geometry.same_grid(Geometry.from_image(image), tol=1e-4)
    assert read_geometry(folder).size == image.GetSize()


def test_missing_file_names_path_and_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "scan.nii.gz"
    with pytest.raises(InputDataError, match="not found") as error:
        read_volume(missing)
    assert str(missing) in str(error.value)
    with pytest.raises(InputDataError, match="not found"):
        read_geometry(missing)


@pytest.mark.parametrize("name", ["broken.nii.gz", "broken.mha", "broken.nrrd"])
def test_unreadable_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wb") as stream:
            stream.write(b"this is not a nifti header" * 3)
    else:
        path.write_text("garbage\n")
    with pytest.raises(InputDataError, match="cannot be read") as error:
        read_volume(path)
    assert str(path) in str(error.value)
    with pytest.raises(InputDataError, match="cannot be read"):
        read_geometry(path)


def test_truncated_nifti(tmp_path: Path) -> None:
    array, geometry = _volume()
    path = write_volume(array, tmp_path / "full.nii", geometry)
    truncated = tmp_path / "truncated.nii"
    truncated.write_bytes(path.read_bytes()[:500])
    with pytest.raises(InputDataError, match="truncated.nii"):
        read_volume(truncated)


@pytest.mark.parametrize("name", ["nan.nii.gz", "nan.nii", "nan.mha"])
def test_nan_and_inf_are_rejected(tmp_path: Path, name: str) -> None:
    array, geometry = _volume(np.float32)
    array[2, 3, 4] = np.nan
    array[0, 0, 0] = np.inf
    path = write_volume(array, tmp_path / name, geometry)
    # (ITK's NIfTI reader turns NaN into 0: the check must look at the stored values)
    with pytest.raises(InputDataError, match="NaN or infinite") as error:
        read_volume(path)
    assert name in str(error.value) and "2 NaN" in str(error.value)
    assert read_volume(path, allow_non_finite=True).array.shape == array.shape


def test_folder_without_dicom_and_2d_image(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputDataError, match="no DICOM series"):
        read_volume(empty)
    flat = tmp_path / "flat.mha"
    sitk.WriteImage(sitk.Image([5, 5], sitk.sitkUInt8), str(flat))
    with pytest.raises(InputDataError, match="2D"):
        read_volume(flat)
    with pytest.raises(InputDataError, match="2D"):
        read_geometry(flat)


def test_4d_with_single_timepoint_is_read_as_3d(tmp_path: Path) -> None:
    image = sitk.Image([4, 3, 2, 1], sitk.sitkInt16)
    path = tmp_path / "t1.nii.gz"
    sitk.WriteImage(image, str(path))
    assert read_volume(path).array.shape == (2, 3, 4)
    assert read_geometry(path).size == (4, 3, 2)


def test_read_image_casts_and_write_rejects_array_without_geometry(tmp_path: Path) -> None:
    array, geometry = _volume()
    path = write_volume(geometry.image_from_array(array), tmp_path / "v.nii.gz")
    assert read_image(path, sitk.sitkFloat32).GetPixelID() == sitk.sitkFloat32
    with pytest.raises(InputDataError, match="geometry"):
        write_volume(array, tmp_path / "x.nii.gz")


def test_real_volumes_headers_and_orientations(real_data_dir: Path) -> None:
    expected = {"chaos": "LAS", "amos": "LAI", "ts_ct": "RAS", "ts_mr": "LPS"}
    with open(real_data_dir / "manifest.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    seen = set()
    for row in rows:
        header = read_geometry(real_data_dir / row["image"])
        label_header = read_geometry(real_data_dir / row["label"])
        assert header.same_grid(label_header)
        prefix = next(k for k in expected if row["subject_id"].startswith(k))
        assert header.orientation == expected[prefix], row["subject_id"]
        seen.add(header.orientation)
    assert seen == {"LAS", "LAI", "RAS", "LPS"}
    ct = read_volume(real_data_dir / "images" / "ts_ct_example_sm.nii.gz")
    assert ct.array.min() < -900 and ct.array.max() > 300  # Hounsfield units


def test_truncated_compressed_nifti(tmp_path: Path) -> None:
    array, geometry = _volume()
    path = write_volume(array, tmp_path / "full.nii", geometry)
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(gzip.compress(path.read_bytes()[:700]))
    with pytest.raises(InputDataError, match="truncated") as error:
        read_volume(truncated)
    assert "truncated.nii.gz" in str(error.value)
    cut_stream = tmp_path / "cut_stream.nii.gz"
    cut_stream.write_bytes(gzip.compress(path.read_bytes())[:-40])
    with pytest.raises(InputDataError, match="cut_stream.nii.gz"):
        read_volume(cut_stream)
