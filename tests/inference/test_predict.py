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
    InferenceConfig,
    KerasPredictor,
    PredictionInput,
    inputs_from_manifest,
    inputs_from_paths,
    manifest_files,
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
    # An input on another grid than the preprocessed one (RAS at ~3 mm against LPS at 4 mm): each
    # input voxel must get the argmax of the nearest preprocessed voxel (labels are resampled,
    # never probabilities or logits).
    image = tmp_path / "grid.nii.gz"
    geometry = _write_volume(image, "RAS", (2.7, 3.3, 2.9), (0.3, -1.1, 2.2), (15, 13, 11),
                             ct=False)
    prediction = predict_volume(predictor, image, "mr", config=InferenceConfig(overlap=0.0))
    volume = preprocess_volume(image, None, "mr", prediction_preprocessing(
        predictor.preprocessing))
    assert volume.image.shape != geometry.shape  # the test resamples
    # The preprocessed volume is smaller than one window: the sliding window pads it (centred,
    # zeros) to a single window; the same window through the network gives the probabilities.
    pad = [((p - s) // 2, p - s - (p - s) // 2) for s, p in zip(volume.image.shape, PATCH,
                                                                   strict=True)]
    window = np.pad(volume.image, pad)[np.newaxis, ..., np.newaxis]
    crop = tuple(slice(before, before + s) for (before, _), s in zip(pad, volume.image.shape,
                                                                      strict=True))
    argmax = np.argmax(predictor.predict_probabilities(window, "mr")[0][crop], axis=-1)
    assert len(np.unique(argmax)) > 1
    index_xyz = np.stack(np.meshgrid(*[np.arange(n) for n in geometry.size], indexing="ij"),
                         axis=-1).reshape(-1, 3)
    target = volume.geometry.physical_to_index(geometry.index_to_physical(index_xyz))
    nearest = np.rint(target).astype(int)
    unambiguous = (np.abs(np.abs(target - nearest) - 0.5) > 1e-3).all(axis=1)
    expected = argmax[nearest[:, 2], nearest[:, 1], nearest[:, 0]]
    labels = sitk.GetArrayFromImage(prediction.labels)
    assert labels.shape == geometry.shape
    got = labels[index_xyz[:, 2], index_xyz[:, 1], index_xyz[:, 0]]
    assert unambiguous.mean() > 0.9
    np.testing.assert_array_equal(got[unambiguous], expected[unambiguous])
    assert Geometry.from_image(prediction.labels).same_grid(geometry)


def test_probability_maps_are_4d_on_the_input_grid(predictor, tmp_path) -> None:
    image = tmp_path / "prob_case.nii.gz"
    _write_volume(image, "LAS", (1.2, 1.2, 4.0), (-3.0, 5.0, -60.0), (30, 26, 9))
    records = predict_files(predictor, inputs_from_paths([image], "ct"), tmp_path / "out",
                            save_probabilities=True, config=InferenceConfig(weighting="gaussian"))
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
    records = predict_files(predictor, inputs, tmp_path / "out",
                            config=InferenceConfig(overlap=0.0, batch_size=8))
    assert len(records) == len(inputs) == 9
    for item, record in zip(inputs, records, strict=True):
        source, output = nib.load(item.image), nib.load(record.labels)
        assert output.shape == source.shape, item.subject_id
        np.testing.assert_allclose(output.affine, source.affine, atol=1e-3,
                                   err_msg=item.subject_id)
        orientations.add("".join(nib.aff2axcodes(source.affine)))
    assert len(orientations) >= 3


def _dataset(root: Path) -> Path:
    """images/<id>.nii.gz, labels/<id>.nii.gz and manifest.csv: the usual layout."""
    rows = []
    for subject, modality in (("s1", "ct"), ("s2", "mr")):
        geometry = _write_volume(root / "images" / f"{subject}.nii.gz", "RAS", (2.0, 2.0, 5.0),
                                 (0.0, 0.0, 0.0), (12, 12, 6), ct=modality == "ct")
        label = root / "labels" / f"{subject}.nii.gz"
        label.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(geometry.image_from_array(np.ones(geometry.shape, np.uint8)), str(label))
        rows.append({"subject_id": subject, "modality": modality,
                     "image": f"images/{subject}.nii.gz", "label": f"labels/{subject}.nii.gz"})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def test_never_writes_over_a_manifests_labels_even_with_overwrite(predictor, tmp_path) -> None:
    manifest = _dataset(tmp_path)
    labels = tmp_path / "labels"
    before = {p.name: p.read_bytes() for p in labels.iterdir()}
    inputs = inputs_from_manifest(manifest)
    with pytest.raises(ConfigurationError, match=r"s1.nii.gz: is the label of subject s1.*"
                                                 r"not even with --overwrite"):
        predict_files(predictor, inputs, labels, overwrite=True)
    # A subset of the rows: the other rows' files are still the manifest's.
    ct_only = inputs_from_manifest(manifest, modality="ct")
    renamed = [PredictionInput("s2", "ct", ct_only[0].image)]
    with pytest.raises(ConfigurationError, match="s2.nii.gz: is a file the manifest names"):
        predict_files(predictor, renamed, labels, overwrite=True,
                      protected=manifest_files(manifest))
    assert {p.name: p.read_bytes() for p in labels.iterdir()} == before


def test_bad_input_is_found_before_any_output_is_written(predictor, tmp_path) -> None:
    good = tmp_path / "good.nii.gz"
    _write_volume(good, "RAS", (2.0, 2.0, 5.0), (0.0, 0.0, 0.0), (12, 12, 6))
    bad = tmp_path / "bad.nii"
    array = np.ones((6, 12, 12), np.float32)
    array[3, 4, 5] = np.nan
    nib.save(nib.Nifti1Image(array.transpose(2, 1, 0), np.eye(4)), str(bad))
    truncated = tmp_path / "truncated.nii"
    truncated.write_bytes(bad.read_bytes()[:1000])
    out = tmp_path / "out"
    with pytest.raises(InputDataError, match=r"2 of 3 input\(s\) cannot be predicted") as error:
        predict_files(predictor, inputs_from_paths([good, bad, truncated], "ct"), out)
    assert "bad.nii: holds 1 NaN" in str(error.value)
    assert "truncated.nii" in str(error.value)
    assert not out.exists()


def test_skip_existing_continues_an_interrupted_prediction(predictor, tmp_path) -> None:
    images = [tmp_path / f"{name}.nii.gz" for name in ("a", "b")]
    for path in images:
        _write_volume(path, "RAS", (2.0, 2.0, 5.0), (0.0, 0.0, 0.0), (12, 12, 6))
    out = tmp_path / "out"
    predict_files(predictor, inputs_from_paths(images[:1], "ct"), out)
    finished = (out / "a.nii.gz").read_bytes()
    records = predict_files(predictor, inputs_from_paths(images, "ct"), out, skip_existing=True)
    assert [r.skipped for r in records] == [True, False]
    assert (out / "a.nii.gz").read_bytes() == finished
    assert sitk.ReadImage(str(out / "b.nii.gz")).GetSize() == (12, 12, 6)
    # With probability maps asked for, a subject missing one of its outputs is not finished.
    with pytest.raises(ConfigurationError, match="a.nii.gz: already exists"):
        predict_files(predictor, inputs_from_paths(images, "ct"), out, skip_existing=True,
                      save_probabilities=True)


def test_segmentation_options_reach_the_prediction(predictor, tmp_path) -> None:
    image = tmp_path / "opts.nii.gz"
    _write_volume(image, "LPS", (4.0, 4.0, 4.0), (0.0, 0.0, 0.0), (16, 16, 16), ct=False)
    plain = predict_volume(predictor, image, "mr")
    cleaned = predict_volume(predictor, image, "mr", config=InferenceConfig(
        min_component_voxels=10**6))
    assert len(np.unique(sitk.GetArrayViewFromImage(plain.labels))) > 1
    assert (sitk.GetArrayViewFromImage(cleaned.labels) == 0).all()


def test_the_next_input_is_read_while_the_current_one_is_segmented(predictor, tmp_path,
                                                                   monkeypatch) -> None:
    import threading

    from dltk_mm.inference import predict as predict_module

    images = [tmp_path / f"{name}.nii.gz" for name in ("a", "b", "c")]
    for seed, path in enumerate(images):
        _write_volume(path, "RAS", (2.0, 2.0, 5.0), (0.0, 0.0, 0.0), (12, 12, 6), seed=seed)
    read = {name: threading.Event() for name in ("a", "b", "c")}
    reading_threads = set()
    original = predict_module.preprocess_for_prediction

    def recording_read(predictor_, image_path, modality, subject_id):
        reading_threads.add(threading.get_ident())
        volume = original(predictor_, image_path, modality, subject_id)
        read[subject_id].set()
        return volume

    monkeypatch.setattr(predict_module, "preprocess_for_prediction", recording_read)
    ahead = []

    class Recorder:  # segmenting a waits until b has been read (only possible if read ahead)
        def __getattr__(self, name):
            return getattr(predictor, name)

        def predict_probabilities(self, windows, modality):
            ahead.append(read["b"].wait(timeout=10))
            return predictor.predict_probabilities(windows, modality)

    records = predict_files(Recorder(), inputs_from_paths(images, "ct"), tmp_path / "out")
    assert ahead and all(ahead)
    assert threading.get_ident() not in reading_threads  # read on the reader thread
    for record, path in zip(records, images, strict=True):  # as predicted one by one
        reference = predict_volume(predictor, path, "ct").labels
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(record.labels))),
                                      sitk.GetArrayFromImage(reference))
