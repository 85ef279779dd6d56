"""Tests of dltk_mm.io.header_geometry: the NIfTI qform/sform rule and orthonormal axes.

Each file is written with nibabel, so that its header holds exactly the transforms a case needs;
reading goes through :mod:`dltk_mm.io.readers`, the one reading path of every command.
"""

from __future__ import annotations

from pathlib import Path

import nibabel
import numpy as np
import pytest
from absl import logging

from dltk_mm.errors import InputDataError
from dltk_mm.io.geometry import Geometry
from dltk_mm.io.header_geometry import ORTHONORMAL_TOLERANCE, orthonormalised
from dltk_mm.io.preprocessing import preprocess_volume, restore_to_source
from dltk_mm.io.readers import read_geometry, read_image, read_volume, write_volume

SHAPE_IJK = (14, 12, 10)


def _nifti(path: Path, sform: np.ndarray | None, qform: np.ndarray | None,
           sform_code: int = 1, qform_code: int = 1, data: np.ndarray | None = None) -> Path:
    data = np.zeros(SHAPE_IJK, np.int16) if data is None else data
    image = nibabel.Nifti1Image(data, None)
    image.set_sform(sform, code=sform_code if sform is not None else 0)
    image.set_qform(qform, code=qform_code if qform is not None else 0)
    nibabel.save(image, str(path))
    return path


def _affine(translation=(-10.0, -20.0, -30.0), linear=None) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = np.diag([2.0, 2.0, 2.0]) if linear is None else linear
    affine[:3, 3] = translation
    return affine


def _world_ras(geometry: Geometry, index_xyz) -> np.ndarray:
    return geometry.index_to_physical(np.asarray(index_xyz, float)) * np.array([-1.0, -1.0, 1.0])


@pytest.fixture
def warnings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    messages: list[str] = []
    monkeypatch.setattr(logging, "warning", lambda fmt, *args: messages.append(fmt % args))
    return messages


@pytest.mark.parametrize("sform_code", [1, 2, 4])
def test_disagreeing_qform_and_sform_follow_the_sform_as_nibabel(tmp_path, warnings, sform_code):
    sform = _affine(translation=(20.0, -20.0, -30.0))  # 30 mm from the qform along x
    path = _nifti(tmp_path / "a.nii.gz", sform, _affine(), sform_code=sform_code)
    expected = nibabel.load(str(path)).affine
    for geometry in (Geometry.from_image(read_image(path)), read_geometry(path),
                     read_volume(path).geometry):
        np.testing.assert_allclose(_world_ras(geometry, (3, 4, 5)),
                                   (expected @ [3, 4, 5, 1])[:3], atol=1e-4)
    assert any("qform and sform disagree" in m and "30 mm" in m and str(path) in m
               for m in warnings)


def test_without_sform_the_qform_is_used(tmp_path):
    path = _nifti(tmp_path / "q.nii.gz", None, _affine(translation=(5.0, 6.0, 7.0)))
    np.testing.assert_allclose(_world_ras(read_geometry(path), (0, 0, 0)), (5.0, 6.0, 7.0))


def test_prediction_written_with_qform_and_sform_equal_to_the_input_affine(tmp_path):
    data = np.zeros(SHAPE_IJK, np.int16)
    data[3:9, 3:9, 2:7] = 100
    sform = _affine(translation=(20.0, -20.0, -30.0))
    image = _nifti(tmp_path / "image.nii.gz", sform, _affine(), sform_code=2, data=data)
    volume = preprocess_volume(image, None, "mr")
    labels = (volume.image > volume.image.mean()).astype(np.uint8)
    written = write_volume(restore_to_source(labels, volume), tmp_path / "prediction.nii.gz")
    header = nibabel.load(str(written)).header
    expected = nibabel.load(str(image)).affine
    assert header["qform_code"] > 0 and header["sform_code"] > 0
    np.testing.assert_allclose(header.get_sform(), expected, atol=1e-4)
    np.testing.assert_allclose(header.get_qform(), expected, atol=1e-4)


def test_axes_off_orthonormal_by_1e4_are_accepted_with_a_warning(tmp_path, warnings):
    rng = np.random.default_rng(0)
    linear = 2.0 * (np.eye(3) + 1e-4 * rng.normal(size=(3, 3)))
    path = _nifti(tmp_path / "tiny.nii.gz", _affine(linear=linear), None)  # ITK refuses this
    volume = read_volume(path)
    direction = np.asarray(volume.geometry.direction).reshape(3, 3)
    np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-12)
    assert volume.array.shape == SHAPE_IJK[::-1]
    assert read_geometry(path).same_grid(volume.geometry, tol=1e-9)
    assert any(str(path) in m and "off orthonormal by" in m and "mm" in m for m in warnings)


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_sheared_axes_are_refused_with_the_fix(tmp_path, suffix):
    shear = _affine(linear=np.array([[2.0, 0.5, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]]))
    path = tmp_path / f"sheared{suffix}"
    if suffix == ".mha":  # MetaImage: ITK reads any direction matrix as it is
        geometry = Geometry((2.0, 2.0, 2.0), (0.0, 0.0, 0.0),
                            (1.0, 0.24, 0.0, 0.0, 0.97, 0.0, 0.0, 0.0, 1.0), SHAPE_IJK)
        write_volume(np.zeros(SHAPE_IJK[::-1], np.uint8), path, geometry)
    else:
        _nifti(path, shear, _affine())
    for read in (read_image, read_geometry):
        with pytest.raises(InputDataError, match="sheared") as error:
            read(path)
        assert str(path) in str(error.value) and "re-save it with an orthonormal affine" in str(
            error.value)


def test_orthonormalised_keeps_exact_axes_and_states_its_tolerance():
    geometry = Geometry.from_orientation("LAS", (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), (4, 4, 4))
    assert orthonormalised(geometry, "x.nii") is geometry
    skewed = Geometry(geometry.spacing, geometry.origin,
                      (1.0, 2 * ORTHONORMAL_TOLERANCE, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
                      geometry.size)
    with pytest.raises(InputDataError, match=f"tolerance {ORTHONORMAL_TOLERANCE:g}"):
        orthonormalised(skewed, "x.nii")
