"""Tests of dltk_mm.io.preprocessing on phantoms (4 orientations) and on the real volumes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from dltk_mm.errors import ConfigurationError, InputDataError
from dltk_mm.io.geometry import Geometry
from dltk_mm.io.labels import LabelPreset, get_preset, write_preset_file
from dltk_mm.io.manifest import load_manifest
from dltk_mm.io.phantoms import PhantomConfig, generate_phantom_dataset
from dltk_mm.io.preprocessing import (
    CropBox,
    PreprocessedVolume,
    PreprocessingConfig,
    cache_key,
    preprocess_manifest,
    preprocess_volume,
    restore_probabilities_to_source,
    restore_to_source,
)
from dltk_mm.io.readers import read_volume, write_volume

ORGANS = (1, 2, 3, 4)


def _world_centroids(label_zyx: np.ndarray, geometry: Geometry) -> dict[int, np.ndarray]:
    centroids = {}
    for organ in ORGANS:
        indices = np.argwhere(label_zyx == organ)
        if len(indices):
            centroids[organ] = geometry.index_to_physical(indices.mean(axis=0)[::-1])
    return centroids


def _organ_volumes_ml(label_zyx: np.ndarray, geometry: Geometry) -> dict[int, float]:
    counts = np.bincount(label_zyx.ravel(), minlength=5)
    return {organ: counts[organ] * geometry.voxel_volume_mm3 / 1000.0 for organ in ORGANS}


def _volume_tolerance_ml(volume_ml: float, spacing_mm: float = 2.0) -> float:
    """Nearest-neighbour resampling moves a surface by up to half a voxel: allow 0.4 of a voxel
    layer over the surface of the equal-volume sphere."""
    surface_mm2 = (36.0 * np.pi) ** (1.0 / 3.0) * (volume_ml * 1000.0) ** (2.0 / 3.0)
    return 0.4 * spacing_mm * surface_mm2 / 1000.0


def _dice(a: np.ndarray, b: np.ndarray, organ: int) -> float:
    a, b = a == organ, b == organ
    return 2.0 * np.sum(a & b) / (np.sum(a) + np.sum(b))


@pytest.fixture(scope="module")
def phantom_manifest(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Phantoms in the four orientations LAS, LAI, RAS and LPS (CT and MR)."""
    root = tmp_path_factory.mktemp("phantoms")
    frames = []
    for name, (ct_code, mr_code) in {"a": ("RAS", "LAS"), "b": ("LAI", "LPS")}.items():
        config = PhantomConfig(orientation={"ct": ct_code, "mr": mr_code})
        summary = generate_phantom_dataset(root / name, num_ct=1, num_mr=1, seed=11 + len(name)
                                           + ord(name), config=config)
        frame = load_manifest(summary.manifest_path)
        frame["subject_id"] = name + "_" + frame["subject_id"]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def phantom_volumes(phantom_manifest: pd.DataFrame) -> list[PreprocessedVolume]:
    return preprocess_manifest(phantom_manifest, PreprocessingConfig())


@pytest.fixture(scope="module")
def real_volumes(real_data_dir: Path) -> list[PreprocessedVolume]:
    manifest = load_manifest(real_data_dir / "manifest.csv", require_labels=True)
    return preprocess_manifest(manifest, PreprocessingConfig(label_preset="identity"))


def _check_world_positions(volume: PreprocessedVolume, tolerance_mm: float) -> None:
    source = read_volume(volume.label_path)
    assert source.geometry.same_grid(volume.source_geometry)
    before = _world_centroids(source.array, source.geometry)
    after = _world_centroids(volume.label, volume.geometry)
    assert set(before) == set(after) == set(ORGANS), volume.subject_id
    for organ in ORGANS:
        distance = np.linalg.norm(before[organ] - after[organ])
        assert distance < tolerance_mm, (volume.subject_id, organ, distance)


def _check_grid(volume: PreprocessedVolume, spacing: float = 2.0) -> None:
    assert volume.image.dtype == np.float32 and volume.label.dtype == np.uint8
    assert volume.image.shape == volume.label.shape == volume.geometry.shape
    assert volume.geometry.spacing == (spacing,) * 3
    assert volume.geometry.direction == (1, 0, 0, 0, 1, 0, 0, 0, 1)
    assert volume.geometry.orientation == "LPS"
    # a voxel of the cropped grid is the voxel crop.start + index of the resampled grid
    resampled = sitk.Image(list(volume.resampled_geometry.size), sitk.sitkUInt8)
    volume.resampled_geometry.apply_to(resampled)
    cropped = volume.geometry.image_from_array(volume.label)
    for index in ([0, 0, 0], [3, 1, 2], [s - 1 for s in volume.geometry.size]):
        full_index = [i + s for i, s in zip(index, volume.crop.start[::-1], strict=True)]
        assert np.allclose(cropped.TransformIndexToPhysicalPoint(index),
                           resampled.TransformIndexToPhysicalPoint(full_index))
    # the resampled grid covers the source's physical extent, centred on it
    low, high = volume.source_geometry.world_bounds()
    new_low, new_high = volume.resampled_geometry.world_bounds()
    assert np.allclose((low + high) / 2, (new_low + new_high) / 2, atol=1e-6)
    assert np.all(new_high - new_low >= high - low - 1e-6)
    assert np.all(new_high - new_low < high - low + spacing)


def _check_crop(volume: PreprocessedVolume) -> None:
    uncropped = preprocess_volume(volume.image_path, volume.label_path, volume.modality,
                                  PreprocessingConfig(crop_to_organs=False))
    assert uncropped.geometry == volume.resampled_geometry
    full_counts = np.bincount(uncropped.label.ravel(), minlength=5)
    crop_counts = np.bincount(volume.label.ravel(), minlength=5)
    np.testing.assert_array_equal(full_counts[1:], crop_counts[1:])
    np.testing.assert_array_equal(uncropped.label[volume.crop.slices()], volume.label)
    # margin 10 mm = 5 voxels: no organ on a crop face unless the face is the volume's own border
    shape = volume.resampled_geometry.shape
    for axis in range(3):
        first = np.take(volume.label, 0, axis=axis)
        last = np.take(volume.label, -1, axis=axis)
        if volume.crop.start[axis] > 0:
            assert not first.any(), (volume.subject_id, axis)
        if volume.crop.stop[axis] < shape[axis]:
            assert not last.any(), (volume.subject_id, axis)


def _check_restore(volume: PreprocessedVolume, min_dice: float = 0.9) -> None:
    source = read_volume(volume.label_path)
    restored = restore_to_source(volume.label, volume)
    assert restored.GetSize() == source.geometry.size
    assert restored.GetSpacing() == source.geometry.spacing
    assert restored.GetOrigin() == source.geometry.origin
    assert restored.GetDirection() == source.geometry.direction
    assert restored.GetPixelID() == sitk.sitkUInt8
    back = sitk.GetArrayFromImage(restored)
    for organ in ORGANS:
        assert _dice(back, source.array, organ) > min_dice, (volume.subject_id, organ)


# ------------------------------------------------------------------------------------ phantoms


def test_phantoms_cover_four_orientations(phantom_volumes: list[PreprocessedVolume]) -> None:
    assert {v.source_geometry.orientation for v in phantom_volumes} == {"LAS", "LAI", "RAS",
                                                                        "LPS"}


def _assert_organ_volumes_preserved(volumes: list[PreprocessedVolume]) -> None:
    """Every organ's physical volume survives resampling and cropping within tolerance."""
    for volume in volumes:
        source = read_volume(volume.label_path)
        before = _organ_volumes_ml(source.array, source.geometry)
        after = _organ_volumes_ml(volume.label, volume.geometry)
        for organ in ORGANS:
            assert abs(after[organ] - before[organ]) <= _volume_tolerance_ml(before[organ]), \
                (volume.subject_id, organ, before[organ], after[organ])


def test_phantom_grids_and_world_positions(phantom_volumes: list[PreprocessedVolume]) -> None:
    for volume in phantom_volumes:
        _check_grid(volume)
        _check_world_positions(volume, tolerance_mm=2.0)


def test_phantom_organ_volumes_preserved(phantom_volumes: list[PreprocessedVolume]) -> None:
    _assert_organ_volumes_preserved(phantom_volumes)


def test_phantom_crop_keeps_every_organ_voxel(phantom_volumes: list[PreprocessedVolume]) -> None:
    for volume in phantom_volumes:
        _check_crop(volume)
        # phantoms have body around the organs: the 5-voxel margin is there on every side
        label = volume.label
        for axis in range(3):
            present = np.nonzero(np.any(label > 0, axis=tuple(a for a in range(3) if a != axis)))
            if volume.crop.start[axis] > 0:
                assert present[0].min() == 5
            if volume.crop.stop[axis] < volume.resampled_geometry.shape[axis]:
                assert present[0].max() == label.shape[axis] - 6


def test_phantom_restore_to_source(phantom_volumes: list[PreprocessedVolume]) -> None:
    for volume in phantom_volumes:
        _check_restore(volume)


def test_restore_probabilities(phantom_volumes: list[PreprocessedVolume]) -> None:
    volume = phantom_volumes[0]
    one_hot = np.eye(5, dtype=np.float32)[volume.label]
    restored = restore_probabilities_to_source(one_hot, volume)
    assert restored.GetNumberOfComponentsPerPixel() == 5
    assert restored.GetSize() == volume.source_geometry.size
    assert restored.GetDirection() == volume.source_geometry.direction
    probabilities = sitk.GetArrayFromImage(restored)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-4)
    source = read_volume(volume.label_path).array
    labels = probabilities.argmax(axis=-1)
    for organ in ORGANS:
        assert _dice(labels, source, organ) > 0.9
    with pytest.raises(InputDataError, match="does not match"):
        restore_to_source(volume.label[1:], volume)
    with pytest.raises(InputDataError, match=r"\(z, y, x, C\)"):
        restore_probabilities_to_source(one_hot[..., 0], volume)


def test_ct_clip_and_normalisation(tmp_path: Path, phantom_manifest: pd.DataFrame) -> None:
    row = phantom_manifest[phantom_manifest["modality"] == "ct"].iloc[0]
    source = read_volume(row["image"])
    padded = source.array.copy()
    padded[:, :8, :] = -2048  # scanner padding outside the field of view
    image_path = write_volume(padded, tmp_path / "padded_ct.nii.gz", source.geometry)
    for crop in (True, False):
        config = PreprocessingConfig(crop_to_organs=crop, normalisation_region="organ_crop")
        volume = preprocess_volume(image_path, row["label"], "ct", config, "padded")
        stats = volume.intensity_stats
        assert stats["ct_clip_min"] == -1000.0
        assert float(volume.image.mean()) == pytest.approx(0.0, abs=1e-4)
        assert float(volume.image.std()) == pytest.approx(1.0, abs=1e-4)
        hounsfield = volume.image.astype(np.float64) * stats["std"] + stats["mean"]
        assert hounsfield.min() >= -1000.0 - 1e-2
        if not crop:
            assert hounsfield.min() == pytest.approx(-1000.0, abs=1e-2)
    mr = phantom_manifest[phantom_manifest["modality"] == "mr"].iloc[0]
    mr_volume = preprocess_volume(mr["image"], mr["label"], "mr", PreprocessingConfig(
        crop_to_organs=False))
    assert "ct_clip_min" not in mr_volume.intensity_stats
    assert float(mr_volume.image.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(mr_volume.image.std()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("modality", ["ct", "mr"])
def test_field_of_view_normalisation_matches_prediction_time(
    phantom_manifest: pd.DataFrame, modality: str
) -> None:
    """Training volumes (cropped) hold exactly the intensities prediction (uncropped) computes."""
    row = phantom_manifest[phantom_manifest["modality"] == modality].iloc[0]
    config = PreprocessingConfig()
    assert config.normalisation_region == "field_of_view"
    cropped = preprocess_volume(row["image"], row["label"], modality, config)
    whole = preprocess_volume(row["image"], None, modality, config)
    assert cropped.image.shape != whole.image.shape
    np.testing.assert_allclose(cropped.image, whole.image[cropped.crop.slices()], atol=1e-5)
    assert float(whole.image.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(whole.image.std()) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ConfigurationError, match="normalisation_region"):
        PreprocessingConfig(normalisation_region="body")


def test_per_slice_normalisation(phantom_manifest: pd.DataFrame) -> None:
    for row in phantom_manifest.to_dict("records")[:2]:
        config = PreprocessingConfig(normalisation="per_slice", crop_to_organs=False)
        volume = preprocess_volume(row["image"], row["label"], row["modality"], config)
        means = volume.image.mean(axis=(1, 2))
        stds = volume.image.std(axis=(1, 2))
        np.testing.assert_allclose(means, 0.0, atol=1e-4)
        np.testing.assert_allclose(stds, 1.0, atol=1e-3)
        assert len(volume.intensity_stats["slice_mean"]) == volume.image.shape[0]


def test_prediction_without_label_is_not_cropped(phantom_manifest: pd.DataFrame) -> None:
    row = phantom_manifest.iloc[1]
    volume = preprocess_volume(row["image"], None, row["modality"], PreprocessingConfig())
    assert volume.label is None
    assert volume.crop == CropBox((0, 0, 0), volume.resampled_geometry.shape)
    prediction = np.zeros(volume.image.shape, np.uint8)
    prediction[10:20, 10:20, 10:20] = 2
    restored = restore_to_source(prediction, volume)
    assert restored.GetSize() == volume.source_geometry.size
    assert sitk.GetArrayFromImage(restored).max() == 2


def test_configurable_spacing(phantom_manifest: pd.DataFrame) -> None:
    row = phantom_manifest.iloc[0]
    volume = preprocess_volume(row["image"], row["label"], row["modality"],
                               PreprocessingConfig(spacing_mm=3.0, crop_margin_mm=0.0))
    _check_grid(volume, spacing=3.0)
    label = volume.label
    for axis in range(3):  # margin 0: organs touch every crop face
        assert np.take(label, 0, axis=axis).any() and np.take(label, -1, axis=axis).any()


# ------------------------------------------------------------------------------------ bad input


def test_bad_inputs_raise_clear_errors(tmp_path: Path, phantom_manifest: pd.DataFrame) -> None:
    row = phantom_manifest.iloc[0]
    source = read_volume(row["image"])
    label = read_volume(row["label"])
    config = PreprocessingConfig()
    missing = tmp_path / "missing.nii.gz"
    with pytest.raises(InputDataError, match="not found") as error:
        preprocess_volume(missing, None, "ct", config)
    assert str(missing) in str(error.value)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not an image")
    with pytest.raises(InputDataError, match="broken.nii.gz"):
        preprocess_volume(broken, None, "ct", config)
    nan_image = source.array.astype(np.float32)
    nan_image[3, 3, 3] = np.nan
    nan_path = write_volume(nan_image, tmp_path / "nan_image.nii.gz", source.geometry)
    with pytest.raises(InputDataError, match="NaN") as error:
        preprocess_volume(nan_path, row["label"], "ct", config)
    assert "nan_image.nii.gz" in str(error.value)
    shifted = Geometry(label.geometry.spacing, tuple(np.add(label.geometry.origin, 5.0)),
                       label.geometry.direction, label.geometry.size)
    shifted_path = write_volume(label.array, tmp_path / "shifted_label.nii.gz", shifted)
    with pytest.raises(InputDataError, match="different grids") as error:
        preprocess_volume(row["image"], shifted_path, "ct", config)
    assert "shifted_label.nii.gz" in str(error.value) and "origin" in str(error.value)
    bad_labels = label.array.copy()
    bad_labels[0, 0, :3] = (7, 8, 7)
    bad_path = write_volume(bad_labels, tmp_path / "bad_labels.nii.gz", label.geometry)
    with pytest.raises(InputDataError, match=r"\[7, 8\]") as error:
        preprocess_volume(row["image"], bad_path, "ct", config)
    assert "bad_labels.nii.gz" in str(error.value)
    lenient = preprocess_volume(row["image"], bad_path, "ct",
                                PreprocessingConfig(allow_unknown_labels=True))
    assert lenient.label.max() == 4


def test_config_validation_and_json_round_trip() -> None:
    config = PreprocessingConfig(spacing_mm=1.5, normalisation="per_slice", label_preset="btcv",
                                 crop_margin_mm=4.0, ct_clip_min=None)
    assert PreprocessingConfig.from_json(config.to_json()) == config
    with pytest.raises(ConfigurationError, match="normalisation"):
        PreprocessingConfig(normalisation="global")
    with pytest.raises(ConfigurationError, match="spacing_mm"):
        PreprocessingConfig(spacing_mm=0.0)
    with pytest.raises(ConfigurationError, match="label preset"):
        PreprocessingConfig(label_preset="nope")
    with pytest.raises(ConfigurationError, match="unknown preprocessing option"):
        PreprocessingConfig.from_dict({"spacing": 2.0})


# ------------------------------------------------------------------------------------ cache


def test_cache_hit_miss_and_invalidation(tmp_path: Path, phantom_manifest: pd.DataFrame,
                                         caplog: pytest.LogCaptureFixture) -> None:
    frame = phantom_manifest.iloc[:2].copy()
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for column in ("image", "label"):  # private copies: this test touches them
        copies = []
        for path in frame[column]:
            target = inputs / f"{column}_{Path(path).name}"
            target.write_bytes(Path(path).read_bytes())
            copies.append(str(target))
        frame[column] = copies
    before = {p: os.stat(p).st_mtime_ns for p in list(frame["image"]) + list(frame["label"])}
    cache = tmp_path / "cache"
    config = PreprocessingConfig()
    calls = []
    first = preprocess_manifest(frame, config, cache, progress=lambda d, t, v: calls.append(
        (d, t, v.subject_id, v.from_cache)))
    assert [c[3] for c in calls] == [False, False] and calls[-1][:2] == (2, 2)
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 4 and sum(f.endswith(".npz") for f in files) == 2
    assert not any(f.startswith(".") for f in files)  # no temporary files left
    metadata = json.loads(next(cache.glob("*.json")).read_text())
    assert {"geometry", "source_geometry", "crop", "provenance", "config", "cache_key",
            "dltk_mm_version"} <= set(metadata)
    assert metadata["provenance"]["image"]["size"] > 0
    assert "mtime_ns" in metadata["provenance"]["image"]
    with caplog.at_level("INFO", logger="absl"):
        second = preprocess_manifest(frame, config, cache)
    assert all(v.from_cache for v in second)
    assert sum("cache hit" in r.getMessage() for r in caplog.records) == 2
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.label, b.label)
        assert a.geometry == b.geometry and a.source_geometry == b.source_geometry
        assert a.crop == b.crop and a.config == b.config
        assert a.resampled_geometry == b.resampled_geometry
    # restore works from a cached volume too
    assert restore_to_source(second[0].label, second[0]).GetSize() == \
        first[0].source_geometry.size
    # another option -> miss; a touched input -> miss; inputs never written by the cache
    other = preprocess_manifest(frame, PreprocessingConfig(crop_margin_mm=4.0), cache)
    assert not any(v.from_cache for v in other)
    assert before == {p: os.stat(p).st_mtime_ns for p in before}
    os.utime(frame["image"].iloc[0], ns=(before[frame["image"].iloc[0]] + 10**9,) * 2)
    third = preprocess_manifest(frame, config, cache)
    assert [v.from_cache for v in third] == [False, True]


def test_cache_recovers_from_corrupt_entry(tmp_path: Path, phantom_manifest: pd.DataFrame) -> None:
    frame = phantom_manifest.iloc[:1]
    cache = tmp_path / "cache"
    preprocess_manifest(frame, PreprocessingConfig(), cache)
    next(cache.glob("*.npz")).write_bytes(b"corrupt")
    again = preprocess_manifest(frame, PreprocessingConfig(), cache)
    assert not again[0].from_cache
    assert preprocess_manifest(frame, PreprocessingConfig(), cache)[0].from_cache


def test_missing_input_in_manifest_run(tmp_path: Path) -> None:
    frame = pd.DataFrame({"subject_id": ["x"], "modality": ["ct"],
                          "image": [str(tmp_path / "gone.nii.gz")], "label": [None]})
    with pytest.raises(InputDataError, match="gone.nii.gz"):
        preprocess_manifest(frame, PreprocessingConfig(), tmp_path / "cache")


# ------------------------------------------------------------------------------------ real data


def test_real_orientations_and_world_positions(real_volumes: list[PreprocessedVolume]) -> None:
    assert {v.source_geometry.orientation for v in real_volumes} == {"LAS", "LAI", "RAS", "LPS"}
    for volume in real_volumes:
        _check_grid(volume)
        _check_world_positions(volume, tolerance_mm=2.0)


def test_real_organ_volumes_and_crop(real_volumes: list[PreprocessedVolume]) -> None:
    _assert_organ_volumes_preserved(real_volumes)
    for volume in real_volumes[::3]:  # a few (each one preprocesses again)
        _check_crop(volume)


def test_real_restore_to_source(real_volumes: list[PreprocessedVolume]) -> None:
    for volume in real_volumes:
        _check_restore(volume)


def test_real_intensities(real_volumes: list[PreprocessedVolume]) -> None:
    for volume in real_volumes:
        # z-scored over the whole field of view, then cropped to the organs
        assert np.isfinite(volume.image).all()
        assert abs(float(volume.image.mean())) < 2.0 and 0.1 < float(volume.image.std()) < 10.0
        if volume.modality == "ct":
            hounsfield = volume.image * volume.intensity_stats["std"] + \
                volume.intensity_stats["mean"]
            assert hounsfield.min() >= -1000.0 - 1e-2
            liver = np.median(hounsfield[volume.label == 1])
            assert 0.0 < liver < 200.0, (volume.subject_id, liver)  # soft tissue in HU


# ------------------------------------------------------------------------------ per-row presets


def _relabelled(frame: pd.DataFrame, presets: dict[str, str], folder: Path) -> pd.DataFrame:
    """Copies of the rows whose label files are written in each modality's preset ids."""
    folder.mkdir()
    rows = frame.copy()
    labels = []
    for modality, path in zip(rows["modality"], rows["label"], strict=True):
        source = read_volume(path)
        inverse = get_preset(presets[modality]).inverse()
        ids = np.zeros(256, np.uint8)
        for project_id, preset_id in inverse.items():
            ids[project_id] = preset_id
        target = folder / f"{modality}_{Path(path).name}"
        write_volume(ids[source.array], target, source.geometry)
        labels.append(str(target))
    rows["label"] = labels
    return rows


def test_label_preset_column_mixes_btcv_ct_and_chaos_mr(tmp_path: Path,
                                                        phantom_manifest: pd.DataFrame) -> None:
    originals = pd.concat([phantom_manifest[phantom_manifest["modality"] == m].iloc[:1]
                           for m in ("ct", "mr")], ignore_index=True)
    rows = _relabelled(originals, {"ct": "btcv", "mr": "chaos"}, tmp_path / "labels")
    assert set(np.unique(read_volume(rows["label"][1]).array)) == {0, 63, 126, 189, 252}
    config = PreprocessingConfig()  # identity: only the column makes these labels readable
    with pytest.raises(InputDataError, match="label"):
        preprocess_manifest(rows, config)
    rows["label_preset"] = ["btcv", "CHAOS"]
    cache = tmp_path / "cache"
    mixed = preprocess_manifest(rows, config, cache)
    expected = preprocess_manifest(originals, config)
    for volume, reference in zip(mixed, expected, strict=True):
        np.testing.assert_array_equal(volume.label, reference.label)
        np.testing.assert_array_equal(volume.image, reference.image)
        assert set(np.unique(volume.label)) == {0, 1, 2, 3, 4}
    assert [v.config.label_preset for v in mixed] == ["btcv", "chaos"]
    assert all(v.from_cache for v in preprocess_manifest(rows, config, cache))
    # The effective preset is part of the cache key: the same CT row read with "amos" (same ids
    # for these organs) is a miss; an empty cell with the configured preset "btcv" is a hit.
    ct = rows.iloc[:1].copy()
    ct["label_preset"] = ["amos"]
    assert not preprocess_manifest(ct, config, cache)[0].from_cache
    ct["label_preset"] = [""]
    hit = preprocess_manifest(ct, PreprocessingConfig(label_preset="btcv"), cache)[0]
    assert hit.from_cache and hit.config.label_preset == "btcv"


def test_unknown_label_preset_in_a_row(tmp_path: Path, phantom_manifest: pd.DataFrame) -> None:
    rows = phantom_manifest.iloc[:1].copy()
    rows["label_preset"] = ["btvc"]
    with pytest.raises(InputDataError, match="unknown label preset 'btvc'.*'btcv'.*'chaos'"):
        preprocess_manifest(rows, PreprocessingConfig(), tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_default_cache_dir_is_beside_the_manifest(tmp_path: Path) -> None:
    from dltk_mm.io.preprocessing import default_cache_dir

    assert default_cache_dir(tmp_path / "data" / "manifest.csv") == (
        tmp_path / "data" / ".dltk_mm_cache").resolve()


def test_a_nan_in_a_float_label_is_refused_naming_the_file(tmp_path: Path) -> None:
    import nibabel

    geometry = Geometry.from_orientation("LPS", (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (12, 12, 12))
    image = write_volume(np.random.default_rng(0).normal(size=(12, 12, 12)).astype(np.float32),
                         tmp_path / "image.nii.gz", geometry)
    label = np.zeros((12, 12, 12), np.float32)
    label[3:8, 3:8, 3:8] = 1.0
    label[0, 0, 0] = np.nan  # SimpleITK's NIfTI reader turns it into 0
    label_path = tmp_path / "label.nii.gz"
    nibabel.save(nibabel.Nifti1Image(label, np.diag([-2.0, -2.0, 2.0, 1.0])), str(label_path))
    with pytest.raises(InputDataError, match="NaN") as error:
        preprocess_volume(image, label_path, "ct")
    assert str(label_path) in str(error.value)


def test_cache_key_follows_the_content_of_a_label_preset_file(
        tmp_path: Path, phantom_manifest: pd.DataFrame) -> None:
    row = phantom_manifest.iloc[0]
    preset_path = tmp_path / "kidneys.labels.json"
    ids = frozenset(range(5))
    write_preset_file(LabelPreset("kidneys", {1: 1, 2: 2, 3: 3, 4: 4}, ids), preset_path)
    config = PreprocessingConfig(label_preset=str(preset_path))
    first, _ = cache_key(row["image"], row["label"], "ct", "s", config)
    assert cache_key(row["image"], row["label"], "ct", "s", config)[0] == first
    # The same path with the kidneys swapped: a stale cache entry would train on wrong sides.
    write_preset_file(LabelPreset("kidneys", {1: 1, 2: 2, 3: 4, 4: 3}, ids), preset_path)
    assert cache_key(row["image"], row["label"], "ct", "s", config)[0] != first
