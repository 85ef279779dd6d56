"""Tests of dltk_mm.export.whole_volume: ``segment_<modality>`` gives dltk-mm-predict's labels.

The reference is :func:`dltk_mm.inference.predict.predict_volume` with the Keras model (the path
of ``dltk-mm-predict``). Tolerance: identical labels, except at ties of the two most probable
classes (top-2 gap below 1e-4 in the reference's probabilities), on at most 0.1 % of the voxels.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import SimpleITK as sitk  # noqa: E402, N813
import tensorflow as tf  # noqa: E402

from dltk_mm.core.label_map import LABEL_NAMES, NUM_CLASSES  # noqa: E402
from dltk_mm.export.whole_volume import segment_endpoint  # noqa: E402
from dltk_mm.inference.predict import KerasPredictor, predict_volume  # noqa: E402
from dltk_mm.inference.predictor import Predictor  # noqa: E402
from dltk_mm.inference.segment import InferenceConfig  # noqa: E402
from dltk_mm.io.phantoms import make_phantom  # noqa: E402
from dltk_mm.io.preprocessing import PreprocessingConfig  # noqa: E402
from tests.export.conftest import (  # noqa: E402
    INFERENCE,
    PATCH,
    PREPROCESSING,
    SUBPROCESS_ENV,
    saved_model_cli,
)

TIE = 1e-4


def _phantom(tmp_path: Path, modality: str, orientation: str, seed: int = 0) -> Path:
    image = sitk.DICOMOrient(make_phantom(modality, seed).image, orientation)
    path = tmp_path / f"{modality}_{orientation}.nii.gz"
    sitk.WriteImage(image, str(path))
    return path


def _inputs(path: Path, mirror: bool, largest: bool, min_voxels: int = 0) -> dict[str, object]:
    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    return {"volume": sitk.GetArrayFromImage(image),
            "spacing": np.array(image.GetSpacing(), np.float64),
            "origin": np.array(image.GetOrigin(), np.float64),
            "direction": np.array(image.GetDirection(), np.float64),
            "mirror": np.array(mirror), "largest_component": np.array(largest),
            "min_component_voxels": np.array(min_voxels, np.int32)}


def _reference(model, path: Path, modality: str, mirror: bool, largest: bool,
               min_voxels: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """dltk-mm-predict's labels and top-2 probability gap on the input's grid."""
    config = InferenceConfig(overlap=INFERENCE.overlap, weighting=INFERENCE.weighting,
                             batch_size=INFERENCE.batch_size, mirror=mirror,
                             largest_component=largest, min_component_voxels=min_voxels)
    predictor = KerasPredictor(model, PREPROCESSING, patch_size=PATCH)
    result = predict_volume(predictor, path, modality, config=config, with_probabilities=True)
    ranked = np.sort(sitk.GetArrayFromImage(result.probabilities), axis=-1)
    return sitk.GetArrayFromImage(result.labels), ranked[..., -1] - ranked[..., -2]


def _assert_same_labels(labels: np.ndarray, reference: tuple[np.ndarray, np.ndarray]) -> None:
    expected, gap = reference
    assert labels.shape == expected.shape and labels.dtype == np.uint8
    different = labels != expected
    assert different.mean() <= 1e-3, f"{different.sum()} of {different.size} voxels differ"
    assert np.all(gap[different] < TIE), "labels differ where the reference has no tie"
    assert len(np.unique(expected)) > 1  # not a trivial, constant map


def _segment(export_dir: Path, modality: str, inputs: dict[str, object]) -> np.ndarray:
    signature = tf.saved_model.load(str(export_dir)).signatures[f"segment_{modality}"]
    tensors = {name: tf.constant(value) for name, value in inputs.items()}
    return signature(**tensors)["labels"].numpy()


@pytest.mark.parametrize("orientation", ["LAS", "RAS", "LPS"])
def test_segment_matches_predict_on_phantoms(orientation, exported_v4, tmp_path) -> None:
    model, export_dir = exported_v4
    path = _phantom(tmp_path, "ct", orientation)
    options = {"LAS": (True, True, 0), "RAS": (False, False, 3), "LPS": (True, False, 0)}
    for mirror, largest, min_voxels in ((False, False, 0), options[orientation]):
        labels = _segment(export_dir, "ct", _inputs(path, mirror, largest, min_voxels))
        _assert_same_labels(labels, _reference(model, path, "ct", mirror, largest, min_voxels))


def test_mr_segment_runs_in_a_process_without_dltk_mm(exported_v4, tmp_path) -> None:
    model, export_dir = exported_v4
    path = _phantom(tmp_path, "mr", "RAS", seed=3)
    np.savez(tmp_path / "inputs.npz", **_inputs(path, mirror=False, largest=True))
    script = (
        "import sys\n"
        "sys.modules['dltk_mm'] = None  # any import of dltk_mm now fails\n"
        "import numpy as np, tensorflow as tf\n"
        "signature = tf.saved_model.load(sys.argv[1]).signatures['segment_mr']\n"
        "inputs = {k: tf.constant(v) for k, v in np.load(sys.argv[2]).items()}\n"
        "np.save(sys.argv[3], signature(**inputs)['labels'].numpy())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(export_dir), str(tmp_path / "inputs.npz"),
         str(tmp_path / "labels.npy")], capture_output=True, text=True, timeout=300,
        env=SUBPROCESS_ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_labels(np.load(tmp_path / "labels.npy"),
                        _reference(model, path, "mr", mirror=False, largest=True))


@pytest.mark.parametrize("fixture", ["exported_v4", "exported_msbn"])
def test_saved_model_cli_runs_segment_signatures(fixture, request, tmp_path) -> None:
    model, export_dir = request.getfixturevalue(fixture)
    shown = subprocess.run([*saved_model_cli(), "show", "--dir", str(export_dir), "--tag_set",
                            "serve", "--signature_def", "segment_ct"],
                           capture_output=True, text=True, timeout=180, env=SUBPROCESS_ENV)
    assert shown.returncode == 0, shown.stderr[-3000:]
    for name, shape in (("volume", "(-1, -1, -1)"), ("spacing", "(3)"), ("origin", "(3)"),
                        ("direction", "(9)"), ("mirror", "()"), ("largest_component", "()"),
                        ("min_component_voxels", "()")):
        block = shown.stdout.split(f"inputs['{name}']")[1].split("inputs[")[0]
        assert f"shape: {shape}" in block, (name, block)
    assert "outputs['labels']" in shown.stdout and "DT_UINT8" in shown.stdout
    path = _phantom(tmp_path, "ct", "LAS", seed=1)
    for name, value in _inputs(path, mirror=True, largest=True).items():
        np.save(tmp_path / f"{name}.npy", value)
    files = ";".join(f"{name}={tmp_path / name}.npy" for name in _inputs(path, True, True))
    result = subprocess.run(
        [*saved_model_cli(), "run", "--dir", str(export_dir), "--tag_set", "serve",
         "--signature_def", "segment_ct", "--inputs", files, "--outdir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, env=SUBPROCESS_ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_labels(np.load(tmp_path / "out" / "labels.npy"),
                        _reference(model, path, "ct", mirror=True, largest=True))


def test_segment_matches_predict_on_a_real_volume(real_data_dir, exported_v4, tmp_path) -> None:
    model, export_dir = exported_v4
    path = real_data_dir / "images" / "chaos_mr_t2spir_21.nii.gz"
    if not path.is_file():
        pytest.skip(f"{path} is absent from the real-volume folder")
    labels = _segment(export_dir, "mr", _inputs(path, mirror=False, largest=True))
    _assert_same_labels(labels, _reference(model, path, "mr", mirror=False, largest=True))


RIGHT_KIDNEY, LEFT_KIDNEY = LABEL_NAMES.index("right_kidney"), LABEL_NAMES.index("left_kidney")


def _kidney_by_side(windows: tf.Tensor) -> tf.Tensor:
    """A 'network' whose answer depends on the position in the window: a bright voxel is the
    left kidney in the window's high-x half (0.55 against 0.35), the right one in its low-x half
    (0.8 against 0.1); elsewhere background."""
    bright = windows[..., 0] > 0.5
    width = tf.shape(windows)[3]
    high_x = tf.broadcast_to(tf.range(width) >= width // 2, tf.shape(bright))

    def where(in_high: float, in_low: float, dark: float) -> tf.Tensor:
        return tf.where(bright, tf.where(high_x, in_high, in_low), dark)

    channels = [where(0.1, 0.1, 1.0), where(0.0, 0.0, 0.0), where(0.0, 0.0, 0.0),
                where(0.35, 0.8, 0.0), where(0.55, 0.1, 0.0)]
    return tf.stack(channels, axis=-1)


class _FakePredictor(Predictor):
    def __init__(self, preprocessing: PreprocessingConfig) -> None:
        super().__init__(("mr",), NUM_CLASSES, preprocessing, PATCH, (1, 1, 1), "<fake>")

    def _probabilities(self, batch: np.ndarray, modality: str) -> np.ndarray:
        return _kidney_by_side(tf.constant(batch)).numpy()


def test_mirror_axes_and_swap_act_as_in_dltk_mm_predict(tmp_path) -> None:
    """The export's mirror_axes / mirror_swap give dltk-mm-predict's labels in the graph; the
    swap decides which kidney a left-right flip makes of a kidney on the patient's left."""
    preprocessing = PreprocessingConfig(spacing_mm=4.0)
    array = np.zeros((18, 20, 16), np.float32)  # one window along x
    kidney = (slice(6, 12), slice(7, 13), slice(10, 14))  # the patient's left (high x, LPS)
    array[kidney] = 100.0
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((4.0, 4.0, 4.0))
    path = tmp_path / "kidney.nii.gz"
    sitk.WriteImage(image, str(path))
    inputs = {name: tf.constant(value) for name, value in
              _inputs(path, mirror=True, largest=False).items()}
    kidneys = {}
    for axes, swap in (((2,), True), ((2,), False), ((0, 1), True), ((0, 1, 2), False)):
        config = InferenceConfig(overlap=0.5, mirror=True, mirror_axes=axes, mirror_swap=swap)
        segment = tf.function(segment_endpoint(_kidney_by_side, "mr", preprocessing, PATCH,
                                               config, NUM_CLASSES))
        labels = segment(**inputs)["labels"].numpy()
        reference = predict_volume(_FakePredictor(preprocessing), path, "mr", config=config,
                                   with_probabilities=True)
        ranked = np.sort(sitk.GetArrayFromImage(reference.probabilities), axis=-1)
        _assert_same_labels(labels, (sitk.GetArrayFromImage(reference.labels),
                                     ranked[..., -1] - ranked[..., -2]))
        kidneys[axes, swap] = set(np.unique(labels[kidney]))
    assert kidneys[(2,), True] == kidneys[(0, 1), True] == {LEFT_KIDNEY}
    assert kidneys[(2,), False] == {RIGHT_KIDNEY}  # the flip's "right kidney", not swapped
