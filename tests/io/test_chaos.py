"""Tests of dltk_mm.io.chaos: CHAOS DICOM slices + PNG masks -> NIfTI on one grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dltk_mm.errors import InputDataError
from dltk_mm.io.chaos import natural_key, read_dicom_slices, scan_chaos
from tests.io import layout_builders as lb


def _world_points(image: sitk.Image, mask: np.ndarray) -> np.ndarray:
    """World positions of the voxels where ``mask`` (z, y, x) is set."""
    return np.asarray([image.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))
                       for z, y, x in np.argwhere(mask)])


def _sorted_rows(points: np.ndarray) -> np.ndarray:
    return points[np.lexsort(np.round(points, 3).T[::-1])]


def test_converted_label_lands_on_the_drawn_organ_in_world_space(tmp_path: Path) -> None:
    root = lb.make_chaos(tmp_path / "CHAOS", mr_cases=("7",), ct_cases=())
    scan = scan_chaos(root, tmp_path / "converted", ["t2spir"])
    (candidate,) = scan.candidates
    case = candidate.prepare()
    assert (case.subject_id, case.modality, case.label_preset) == ("chaos_mr_7", "mr", "chaos")
    assert case.image.parent == tmp_path / "converted" / "images"
    image = sitk.ReadImage(str(case.image))
    label = sitk.ReadImage(str(case.label))
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    assert not np.allclose(direction, np.eye(3))  # rotated in plane, slices run inferior
    for attribute in ("GetOrigin", "GetSpacing", "GetDirection", "GetSize"):
        assert np.allclose(getattr(image, attribute)(), getattr(label, attribute)())
    labels = sitk.GetArrayFromImage(label)
    assert set(np.unique(labels).tolist()) == {0, 63, 126, 189, 252}
    # the liver voxels of the converted label sit where the DICOM tags put the drawn liver
    drawn = np.zeros((lb.CHAOS_SLICES, *lb.CHAOS_SIZE), dtype=bool)
    drawn[lb.LIVER_BOX] = True
    expected = np.asarray([lb.pixel_world(k, r, c) for k, r, c in np.argwhere(drawn)])
    found = _world_points(label, labels == 63)
    assert found.shape == expected.shape
    np.testing.assert_allclose(_sorted_rows(found), _sorted_rows(expected), atol=1e-3)
    # and the converted image is bright (the drawn organ) exactly there
    pixels = sitk.GetArrayFromImage(image)
    assert np.all(pixels[labels == 63] == 1000) and np.all(pixels[labels == 252] == 2000)
    assert np.all(pixels[labels == 126] == 1200) and np.all(pixels[labels == 189] == 1400)
    assert np.all(pixels[labels == 0] == 100)


def test_file_name_order_defines_the_slice_axis(tmp_path: Path) -> None:
    image, _ = lb.chaos_volumes()
    lb.write_dicom_slices(tmp_path / "dicom", image)
    array, geometry = read_dicom_slices(tmp_path / "dicom")
    assert array.shape == image.shape and np.array_equal(array, image)
    assert np.allclose(geometry.origin, lb.FIRST_POSITION)
    assert np.allclose(geometry.spacing, (*lb.PIXEL_SPACING, abs(lb.SLICE_STEP)))
    assert np.allclose(geometry.direction_matrix[:, 2], (0, 0, -1))
    assert sorted([Path("a10.dcm"), Path("a2.dcm")], key=natural_key)[0].name == "a2.dcm"


def test_sequences_and_ct_liver_only(tmp_path: Path) -> None:
    root = lb.make_chaos(tmp_path / "CHAOS", mr_cases=("1",), ct_cases=("3",), test_cases=("5",))
    scan = scan_chaos(root, tmp_path / "out", ["t2spir", "t1in", "t1out", "ct"])
    found = {(c.subject_id, c.modality) for c in scan.candidates}
    assert found == {("chaos_mr_1", "mr"), ("chaos_mr_1", "mr_t1in"), ("chaos_mr_1", "mr_t1out"),
                     ("chaos_ct_3", "ct"), ("chaos_mr_5", "mr")}
    assert [c.subject_id for c in scan.candidates if not c.labelled] == ["chaos_mr_5"]
    cases = {(c.subject_id, c.modality): c.prepare() for c in scan.candidates}
    assert cases[("chaos_mr_5", "mr")].label is None  # Test_Sets: no ground truth
    assert cases[("chaos_ct_3", "ct")].label_preset == "chaos_ct"
    assert any("liver-only" in note for note in scan.notes)


def test_already_converted_files_are_kept(tmp_path: Path) -> None:
    root = lb.make_chaos(tmp_path / "CHAOS", mr_cases=("1",), ct_cases=())
    (candidate,) = scan_chaos(root, tmp_path / "out", ["t2spir"]).candidates
    case = candidate.prepare()
    stamp = case.image.stat().st_mtime_ns
    for dicom in (root / "Train_Sets/MR/1/T2SPIR/DICOM_anon").iterdir():
        dicom.write_bytes(b"gone")  # a second run must not read the source again
    assert candidate.prepare() == case and case.image.stat().st_mtime_ns == stamp


def test_broken_cases_name_the_file(tmp_path: Path) -> None:
    root = lb.make_chaos(tmp_path / "CHAOS", mr_cases=("1", "2"), ct_cases=())
    broken = root / "Train_Sets/MR/1/T2SPIR/DICOM_anon/IMG-0001-00003.dcm"
    broken.write_bytes(b"not a dicom file")
    (root / "Train_Sets/MR/2/T2SPIR/Ground/IMG-0001-00002.png").unlink()
    first, second = scan_chaos(root, tmp_path / "out", ["t2spir"]).candidates
    with pytest.raises(InputDataError, match="IMG-0001-00003.dcm: cannot be read as a DICOM"):
        first.prepare()
    with pytest.raises(InputDataError, match=r"holds 4 PNG mask\(s\) but .* holds 5 DICOM"):
        second.prepare()
    assert not list((tmp_path / "out").rglob("*.nii.gz"))  # nothing half written


def test_unevenly_spaced_slices_are_reported(tmp_path: Path) -> None:
    image, _ = lb.chaos_volumes()
    paths = lb.write_dicom_slices(tmp_path / "dicom", image)
    paths[2].unlink()  # a missing slice leaves a gap
    with pytest.raises(InputDataError, match="evenly spaced"):
        read_dicom_slices(tmp_path / "dicom")


def test_missing_tree_is_explained(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="Train_Sets"):
        scan_chaos(tmp_path, tmp_path / "out")
