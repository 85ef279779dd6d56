"""Tests of dltk_mm.inference.ensemble: several models segmenting as one."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dltk_mm.errors import ConfigurationError  # noqa: E402
from dltk_mm.inference import InferenceConfig, segment_volume  # noqa: E402
from dltk_mm.inference.ensemble import EnsemblePredictor  # noqa: E402
from dltk_mm.inference.predictor import KerasPredictor  # noqa: E402
from dltk_mm.io.preprocessing import PreprocessingConfig  # noqa: E402
from dltk_mm.networks import build_multistream  # noqa: E402

PATCH = (16, 16, 16)
PREPROCESSING = PreprocessingConfig(spacing_mm=4.0)


def _member(seed: int, modalities=("mr", "ct"), preprocessing=PREPROCESSING) -> KerasPredictor:
    keras.utils.set_random_seed(seed)
    model = build_multistream("joint", modalities=modalities, filters=(2, 4, 4, 4, 8),
                              num_res_units=1)
    return KerasPredictor(model, preprocessing, patch_size=PATCH, source=f"run_seed{seed}")


@pytest.fixture(scope="module")
def members() -> tuple[KerasPredictor, KerasPredictor]:
    return _member(0), _member(1)


def test_probabilities_are_the_members_mean(members) -> None:
    windows = np.random.default_rng(0).normal(size=(2, *PATCH, 1)).astype(np.float32)
    first, second = (m.predict_probabilities(windows, "ct") for m in members)
    assert np.abs(first - second).max() > 1e-3  # two different networks
    ensemble = EnsemblePredictor(members).predict_probabilities(windows, "ct")
    np.testing.assert_allclose(ensemble, (first + second) / 2, atol=1e-6)
    np.testing.assert_allclose(ensemble.sum(-1), 1.0, atol=1e-5)
    alone = EnsemblePredictor(members[:1]).predict_probabilities(windows, "ct")
    np.testing.assert_array_equal(alone, first)


def test_a_volume_is_segmented_by_the_mean_of_the_members(members) -> None:
    image = np.random.default_rng(1).normal(size=(20, 24, 28)).astype(np.float32)
    ensemble = EnsemblePredictor(members)
    config = InferenceConfig(weighting="gaussian")
    segmentation = segment_volume(
        image, lambda w: ensemble.predict_probabilities(w, "mr"), PATCH, config, 5,
        keep_probabilities=True)
    each = [segment_volume(image, lambda w, m=m: m.predict_probabilities(w, "mr"), PATCH, config,
                           5, keep_probabilities=True).probabilities for m in members]
    mean = (each[0] + each[1]) / 2
    np.testing.assert_allclose(segmentation.probabilities, mean, atol=1e-5)
    np.testing.assert_array_equal(segmentation.labels, np.argmax(mean, axis=-1))
    assert ensemble.source == "run_seed0 + run_seed1" and ensemble.patch_size == PATCH


def test_members_that_read_inputs_otherwise_are_refused(members) -> None:
    with pytest.raises(ConfigurationError, match="at least one model"):
        EnsemblePredictor([])
    coarse = _member(2, preprocessing=PreprocessingConfig(spacing_mm=2.0))
    with pytest.raises(ConfigurationError, match=r"run_seed0 and run_seed2.*spacing_mm"):
        EnsemblePredictor([members[0], coarse])
    mr_only = _member(3, modalities=("mr",))
    with pytest.raises(ConfigurationError, match="different modalities"):
        EnsemblePredictor([members[0], mr_only])
