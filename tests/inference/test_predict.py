"""Tests of dltk_mm.inference.predict: whole-volume prediction in each input's own geometry."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import SimpleITK as sitk  # noqa: E402, N813

from dltk_mm.errors import ConfigurationError, InputDataError  # noqa: E402
from dltk_mm.inference.predict import (  # noqa: E402
    KerasPredictor,
    PredictionInput,
    inputs_from_manifest,
    inputs_from_paths,
    plan_outputs,
    predict_files,
    predict_volume,
    prediction_preprocessing,
    subject_id_from_path,
)
from dltk_mm.io.geometry import Geometry  # noqa: E402
from dltk_mm.io.preprocessing import PreprocessingConfig, preprocess_volume  # noqa: E402
from dltk_mm.networks import build_multistream  # noqa: E402

PATCH = (16, 16, 16)


@pytest.fixture(scope="module")
def predictor() -> KerasPredictor:
    model = build_multistream("v4", modalities=("mr", "ct"), filters=(2, 4, 4, 4, 8),
                              num_res_units=1)
    # 4 mm keeps the preprocessed grids (and so the tests) tiny; only geometry matters here.
    return KerasPredictor(model, PreprocessingConfig(spacing_mm=4.0), patch_size=PATCH)


def _write_volume(path: Path, orientation: str, spacing, origin, size, seed: int = 0,
                  ct: bool = True) -> Geometry:
    geometry = Geometry.from_orientation(orientation, spacing, origin, size)
    rng = np.random.default_rng(seed)
    array = rng.normal(size=geometry.shape)
    array = (array * 300.0 - 200.0).astype(np.int16) if ct else (array * 50 + 300).astype(
        np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(geometry.image_from_array(array), str(path))
    return geometry


@pytest.mark.parametrize("orientation", ["LAI", "RAS"])
def test_label_map_has_the_inputs_geometry(predictor, tmp_path, orientation) -> None:
    image = tmp_path / "in" / f"case_{orientation}.nii.gz"
    geometry = _write_volume(image, orientation, (1.5, 2.5, 3.3), (12.5, -40.0, 77.0),
                             (23, 17, 11))
    records = predict_files(predictor, inputs_from_paths([image], "ct"), tmp_path / "out")
    assert records[0].labels == tmp_path / "out" / f"case_{orientation}.nii.gz"
    written = sitk.ReadImage(str(records[0].labels))
    assert written.GetPixelID() == sitk.sitkUInt8
    assert Geometry.from_image(written).grid_differences(geometry, tol=1e-5) == []
    assert set(np.unique(sitk.GetArrayViewFromImage(written))) <= set(range(5))
    source, output = nib.load(image), nib.load(records[0].labels)
    assert output.shape == source.shape
    np.testing.assert_allclose(output.affine, source.affine, atol=1e-4)


def test_labels_are_the_argmax_resampled_with_nearest_neighbour(predictor, tmp_path) -> None:
    # An input already on the preprocessed grid (LPS, 4 mm, sizes fitting): the restored labels
    # must equal the argmax of the sliding-window probabilities voxel by voxel.
    image = tmp_path / "grid.nii.gz"
    geometry = _write_volume(image, "LPS", (4.0, 4.0, 4.0), (0.0, 0.0, 0.0), (16, 16, 16),
                             ct=False)
    prediction = predict_volume(predictor, image, "mr", overlap=0.0, with_probabilities=True)
    volume = preprocess_volume(image, None, "mr", prediction_preprocessing(
        predictor.preprocessing))
    probabilities = predictor.predict_probabilities(volume.image[np.newaxis, ..., np.newaxis],
                                                    "mr")[0]
    labels = sitk.GetArrayFromImage(prediction.labels)
    np.testing.assert_array_equal(labels, np.argmax(probabilities, axis=-1))
    restored = sitk.GetArrayFromImage(prediction.probabilities)
    np.testing.assert_allclose(restored, probabilities, atol=1e-5)
    assert Geometry.from_image(prediction.labels).same_grid(geometry)


def test_probability_maps_are_4d_on_the_input_grid(predictor, tmp_path) -> None:
    image = tmp_path / "prob_case.nii.gz"
    _write_volume(image, "LAS", (1.2, 1.2, 4.0), (-3.0, 5.0, -60.0), (30, 26, 9))
    records = predict_files(predictor, inputs_from_paths([image], "ct"), tmp_path / "out",
                            save_probabilities=True, weighting="gaussian")
    path = records[0].probabilities
    assert path == tmp_path / "out" / "probabilities" / "prob_case.nii.gz"
    maps, source = nib.load(path), nib.load(image)
    assert maps.shape == (*source.shape, 5)
    np.testing.assert_allclose(maps.affine, source.affine, atol=1e-4)
    data = np.asarray(maps.dataobj, dtype=np.float32)
    np.testing.assert_allclose(data.sum(axis=-1), 1.0, atol=1e-4)


def test_refuses_existing_outputs_unless_overwrite(predictor, tmp_path) -> None:
    image = tmp_path / "s1.nii.gz"
    _write_volume(image, "RAS", (2.0, 2.0, 5.0), (0.0, 0.0, 0.0), (12, 12, 6))
    out = tmp_path / "out"
    out.mkdir()
    existing = out / "s1.nii.gz"
    existing.write_bytes(b"keep me")
    with pytest.raises(ConfigurationError, match="already exists.*--overwrite"):
        predict_files(predictor, inputs_from_paths([image], "ct"), out)
    assert existing.read_bytes() == b"keep me"
    predict_files(predictor, inputs_from_paths([image], "ct"), out, overwrite=True)
    assert sitk.ReadImage(str(existing)).GetSize() == (12, 12, 6)


def test_never_writes_over_an_input_even_with_overwrite(predictor, tmp_path) -> None:
    image = tmp_path / "s2.nii.gz"
    _write_volume(image, "RAS", (2.0, 2.0, 5.0), (0.0, 0.0, 0.0), (12, 12, 6))
    before = image.read_bytes()
    with pytest.raises(ConfigurationError, match="is an input volume"):
        predict_files(predictor, inputs_from_paths([image], "ct"), tmp_path, overwrite=True)
    assert image.read_bytes() == before


def test_checks_all_outputs_before_predicting_anything(predictor, tmp_path) -> None:
    first = tmp_path / "a.nii.gz"
    second = tmp_path / "b.nii.gz"
    for path in (first, second):
        _write_volume(path, "RAS", (2.0, 2.0, 5.0), (0.0, 0.0, 0.0), (12, 12, 6))
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.nii.gz").write_bytes(b"old")
    with pytest.raises(ConfigurationError, match="b.nii.gz: already exists"):
        predict_files(predictor, inputs_from_paths([first, second], "ct"), out)
    assert not (out / "a.nii.gz").exists()


def test_dicom_folder_inputs_are_protected(tmp_path) -> None:
    folder = tmp_path / "series_7"
    folder.mkdir()
    item = PredictionInput("series_7", "ct", folder)
    assert subject_id_from_path(folder) == "series_7"
    with pytest.raises(ConfigurationError, match="inside the DICOM input folder"):
        plan_outputs([item], folder)


def test_duplicate_subject_ids_are_refused(tmp_path) -> None:
    items = [PredictionInput("s", "ct", tmp_path / "x.nii.gz"),
             PredictionInput("s", "mr", tmp_path / "y.nii.gz")]
    with pytest.raises(ConfigurationError, match="appears twice"):
        plan_outputs(items, tmp_path / "out")


def test_unknown_modality_is_a_clear_error(predictor, tmp_path) -> None:
    image = tmp_path / "pet.nii.gz"
    _write_volume(image, "RAS", (2.0, 2.0, 5.0), (0.0, 0.0, 0.0), (12, 12, 6))
    with pytest.raises(ConfigurationError, match=r"unknown modality 'pet'.*\['mr', 'ct'\]"):
        predict_files(predictor, inputs_from_paths([image], "pet"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_input_is_a_clear_error(predictor, tmp_path) -> None:
    missing = tmp_path / "nowhere.nii.gz"
    with pytest.raises(InputDataError, match="nowhere.nii.gz: input not found"):
        inputs_from_paths([missing], "ct")
    with pytest.raises(InputDataError, match="nowhere.nii.gz"):
        predict_volume(predictor, missing, "ct")


def test_bad_window_size_is_refused(predictor, tmp_path) -> None:
    image = tmp_path / "w.nii.gz"
    _write_volume(image, "RAS", (2.0, 2.0, 5.0), (0.0, 0.0, 0.0), (12, 12, 6))
    with pytest.raises(ConfigurationError, match="multiples of the network's stride"):
        predict_volume(predictor, image, "ct", patch_size=(12, 16, 16))


def test_inputs_from_paths_and_manifest(tmp_path) -> None:
    for name in ("p1.nii.gz", "p2.mha"):
        _write_volume(tmp_path / name, "RAS", (2.0, 2.0, 5.0), (0.0, 0.0, 0.0), (8, 8, 4))
    items = inputs_from_paths([tmp_path / "p1.nii.gz", tmp_path / "p2.mha"], ["CT", "mr"])
    assert [(i.subject_id, i.modality) for i in items] == [("p1", "ct"), ("p2", "mr")]
    with pytest.raises(ConfigurationError, match="2 input.*3 modalities"):
        inputs_from_paths([tmp_path / "p1.nii.gz", tmp_path / "p2.mha"], ["ct", "mr", "ct"])
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"subject_id": ["x1", "x2"], "modality": ["ct", "mr"],
                  "image": ["p1.nii.gz", "p2.mha"]}).to_csv(manifest, index=False)
    rows = inputs_from_manifest(manifest)
    assert [(r.subject_id, r.modality, r.image) for r in rows] == [
        ("x1", "ct", tmp_path / "p1.nii.gz"), ("x2", "mr", tmp_path / "p2.mha")]
    assert [r.subject_id for r in inputs_from_manifest(manifest, modality="mr")] == ["x2"]


def test_real_volumes_keep_their_geometry(real_data_dir, tmp_path) -> None:
    # Every real volume (LAS, LAI, RAS, LPS; anisotropic) comes back on its own grid. A tiny
    # untrained model at 4 mm with 32^3 windows and no overlap keeps this quick.
    model = build_multistream("individual", modalities=("mr", "ct"), filters=(2, 4, 4, 4, 8),
                              num_res_units=1)
    predictor = KerasPredictor(model, PreprocessingConfig(spacing_mm=4.0), patch_size=(32,) * 3)
    inputs = inputs_from_manifest(real_data_dir / "manifest.csv")
    orientations = set()
    records = predict_files(predictor, inputs, tmp_path / "out", overlap=0.0, batch_size=8)
    assert len(records) == len(inputs) == 9
    for item, record in zip(inputs, records, strict=True):
        source, output = nib.load(item.image), nib.load(record.labels)
        assert output.shape == source.shape, item.subject_id
        np.testing.assert_allclose(output.affine, source.affine, atol=1e-3,
                                   err_msg=item.subject_id)
        orientations.add("".join(nib.aff2axcodes(source.affine)))
    assert len(orientations) >= 3
