"""Tests of dltk_mm.export.saved_model: an export every SavedModel consumer runs.

Consumers checked: ``tf.saved_model.load`` in a process where dltk_mm cannot be imported, and
TensorFlow's own ``saved_model_cli show`` / ``saved_model_cli run`` (the session-based loader TF
Serving also uses), on every signature of a dual-stream v4 and an msbn model whose batch-norm
moving statistics are far from their initial values.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import dltk_mm  # noqa: E402
from dltk_mm.errors import ConfigurationError  # noqa: E402
from dltk_mm.export import (  # noqa: E402
    export_saved_model,
    metadata_path,
    read_export_metadata,
    verify_export,
)
from dltk_mm.io.preprocessing import PreprocessingConfig  # noqa: E402
from tests.export.conftest import (  # noqa: E402
    INFERENCE,
    PATCH,
    PREPROCESSING,
    SUBPROCESS_ENV,
    saved_model_cli,
    tiny_model,
)


def _keras(model, modality: str, images: np.ndarray) -> np.ndarray:
    return model.streams[modality](images, training=False)["probabilities"].numpy()


def test_layout_and_metadata(exported_v4) -> None:
    model, export_dir = exported_v4
    assert (export_dir / "saved_model.pb").is_file()
    assert (export_dir / "variables").is_dir()
    raw = json.loads(metadata_path(export_dir).read_text())
    assert raw["format"] == "dltk_mm.saved_model"
    assert raw["signatures"] == {"mr": "serve_mr", "ct": "serve_ct"}
    assert raw["segment_signatures"] == {"mr": "segment_mr", "ct": "segment_ct"}
    assert raw["inference"] == INFERENCE.to_dict()
    metadata = read_export_metadata(export_dir)
    assert metadata.modalities == ("mr", "ct")
    assert metadata.num_classes == 5
    assert metadata.patch_size == PATCH
    assert metadata.size_factor == (8, 8, 8)
    assert metadata.preprocessing == PREPROCESSING
    assert metadata.inference == INFERENCE
    assert metadata.dltk_mm_version == dltk_mm.__version__
    assert metadata.scheme == "v4"
    assert metadata.build_config == model.build_config
    assert metadata.extra == {"note": "test"}
    # No staging folders are left beside the export.
    assert sorted(p.name for p in export_dir.parent.iterdir()) == ["v4_model"]


def test_process_without_dltk_mm_reproduces_keras_probabilities(exported_v4, tmp_path) -> None:
    model, export_dir = exported_v4
    probe = np.random.default_rng(2).standard_normal((2, 16, 24, 32, 1)).astype(np.float32)
    np.save(tmp_path / "probe.npy", probe)
    script = (
        "import sys\n"
        "sys.modules['dltk_mm'] = None  # any import of dltk_mm now fails\n"
        "import numpy as np, tensorflow as tf\n"
        "loaded = tf.saved_model.load(sys.argv[1])\n"
        "assert 'dltk_mm' not in [m.split('.')[0] for m in sys.modules if sys.modules[m]]\n"
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
         str(tmp_path)], capture_output=True, text=True, timeout=180, env=SUBPROCESS_ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = {}
    for modality in ("mr", "ct"):
        outputs[modality] = np.load(tmp_path / f"serve_{modality}.npy")
        assert outputs[modality].shape == (2, 16, 24, 32, 5)
        np.testing.assert_allclose(outputs[modality], _keras(model, modality, probe), atol=1e-5)
    # The V4 streams differ (modality-specific encoders/decoders): signatures are not swapped.
    assert np.max(np.abs(outputs["mr"] - outputs["ct"])) > 1e-3


@pytest.mark.parametrize("fixture", ["exported_v4", "exported_msbn"])
def test_saved_model_cli_runs_every_signature(fixture, request, tmp_path) -> None:
    model, export_dir = request.getfixturevalue(fixture)
    shown = subprocess.run([*saved_model_cli(), "show", "--dir", str(export_dir), "--all"],
                           capture_output=True, text=True, timeout=180, env=SUBPROCESS_ENV)
    assert shown.returncode == 0, shown.stderr[-3000:]
    for name in ("serve_mr", "serve_ct", "serving_default"):
        block = shown.stdout.split(f"signature_def['{name}']:")[1].split("signature_def[")[0]
        assert "inputs['images']" in block and "shape: (-1, -1, -1, -1, 1)" in block
        assert "outputs['probabilities']" in block and "shape: (-1, -1, -1, -1, 5)" in block
    images = np.random.default_rng(4).standard_normal((1, 16, 16, 16, 1)).astype(np.float32)
    np.save(tmp_path / "x.npy", images)
    # serving_default (TF Serving's default) is the first modality's patch signature.
    signatures = {"serve_mr": "mr", "serve_ct": "ct"}
    if fixture == "exported_v4":
        signatures["serving_default"] = "mr"
    outputs = {}
    for name, modality in signatures.items():
        result = subprocess.run(
            [*saved_model_cli(), "run", "--dir", str(export_dir), "--tag_set", "serve",
             "--signature_def", name, "--inputs", f"images={tmp_path / 'x.npy'}",
             "--outdir", str(tmp_path / name)],
            capture_output=True, text=True, timeout=180, env=SUBPROCESS_ENV)
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[name] = np.load(tmp_path / name / "probabilities.npy")
        np.testing.assert_allclose(outputs[name], _keras(model, modality, images), atol=1e-5)
    # The streams differ (msbn: own batch-norm statistics per modality), so none was swapped.
    assert np.max(np.abs(outputs["serve_mr"] - outputs["serve_ct"])) > 1e-3


def _hand_written_export(model, export_dir: Path) -> None:
    """The earlier way: a ``tf.Module`` tracking ``model.variables`` (saved_model_cli fails)."""
    module = tf.Module()
    module.model_variables = list(model.variables)
    stream = model.streams["ct"]
    spec = tf.TensorSpec([None, None, None, None, 1], tf.float32, name="images")
    serve = tf.function(lambda images: {"probabilities": stream(images)["probabilities"]},
                        input_signature=[spec])
    tf.saved_model.save(module, str(export_dir), signatures={"serve_ct": serve})


def test_verification_finds_an_export_the_session_loader_cannot_run(tmp_path) -> None:
    model = tiny_model("individual", modalities=("ct",))
    _hand_written_export(model, tmp_path / "hand")
    assert tf.saved_model.load(str(tmp_path / "hand")).signatures["serve_ct"] is not None
    with pytest.raises(ConfigurationError, match="session-based loader"):
        verify_export(model, tmp_path / "hand", PATCH)


def test_overwrite_replaces_an_earlier_export(exported_v4, tmp_path) -> None:
    export_dir = tmp_path / "ct_only"
    shutil.copytree(exported_v4[1], export_dir)
    model = tiny_model("individual", modalities=("ct",))
    export_saved_model(model, export_dir, PreprocessingConfig(), patch_size=(32, 32, 32),
                       overwrite=True, verify=True)
    metadata = read_export_metadata(export_dir)
    assert metadata.modalities == ("ct",)
    assert metadata.patch_size == (32, 32, 32)
    assert sorted(tf.saved_model.load(str(export_dir)).signatures) == [
        "segment_ct", "serve_ct", "serving_default"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct_only"]


def test_existing_export_is_kept_without_overwrite(exported_v4, tmp_path) -> None:
    model, export_dir = exported_v4
    before = (export_dir / "saved_model.pb").read_bytes()
    with pytest.raises(ConfigurationError, match="already exists.*overwrite"):
        export_saved_model(model, export_dir, PREPROCESSING, patch_size=PATCH)
    assert (export_dir / "saved_model.pb").read_bytes() == before


def test_bad_patch_size_is_refused(exported_v4, tmp_path) -> None:
    model, _ = exported_v4
    with pytest.raises(ConfigurationError, match="multiples of the network's stride"):
        export_saved_model(model, tmp_path / "x", PREPROCESSING, patch_size=(20, 16, 16))
    assert not (tmp_path / "x").exists()
