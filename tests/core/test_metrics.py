"""Tests of dltk_mm.core.metrics with hand-made masks and a brute-force NumPy reference."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from dltk_mm.core.metrics import (
    average_symmetric_surface_distance,
    dice_per_class,
    hausdorff95,
    organ_metrics,
    surface_distance_metrics,
)

# SimpleITK (x, y, z) order: the z axis (array axis 0) has the largest voxels.
SPACING_XYZ = (0.7, 1.3, 2.5)


def _brute_force_surface_distances(a: np.ndarray, b: np.ndarray, spacing_xyz) -> np.ndarray:
    """Pooled A->B and B->A distances between 6-connected surface voxels, by exhaustive search."""
    scale = np.asarray(spacing_xyz, dtype=np.float64)[::-1]

    def surface_points(mask: np.ndarray) -> np.ndarray:
        padded = np.pad(mask, 1)
        interior = mask.copy()
        for axis, step in itertools.product(range(3), (1, -1)):
            interior &= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
        return np.argwhere(mask & ~interior) * scale

    pa, pb = surface_points(a), surface_points(b)
    pairwise = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return np.concatenate([pairwise.min(axis=1), pairwise.min(axis=0)])


def test_dice_perfect_disjoint_partial_and_absent() -> None:
    truth = np.zeros((4, 5, 6), np.uint8)
    truth[0, :2, :2] = 1  # 4 voxels of liver
    truth[1, :, :] = 2  # 30 voxels of spleen
    truth[3, 0, 0:4] = 3  # 4 voxels of right kidney
    prediction = np.zeros_like(truth)
    prediction[0, :2, :2] = 1  # liver perfect
    prediction[2, :, :] = 2  # spleen disjoint
    prediction[3, 0, 0:2] = 3  # right kidney: 2 of 4 voxels -> 2*2/(2+4)
    # left kidney (4) absent from both
    dice = dice_per_class(prediction, truth, num_classes=5)
    assert dice.shape == (4,)
    np.testing.assert_allclose(dice[:3], [1.0, 0.0, 2 * 2 / 6])
    assert math.isnan(dice[3])

    with_background = dice_per_class(prediction, truth, num_classes=5, include_background=True)
    background_truth = truth == 0
    background_prediction = prediction == 0
    expected = 2 * (background_truth & background_prediction).sum() / (
        background_truth.sum() + background_prediction.sum()
    )
    assert with_background.shape == (5,)
    np.testing.assert_allclose(with_background[0], expected)
    np.testing.assert_allclose(with_background[1:4], dice[:3])


def test_dice_class_in_one_map_only_is_zero_not_nan() -> None:
    truth = np.zeros((3, 3, 3), np.uint8)
    prediction = np.zeros_like(truth)
    prediction[1, 1, 1] = 4  # false positive of a class absent from the truth
    dice = dice_per_class(prediction, truth)
    assert dice[3] == 0.0
    assert np.isnan(dice[:3]).all()


def test_dice_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        dice_per_class(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))


def test_identical_masks_have_zero_distance() -> None:
    mask = np.zeros((8, 9, 10), bool)
    mask[2:6, 3:7, 1:9] = True
    assert hausdorff95(mask, mask, SPACING_XYZ) == 0.0
    assert average_symmetric_surface_distance(mask, mask, SPACING_XYZ) == 0.0


@pytest.mark.parametrize(("axis", "k"), [(0, 1), (0, 3), (1, 2), (2, 4)])
def test_plates_offset_by_k_voxels_along_one_axis(axis: int, k: int) -> None:
    """Two parallel one-voxel-thick plates k voxels apart: every surface distance is k*spacing."""
    a = np.zeros((10, 11, 12), bool)
    b = np.zeros_like(a)
    index_a = [slice(2, 8)] * 3
    index_a[axis] = 1
    index_b = list(index_a)
    index_b[axis] = 1 + k
    a[tuple(index_a)] = True
    b[tuple(index_b)] = True
    expected = k * SPACING_XYZ[::-1][axis]  # array axis -> (z, y, x) spacing
    assert hausdorff95(a, b, SPACING_XYZ) == pytest.approx(expected, rel=1e-5)
    assert average_symmetric_surface_distance(a, b, SPACING_XYZ) == pytest.approx(
        expected, rel=1e-5
    )


def test_assd_pools_both_directions_and_hd95_is_the_pooled_percentile() -> None:
    """A: one plate; B: that plate plus a second one k voxels away along z.

    Surface distances: A->B all 0 (N values), B->A N zeros and N values of k*sz. Pooled ASSD is
    k*sz/3 (not the mean of the directed means, k*sz/4) and the 95th percentile is k*sz.
    """
    k = 3
    a = np.zeros((9, 8, 8), bool)
    a[2, 2:6, 2:6] = True
    b = a.copy()
    b[2 + k, 2:6, 2:6] = True
    sz = SPACING_XYZ[2]
    hd95, assd = surface_distance_metrics(a, b, SPACING_XYZ)
    assert assd == pytest.approx(k * sz / 3, rel=1e-5)
    assert hd95 == pytest.approx(k * sz, rel=1e-5)
    assert average_symmetric_surface_distance(b, a, SPACING_XYZ) == pytest.approx(assd)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_cubes_offset_by_k_voxels_match_brute_force(k: int) -> None:
    a = np.zeros((14, 10, 10), bool)
    a[1:6, 2:7, 2:7] = True
    b = np.zeros_like(a)
    b[1 + k : 6 + k, 2:7, 2:7] = True
    reference = _brute_force_surface_distances(a, b, SPACING_XYZ)
    hd95, assd = surface_distance_metrics(a, b, SPACING_XYZ)
    assert hd95 == pytest.approx(np.percentile(reference, 95), rel=1e-5)
    assert assd == pytest.approx(reference.mean(), rel=1e-5)
    # Cubes k voxels apart along z: the largest surface distance is exactly k * sz.
    assert reference.max() == pytest.approx(k * SPACING_XYZ[2])
    assert hd95 <= k * SPACING_XYZ[2] + 1e-5


def test_random_masks_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    a = rng.random((7, 8, 9)) > 0.6
    b = rng.random((7, 8, 9)) > 0.7
    reference = _brute_force_surface_distances(a, b, SPACING_XYZ)
    hd95, assd = surface_distance_metrics(a, b, SPACING_XYZ)
    assert hd95 == pytest.approx(np.percentile(reference, 95), rel=1e-5)
    assert assd == pytest.approx(reference.mean(), rel=1e-5)


def test_masks_touching_the_image_border_count_border_voxels_as_surface() -> None:
    a = np.ones((3, 4, 5), bool)  # fills the image: every voxel on the outer shell is surface
    b = np.zeros_like(a)
    b[0] = True
    reference = _brute_force_surface_distances(a, b, SPACING_XYZ)
    hd95, assd = surface_distance_metrics(a, b, SPACING_XYZ)
    assert hd95 == pytest.approx(np.percentile(reference, 95), rel=1e-5)
    assert assd == pytest.approx(reference.mean(), rel=1e-5)


def test_empty_masks_give_nan_and_one_empty_mask_gives_inf() -> None:
    empty = np.zeros((4, 4, 4), bool)
    full = empty.copy()
    full[1:3, 1:3, 1:3] = True
    assert math.isnan(hausdorff95(empty, empty, SPACING_XYZ))
    assert math.isnan(average_symmetric_surface_distance(empty, empty, SPACING_XYZ))
    assert hausdorff95(full, empty, SPACING_XYZ) == math.inf
    assert average_symmetric_surface_distance(empty, full, SPACING_XYZ) == math.inf


def test_spacing_must_match_dimensions() -> None:
    mask = np.ones((2, 2, 2), bool)
    with pytest.raises(ValueError, match="spacing"):
        hausdorff95(mask, mask, (1.0, 1.0))


def test_organ_metrics_reports_every_organ() -> None:
    truth = np.zeros((12, 10, 10), np.uint8)
    truth[1:5, 2:6, 2:6] = 1
    truth[6:9, 2:6, 2:6] = 2
    truth[1:4, 7:9, 7:9] = 3
    prediction = truth.copy()
    prediction[prediction == 2] = 0
    prediction[7:10, 2:6, 2:6] = 2  # spleen shifted by 1 voxel along z
    prediction[10, 0, 0] = 4  # left kidney: false positive only
    result = organ_metrics(prediction, truth, SPACING_XYZ)
    assert list(result) == ["liver", "spleen", "right_kidney", "left_kidney"]
    assert result["liver"] == {"dice": 1.0, "hd95_mm": 0.0, "assd_mm": 0.0}
    assert result["spleen"]["dice"] == pytest.approx(2 * 32 / 96)
    reference = _brute_force_surface_distances(truth == 2, prediction == 2, SPACING_XYZ)
    assert result["spleen"]["hd95_mm"] == pytest.approx(np.percentile(reference, 95), rel=1e-5)
    assert result["spleen"]["assd_mm"] == pytest.approx(reference.mean(), rel=1e-5)
    assert result["right_kidney"]["dice"] == 1.0
    assert result["left_kidney"]["dice"] == 0.0
    assert result["left_kidney"]["hd95_mm"] == math.inf
