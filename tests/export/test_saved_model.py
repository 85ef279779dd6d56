"""Tests of dltk_mm.export.saved_model: one serving signature per modality plus metadata."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import SimpleITK as sitk  # noqa: E402, N813
import tensorflow as tf  # noqa: E402

import dltk_mm  # noqa: E402
from dltk_mm.errors import ConfigurationError, InputDataError  # noqa: E402
from dltk_mm.export.saved_model import (  # noqa: E402
    export_saved_model,
    metadata_path,
    read_export_metadata,
)
from dltk_mm.inference.predict import (  # noqa: E402
    KerasPredictor,
    SavedModelPredictor,
    predict_volume,
)
from dltk_mm.io.geometry import Geometry  # noqa: E402
from dltk_mm.io.preprocessing import PreprocessingConfig  # noqa: E402
from dltk_mm.networks import build_multistream  # noqa: E402

PREPROCESSING = PreprocessingConfig(spacing_mm=4.0, normalisation="per_slice")
PATCH = (16, 16, 16)


def _tiny_model(scheme: str = "v4", modalities=("mr", "ct")):
    model = build_multistream(scheme, modalities=modalities, filters=(2, 4, 4, 4, 8),
                              num_res_units=1)
    # Non-trivial batch-norm statistics, so that the export must carry them (inference mode).
    rng = np.random.default_rng(1)
    for variable in model.non_trainable_variables:
        name = variable.path
        if "moving_variance" in name:
            variable.assign(rng.uniform(0.5, 2.0, variable.shape).astype(np.float32))
        elif "moving_mean" in name:
            variable.assign(rng.normal(0.0, 0.3, variable.shape).astype(np.float32))
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = _tiny_model()
    export_dir = tmp_path_factory.mktemp("export") / "v4_model"
    # verify=False: the fresh-process test below checks the same thing (test_overwrite... runs
    # the in-process verification).
    export_saved_model(model, export_dir, PREPROCESSING, patch_size=PATCH, verify=False,
                       extra={"note": "test"})
    return model, export_dir


@pytest.fixture(scope="module")
def saved_predictor(exported) -> SavedModelPredictor:
    return SavedModelPredictor(exported[1])


def test_layout_and_metadata(exported) -> None:
    model, export_dir = exported
    assert (export_dir / "saved_model.pb").is_file()
    assert (export_dir / "variables").is_dir()
    assert metadata_path(export_dir) == export_dir / "assets" / "dltk_mm_export.json"
    raw = json.loads(metadata_path(export_dir).read_text())
    assert raw["format"] == "dltk_mm.saved_model"
    assert raw["signatures"] == {"mr": "serve_mr", "ct": "serve_ct"}
    metadata = read_export_metadata(export_dir)
    assert metadata.modalities == ("mr", "ct")
    assert metadata.num_classes == 5
    assert metadata.patch_size == PATCH
    assert metadata.size_factor == (8, 8, 8)
    assert metadata.preprocessing == PREPROCESSING
    assert metadata.dltk_mm_version == dltk_mm.__version__
    assert metadata.scheme == "v4"
    assert metadata.build_config == model.build_config
    assert metadata.extra == {"note": "test"}
    # No staging folders are left beside the export.
    assert sorted(p.name for p in export_dir.parent.iterdir()) == ["v4_model"]


def test_fresh_process_reproduces_keras_probabilities(exported, tmp_path) -> None:
    model, export_dir = exported
    probe = np.random.default_rng(2).standard_normal((2, 16, 24, 32, 1)).astype(np.float32)
    np.save(tmp_path / "probe.npy", probe)
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        "loaded = tf.saved_model.load(sys.argv[1])\n"
        "probe = np.load(sys.argv[2])\n"
        "for name in ('serve_mr', 'serve_ct'):\n"
        "    signature = loaded.signatures[name]\n"
        "    spec = signature.structured_input_signature[1]['images']\n"
        "    assert spec.shape.as_list() == [None, None, None, None, 1], spec\n"
        "    assert spec.dtype == tf.float32\n"
        "    out = signature(images=tf.constant(probe))\n"
        "    assert sorted(out) == ['probabilities'], sorted(out)\n"
        "    np.save(sys.argv[3] + '/' + name + '.npy', out['probabilities'].numpy())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(export_dir), str(tmp_path / "probe.npy"),
         str(tmp_path)],
        capture_output=True, text=True, timeout=180,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = {}
    for modality in ("mr", "ct"):
        expected = model.streams[modality](probe, training=False)["probabilities"].numpy()
        outputs[modality] = np.load(tmp_path / f"serve_{modality}.npy")
        assert outputs[modality].shape == (2, 16, 24, 32, 5)
        np.testing.assert_allclose(outputs[modality], expected, atol=1e-5)
    # The V4 streams differ (modality-specific encoders/decoders): signatures are not swapped.
    assert np.max(np.abs(outputs["mr"] - outputs["ct"])) > 1e-3


def test_saved_model_and_keras_predictors_agree(exported, saved_predictor, tmp_path) -> None:
    model, _ = exported
    geometry = Geometry.from_orientation("LAI", (1.7, 1.3, 4.5), (20.0, -7.0, 35.0), (27, 33, 10))
    array = np.random.default_rng(3).normal(300.0, 80.0, geometry.shape).astype(np.float32)
    image = tmp_path / "mr_case.nii.gz"
    sitk.WriteImage(geometry.image_from_array(array), str(image))
    keras_predictor = KerasPredictor(model, PREPROCESSING, patch_size=PATCH)
    assert saved_predictor.modalities == keras_predictor.modalities
    assert saved_predictor.preprocessing == keras_predictor.preprocessing
    assert saved_predictor.patch_size == keras_predictor.patch_size
    for modality in ("mr", "ct"):
        a = predict_volume(keras_predictor, image, modality, with_probabilities=True)
        b = predict_volume(saved_predictor, image, modality, with_probabilities=True)
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(a.labels),
                                      sitk.GetArrayViewFromImage(b.labels))
        np.testing.assert_allclose(sitk.GetArrayViewFromImage(a.probabilities),
                                   sitk.GetArrayViewFromImage(b.probabilities), atol=1e-5)
        assert Geometry.from_image(b.labels).grid_differences(geometry, tol=1e-5) == []


def test_refuses_an_existing_export_dir(exported, tmp_path) -> None:
    model, export_dir = exported
    before = (export_dir / "saved_model.pb").read_bytes()
    with pytest.raises(ConfigurationError, match="already exists.*overwrite"):
        export_saved_model(model, export_dir, PREPROCESSING, patch_size=PATCH)
    assert (export_dir / "saved_model.pb").read_bytes() == before
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ConfigurationError, match="not a folder"):
        export_saved_model(model, target, PREPROCESSING, patch_size=PATCH)


def test_overwrite_replaces_an_export(tmp_path) -> None:
    model = _tiny_model("individual", modalities=("ct",))
    export_dir = tmp_path / "ct_only"
    export_dir.mkdir()
    (export_dir / "stale.txt").write_text("old")
    export_saved_model(model, export_dir, PreprocessingConfig(), patch_size=(32, 32, 32),
                       overwrite=True, verify=True)
    assert not (export_dir / "stale.txt").exists()
    metadata = read_export_metadata(export_dir)
    assert metadata.modalities == ("ct",)
    assert metadata.patch_size == (32, 32, 32)
    assert sorted(tf.saved_model.load(str(export_dir)).signatures) == ["serve_ct"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct_only"]


def test_bad_patch_size_is_refused(exported, tmp_path) -> None:
    model, _ = exported
    with pytest.raises(ConfigurationError, match="multiples of the network's stride"):
        export_saved_model(model, tmp_path / "x", PREPROCESSING, patch_size=(20, 16, 16))
    assert not (tmp_path / "x").exists()


def test_saved_model_without_metadata_is_a_clear_error(exported, tmp_path) -> None:
    _, export_dir = exported
    bare = tmp_path / "bare"
    shutil.copytree(export_dir, bare)
    metadata_path(bare).unlink()
    with pytest.raises(InputDataError, match="without dltk_mm metadata.*dltk-mm-export"):
        SavedModelPredictor(bare)
    with pytest.raises(InputDataError, match="not a TensorFlow SavedModel"):
        read_export_metadata(tmp_path)
    with pytest.raises(InputDataError, match="not found"):
        read_export_metadata(tmp_path / "missing")
    metadata_path(bare).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(InputDataError, match="not a dltk_mm export description"):
        read_export_metadata(bare)


def test_unknown_modality_with_saved_model(saved_predictor) -> None:
    with pytest.raises(ConfigurationError, match=r"unknown modality 'pet'.*\['mr', 'ct'\]"):
        saved_predictor.predict_probabilities(np.zeros((1, 16, 16, 16, 1), np.float32), "pet")
