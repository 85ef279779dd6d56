"""An ensemble exported as one SavedModel: its patch and whole-volume signatures average the
members' probabilities, as dltk-mm-predict's EnsemblePredictor does."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import SimpleITK as sitk  # noqa: E402, N813
import tensorflow as tf  # noqa: E402

from dltk_mm.errors import ConfigurationError  # noqa: E402
from dltk_mm.export import SavedModelPredictor, export_saved_model, read_export_metadata  # noqa: E402
from dltk_mm.inference.ensemble import EnsemblePredictor  # noqa: E402
from dltk_mm.inference.predict import KerasPredictor, predict_volume  # noqa: E402
from dltk_mm.inference.segment import InferenceConfig  # noqa: E402
from dltk_mm.io.geometry import Geometry  # noqa: E402
from tests.export.conftest import INFERENCE, PATCH, PREPROCESSING, tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def exported_ensemble(tmp_path_factory):
    # one stream each: half the endpoints of a two-modality export, the same mechanism
    members = [tiny_model("joint", ("mr",), seed=1), tiny_model("joint", ("mr",), seed=2)]
    export_dir = tmp_path_factory.mktemp("export_ensemble") / "ensemble"
    export_saved_model(members, export_dir, PREPROCESSING, patch_size=PATCH, inference=INFERENCE,
                       verify=True)  # verification compares with the members' mean
    return members, export_dir


def test_patch_signatures_average_the_members(exported_ensemble) -> None:
    members, export_dir = exported_ensemble
    probe = np.random.default_rng(4).standard_normal((2, *PATCH, 1)).astype(np.float32)
    loaded = tf.saved_model.load(str(export_dir))
    for modality in ("mr",):
        each = [np.asarray(m.streams[modality](probe, training=False)["probabilities"])
                for m in members]
        assert np.abs(each[0] - each[1]).max() > 1e-3  # two different networks
        got = loaded.signatures[f"serve_{modality}"](images=tf.constant(probe))
        np.testing.assert_allclose(np.asarray(got["probabilities"]), (each[0] + each[1]) / 2,
                                   atol=1e-5)
    assert read_export_metadata(export_dir).extra["ensemble_size"] == 2


def test_whole_volumes_are_segmented_as_by_the_ensemble_predictor(exported_ensemble,
                                                                  tmp_path) -> None:
    members, export_dir = exported_ensemble
    geometry = Geometry.from_orientation("LAI", (1.7, 1.3, 4.5), (20.0, -7.0, 35.0), (27, 33, 10))
    array = np.random.default_rng(3).normal(300.0, 80.0, geometry.shape).astype(np.float32)
    image = tmp_path / "mr_case.nii.gz"
    sitk.WriteImage(geometry.image_from_array(array), str(image))
    ensemble = EnsemblePredictor([KerasPredictor(m, PREPROCESSING, patch_size=PATCH)
                                  for m in members])
    config = InferenceConfig(overlap=0.5)
    expected = predict_volume(ensemble, image, "mr", config=config, with_probabilities=True)
    got = predict_volume(SavedModelPredictor(export_dir), image, "mr", config=config,
                         with_probabilities=True)
    np.testing.assert_allclose(sitk.GetArrayViewFromImage(got.probabilities),
                               sitk.GetArrayViewFromImage(expected.probabilities), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(got.labels),
                                  sitk.GetArrayViewFromImage(expected.labels))


def test_members_of_different_architectures_are_refused(tmp_path) -> None:
    with pytest.raises(ConfigurationError, match="one architecture"):
        export_saved_model([tiny_model("v4"), tiny_model("msbn")], tmp_path / "x",
                           PREPROCESSING, patch_size=PATCH)
    assert not (tmp_path / "x").exists()
