"""Tests of dltk_mm.io.geometry."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk

from dltk_mm.errors import InputDataError
from dltk_mm.io.geometry import Geometry, direction_from_orientation, orientation_from_direction


def _all_orientation_codes() -> list[str]:
    codes = []
    for perm in itertools.permutations([("L", "R"), ("P", "A"), ("S", "I")]):
        for letters in itertools.product(*perm):
            codes.append("".join(letters))
    return codes


@pytest.mark.parametrize("code", _all_orientation_codes())
def test_orientation_codes_agree_with_simpleitk(code: str) -> None:
    expected = sitk.DICOMOrientImageFilter.GetDirectionCosinesFromOrientation(code)
    assert np.allclose(direction_from_orientation(code), expected)
    assert orientation_from_direction(expected) == code
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(
        direction_from_orientation(code)) == code


def test_named_orientations() -> None:
    assert direction_from_orientation("LPS") == (1, 0, 0, 0, 1, 0, 0, 0, 1)
    assert np.allclose(np.diag(np.reshape(direction_from_orientation("RAS"), (3, 3))),
                       [-1, -1, 1])
    assert np.allclose(np.diag(np.reshape(direction_from_orientation("LAS"), (3, 3))),
                       [1, -1, 1])
    assert np.allclose(np.diag(np.reshape(direction_from_orientation("LAI"), (3, 3))),
                       [1, -1, -1])


@pytest.mark.parametrize("bad", ["LP", "LLS", "XYZ", "LPSX", "RLS"])
def test_invalid_orientation_code(bad: str) -> None:
    with pytest.raises(InputDataError, match="orientation"):
        direction_from_orientation(bad)


def _oblique_image() -> sitk.Image:
    image = sitk.Image([7, 5, 3], sitk.sitkFloat32)
    image.SetSpacing([0.7, 1.3, 4.0])
    image.SetOrigin([-12.5, 40.0, 101.0])
    rotation = sitk.VersorTransform((0.2, -0.5, 1.0), 0.4).GetMatrix()
    flip = np.diag([-1.0, 1.0, -1.0])
    image.SetDirection(tuple((np.reshape(rotation, (3, 3)) @ flip).ravel()))
    return image


def test_from_image_apply_to_and_json_round_trip() -> None:
    image = _oblique_image()
    geometry = Geometry.from_image(image)
    assert geometry.size == (7, 5, 3)
    assert geometry.shape == (3, 5, 7)
    restored = Geometry.from_json(geometry.to_json())
    assert restored == geometry
    assert Geometry.from_dict(geometry.to_dict()) == geometry
    blank = sitk.Image([7, 5, 3], sitk.sitkUInt8)
    restored.apply_to(blank)
    assert blank.GetOrigin() == image.GetOrigin()
    assert np.allclose(blank.GetDirection(), image.GetDirection())
    assert np.allclose(blank.GetSpacing(), image.GetSpacing())
    with pytest.raises(InputDataError, match="size"):
        geometry.apply_to(sitk.Image([2, 2, 2], sitk.sitkUInt8))


def test_index_physical_mapping_matches_simpleitk() -> None:
    image = _oblique_image()
    geometry = Geometry.from_image(image)
    rng = np.random.default_rng(0)
    indices = rng.uniform(-1, 7, (20, 3))
    points = geometry.index_to_physical(indices)
    for index, point in zip(indices, points, strict=True):
        expected = image.TransformContinuousIndexToPhysicalPoint(index.tolist())
        assert np.allclose(point, expected, atol=1e-9)
    assert np.allclose(geometry.physical_to_index(points), indices)
    assert np.allclose(geometry.index_to_physical([2, 3, 1]),
                       image.TransformIndexToPhysicalPoint([2, 3, 1]))


def test_world_bounds_of_ras_grid() -> None:
    geometry = Geometry.from_orientation("RAS", (2.0, 2.0, 5.0), (10.0, 20.0, 30.0), (4, 3, 2))
    low, high = geometry.world_bounds()
    # x and y decrease with the index: voxel 0 is the largest x/y, edges half a voxel further
    assert np.allclose(high, [11.0, 21.0, 37.5])
    assert np.allclose(low, [10.0 - 3 * 2.0 - 1.0, 20.0 - 2 * 2.0 - 1.0, 27.5])
    assert geometry.orientation == "RAS"
    assert geometry.physical_extent_mm == (8.0, 6.0, 10.0)


def test_same_grid_tolerance_and_differences() -> None:
    base = Geometry((1.0, 1.0, 3.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (10, 10, 5))
    nearly = Geometry((1.0 + 1e-6, 1.0, 3.0), (1e-5, 0.0, 0.0), base.direction, base.size)
    assert base.same_grid(nearly)
    cases = {
        "size": Geometry(base.spacing, base.origin, base.direction, (10, 10, 6)),
        "spacing": Geometry((1.0, 1.0, 3.1), base.origin, base.direction, base.size),
        "origin": Geometry(base.spacing, (0.0, 0.5, 0.0), base.direction, base.size),
        "direction": Geometry(base.spacing, base.origin, direction_from_orientation("RAS"),
                              base.size),
    }
    for word, other in cases.items():
        differences = base.grid_differences(other)
        assert not base.same_grid(other)
        assert len(differences) == 1 and differences[0].startswith(word), differences


def test_geometry_validation() -> None:
    with pytest.raises(InputDataError, match="positive"):
        Geometry((0.0, 1.0, 1.0), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (2, 2, 2))
    with pytest.raises(InputDataError, match="9 direction"):
        Geometry((1.0, 1.0, 1.0), (0, 0, 0), (1, 0, 0, 0), (2, 2, 2))
    with pytest.raises(InputDataError, match="3D"):
        Geometry.from_image(sitk.Image([4, 4], sitk.sitkUInt8))
