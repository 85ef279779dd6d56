"""Tests of dltk_mm.io.phantoms: anatomy, intensities, grids, data set writer."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dltk_mm.errors import InputDataError
from dltk_mm.io.labels import map_labels
from dltk_mm.io.manifest import load_manifest
from dltk_mm.io.phantoms import (
    PhantomConfig,
    generate_phantom_dataset,
    make_phantom,
    organ_centroid_world,
)
from dltk_mm.io.readers import read_volume

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def phantoms() -> dict[tuple[str, int], object]:
    return {(m, s): make_phantom(m, s) for m in ("ct", "mr") for s in SEEDS}


def _arrays(phantom) -> tuple[np.ndarray, np.ndarray]:
    return sitk.GetArrayFromImage(phantom.image), sitk.GetArrayFromImage(phantom.label)


def test_anatomy_left_right_and_posterior(phantoms) -> None:
    # LPS world: +x is the patient's LEFT, +y posterior
    for key, phantom in phantoms.items():
        centre = np.asarray(phantom.body_centre)
        liver, spleen, right_kidney, left_kidney = (
            organ_centroid_world(phantom.label, organ) for organ in (1, 2, 3, 4))
        assert liver[0] < centre[0] < spleen[0], key  # liver on the patient's right
        assert liver[0] < spleen[0] - 40 * 0.5, key
        assert right_kidney[0] < centre[0] < left_kidney[0], key
        for kidney in (right_kidney, left_kidney):
            assert kidney[1] > liver[1] + 10, key  # posterior of the liver centroid
            assert 15 < abs(kidney[0] - centre[0]) < 60, key  # beside the spine
        assert right_kidney[2] < liver[2] and left_kidney[2] < spleen[2] + 20, key


def test_organ_sizes_and_labels(phantoms) -> None:
    for key, phantom in phantoms.items():
        _, label = _arrays(phantom)
        spacing = phantom.label.GetSpacing()
        volumes_ml = np.bincount(label.ravel(), minlength=5) * np.prod(spacing) / 1000.0
        assert set(np.unique(label)) == {0, 1, 2, 3, 4}, key
        liver, spleen, right_kidney, left_kidney = volumes_ml[1:]
        assert liver > 2.5 * spleen, key
        assert liver > spleen > max(right_kidney, left_kidney) > 3.0, key


def test_ct_hounsfield_ranges(phantoms) -> None:
    for seed in SEEDS:
        image, label = _arrays(phantoms[("ct", seed)])
        assert image.dtype == np.int16
        means = {organ: float(image[label == organ].mean()) for organ in range(1, 5)}
        assert 45 < means[1] < 75 and 30 < means[2] < 60, means  # liver, spleen
        assert means[1] > means[2]  # liver brighter than spleen on CT
        for kidney in (3, 4):
            assert 40 < means[kidney] < 150, means  # cortex 150 / medulla 40 mixture
        corner = image[:, :4, :4]
        assert -1060 < corner.mean() < -940  # air
        assert image.max() > 500  # bone
        assert image.min() >= -1024
        body = image[label == 0]
        fat = body[(body > -150) & (body < -60)]
        assert fat.size > 1000  # a fat layer exists


def test_mr_contrast_differs_from_ct(phantoms) -> None:
    for seed in SEEDS:
        image, label = _arrays(phantoms[("mr", seed)])
        assert image.dtype == np.float32 and image.min() >= 0.0  # magnitude (Rician) image
        means = {organ: float(image[label == organ].mean()) for organ in range(1, 5)}
        assert means[2] > 1.5 * means[1], means  # T2: spleen bright, liver darker
        assert min(means[3], means[4]) > 1.5 * means[1], means
        ct_image, ct_label = _arrays(phantoms[("ct", seed)])
        ct_means = {organ: float(ct_image[ct_label == organ].mean()) for organ in (1, 2)}
        assert ct_means[1] > ct_means[2]  # reversed on CT
        # fat (bright on T2) is brighter than the liver; air is dark
        assert np.percentile(image[label == 0], 99) > 2 * means[1]
        assert image[:, :4, :4].mean() < 0.1 * means[2]
        # smooth multiplicative bias: the liver's intensity drifts across the organ
        liver = np.argwhere(label == 1)
        values = image[label == 1]
        half = liver[:, 2] < np.median(liver[:, 2])
        assert abs(values[half].mean() - values[~half].mean()) > 1.0


def test_grids_orientations_and_determinism(phantoms) -> None:
    for (modality, _), phantom in phantoms.items():
        spacing = phantom.image.GetSpacing()
        assert spacing[0] == pytest.approx(spacing[1])
        assert spacing[2] > spacing[0]  # anisotropic, thick slices
        expected = "RAS" if modality == "ct" else "LAS"
        assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(
            phantom.image.GetDirection()) == expected
        assert phantom.label.GetDirection() == phantom.image.GetDirection()
        assert phantom.label.GetOrigin() == phantom.image.GetOrigin()
        assert 40 <= phantom.image.GetSize()[2] <= 60 or modality == "mr"
    assert phantoms[("mr", 0)].image.GetSpacing()[2] > phantoms[("ct", 0)].image.GetSpacing()[2]
    again = make_phantom("ct", 1)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(again.image),
                                  _arrays(phantoms[("ct", 1)])[0])
    assert not np.array_equal(_arrays(phantoms[("ct", 0)])[1], _arrays(phantoms[("ct", 1)])[1])
    lai = make_phantom("ct", 1, config=PhantomConfig(orientation={"ct": "LAI", "mr": "LPS"}))
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(
        lai.image.GetDirection()) == "LAI"
    # same subject, other header orientation: identical once both are put in LPS
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(sitk.DICOMOrient(lai.label, "LPS")),
        sitk.GetArrayFromImage(sitk.DICOMOrient(phantoms[("ct", 1)].label, "LPS")))


def test_speed() -> None:
    start = time.perf_counter()
    make_phantom("ct", 42)
    make_phantom("mr", 42)
    assert (time.perf_counter() - start) / 2 < 2.0


def test_generate_dataset_and_overwrite_rules(tmp_path: Path) -> None:
    out = tmp_path / "set"
    summary = generate_phantom_dataset(out, num_ct=2, num_mr=1, seed=3)
    manifest = load_manifest(summary.manifest_path, modalities=("ct", "mr"), require_labels=True)
    assert list(manifest["modality"]) == ["ct", "ct", "mr"]
    assert manifest["subject_id"].is_unique
    assert summary.manifest_path.read_text().splitlines()[0] == "subject_id,modality,image,label"
    text = summary.format()
    assert "3 phantom volumes" in text and "phantom_mr_000" in text
    marker = json.loads((out / "phantoms.json").read_text())
    assert marker["seed"] == 3 and "images/phantom_ct_001.nii.gz" in marker["files"]
    # unpaired: CT and MR subjects have different anatomy
    ct_label = read_volume(manifest["label"][0])
    mr_label = read_volume(manifest["label"][2])
    assert ct_label.geometry.orientation == "RAS" and mr_label.geometry.orientation == "LAS"
    ct_ml = np.bincount(ct_label.array.ravel(), minlength=5)[1] * ct_label.geometry.voxel_volume_mm3
    mr_ml = np.bincount(mr_label.array.ravel(), minlength=5)[1] * mr_label.geometry.voxel_volume_mm3
    assert ct_ml != pytest.approx(mr_ml, rel=1e-3)
    # rewriting a previous phantom set is allowed and removes its old files
    generate_phantom_dataset(out, num_ct=1, num_mr=1, seed=4)
    assert not (out / "images" / "phantom_ct_001.nii.gz").exists()
    assert len(load_manifest(out / "manifest.csv")) == 2
    # a foreign non-empty folder is refused unless overwrite
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(InputDataError, match="not empty") as error:
        generate_phantom_dataset(foreign, num_ct=1, num_mr=0)
    assert str(foreign) in str(error.value) and "overwrite" in str(error.value)
    generate_phantom_dataset(foreign, num_ct=1, num_mr=0, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert (foreign / "manifest.csv").is_file()


def test_labels_in_another_preset(tmp_path: Path) -> None:
    config = PhantomConfig(label_preset="btcv")
    summary = generate_phantom_dataset(tmp_path / "btcv", num_ct=1, num_mr=0, seed=9,
                                       config=config)
    raw = read_volume(load_manifest(summary.manifest_path)["label"][0]).array
    assert set(np.unique(raw)) == {0, 1, 2, 3, 6}
    reference = sitk.GetArrayFromImage(make_phantom("ct", np.random.SeedSequence(9).spawn(1)[0])
                                       .label)
    np.testing.assert_array_equal(map_labels(raw, "btcv"), reference)
    assert summary.rows[0]["organ_ml"][0] > 0


def test_labels_in_a_preset_that_knows_only_the_liver(tmp_path: Path) -> None:
    """CHAOS CT labels only the liver: the other organs are not written, their volume is 0."""
    summary = generate_phantom_dataset(tmp_path / "chaos_ct", num_ct=1, num_mr=0, seed=9,
                                       config=PhantomConfig(label_preset="chaos_ct"))
    raw = read_volume(load_manifest(summary.manifest_path)["label"][0]).array
    assert set(np.unique(raw)) == {0, 1}
    liver, *others = summary.rows[0]["organ_ml"]
    assert liver > 0 and others == [0.0, 0.0, 0.0]
