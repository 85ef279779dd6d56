"""Tests of dltk_mm.export.predictor: the SavedModelPredictor segments like the Keras model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813

from dltk_mm.errors import ConfigurationError, InputDataError
from dltk_mm.export import SavedModelPredictor, metadata_path
from dltk_mm.inference.predict import KerasPredictor, predict_volume
from dltk_mm.inference.segment import InferenceConfig
from dltk_mm.io.geometry import Geometry
from tests.export.conftest import INFERENCE, PATCH, PREPROCESSING


@pytest.fixture(scope="module")
def saved_predictor(exported_v4) -> SavedModelPredictor:
    return SavedModelPredictor(exported_v4[1])


def test_saved_model_and_keras_predictors_agree(exported_v4, saved_predictor, tmp_path) -> None:
    model, _ = exported_v4
    geometry = Geometry.from_orientation("LAI", (1.7, 1.3, 4.5), (20.0, -7.0, 35.0), (27, 33, 10))
    array = np.random.default_rng(3).normal(300.0, 80.0, geometry.shape).astype(np.float32)
    image = tmp_path / "mr_case.nii.gz"
    sitk.WriteImage(geometry.image_from_array(array), str(image))
    keras_predictor = KerasPredictor(model, PREPROCESSING, patch_size=PATCH)
    assert saved_predictor.modalities == keras_predictor.modalities
    assert saved_predictor.preprocessing == keras_predictor.preprocessing
    assert saved_predictor.patch_size == keras_predictor.patch_size
    assert saved_predictor.inference == INFERENCE
    config = InferenceConfig(overlap=0.5)
    for modality in ("mr", "ct"):
        a = predict_volume(keras_predictor, image, modality, config=config,
                           with_probabilities=True)
        b = predict_volume(saved_predictor, image, modality, config=config,
                           with_probabilities=True)
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(a.labels),
                                      sitk.GetArrayViewFromImage(b.labels))
        np.testing.assert_allclose(sitk.GetArrayViewFromImage(a.probabilities),
                                   sitk.GetArrayViewFromImage(b.probabilities), atol=1e-5)
        assert Geometry.from_image(b.labels).grid_differences(geometry, tol=1e-5) == []


def test_unknown_modality(saved_predictor) -> None:
    with pytest.raises(ConfigurationError, match=r"unknown modality 'pet'.*\['mr', 'ct'\]"):
        saved_predictor.predict_probabilities(np.zeros((1, 16, 16, 16, 1), np.float32), "pet")


def test_export_without_metadata_or_signature_is_a_clear_error(exported_v4, tmp_path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(exported_v4[1], bare)
    data = json.loads(metadata_path(bare).read_text())
    metadata_path(bare).write_text(json.dumps(
        {**data, "signatures": {**data["signatures"], "ct": "serve_pet"}}))
    with pytest.raises(InputDataError, match="no signature 'serve_pet' for modality 'ct'"):
        SavedModelPredictor(bare)
    metadata_path(bare).unlink()
    with pytest.raises(InputDataError, match="without dltk_mm metadata.*dltk-mm-export"):
        SavedModelPredictor(bare)
