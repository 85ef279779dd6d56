"""Tests of dltk_mm.inference.segment: the one segmentation path."""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dltk_mm.core.label_map import LABEL_NAMES, NUM_CLASSES  # noqa: E402
from dltk_mm.errors import ConfigurationError  # noqa: E402
from dltk_mm.inference.segment import (  # noqa: E402
    InferenceConfig,
    StreamProbabilities,
    keep_components,
    mirrored,
    segment_volume,
)

PATCH = (16, 16, 16)
LIVER, RIGHT_KIDNEY, LEFT_KIDNEY = (LABEL_NAMES.index(n) for n in ("liver", "right_kidney",
                                                                    "left_kidney"))


def _kidney_by_side(windows: np.ndarray) -> np.ndarray:
    """A 'network' that is not mirror symmetric: a bright voxel is a kidney, the patient's left
    one (LPS: high x) in the right half of the window (0.55 against 0.35), the right one in the
    left half (0.8 against 0.1)."""
    bright = windows[..., 0] > 0.5
    left_half = np.arange(windows.shape[3]) >= windows.shape[3] // 2
    left_half = np.broadcast_to(left_half, bright.shape)
    probabilities = np.zeros((*windows.shape[:4], NUM_CLASSES), np.float32)
    probabilities[..., 0] = np.where(bright, 0.1, 1.0)
    probabilities[..., LEFT_KIDNEY] = np.where(bright, np.where(left_half, 0.55, 0.1), 0.0)
    probabilities[..., RIGHT_KIDNEY] = np.where(bright, np.where(left_half, 0.35, 0.8), 0.0)
    return probabilities


def _left_kidney_phantom() -> tuple[np.ndarray, np.ndarray]:
    image = np.zeros(PATCH, np.float32)
    kidney = np.zeros(PATCH, bool)
    kidney[5:10, 6:10, 10:14] = True  # the patient's left side (high x)
    image[kidney] = 1.0
    return image, kidney


def test_mirroring_keeps_a_left_kidney_only_phantom_labelled_left() -> None:
    image, kidney = _left_kidney_phantom()
    plain = segment_volume(image, _kidney_by_side, PATCH, InferenceConfig(), NUM_CLASSES)
    assert (plain.labels[kidney] == LEFT_KIDNEY).all()
    result = segment_volume(image, _kidney_by_side, PATCH, InferenceConfig(mirror=True),
                            NUM_CLASSES, keep_probabilities=True)
    assert (result.labels[kidney] == LEFT_KIDNEY).all()
    assert (result.labels[~kidney] == 0).all()
    # Half the flips see the kidney on the window's other side and say "right kidney" (0.8);
    # flipped back, their kidney channels swapped, that is 0.8 for the left one.
    np.testing.assert_allclose(result.probabilities[kidney][:, LEFT_KIDNEY], (0.55 + 0.8) / 2,
                               atol=1e-6)


def test_mirroring_without_the_kidney_swap_would_mislabel_the_phantom() -> None:
    # The phantom test above depends on the swap: averaging the flips without it confuses the
    # kidneys.
    image, kidney = _left_kidney_phantom()
    windows = image[np.newaxis, ..., np.newaxis]
    unswapped = mirrored(_kidney_by_side, swap_pairs=())(windows)[0]
    np.testing.assert_allclose(unswapped[kidney][:, RIGHT_KIDNEY], (0.35 + 0.8) / 2, atol=1e-6)
    assert (np.argmax(unswapped, axis=-1)[kidney] == RIGHT_KIDNEY).all()


def test_mirroring_averages_every_flip_of_the_three_axes() -> None:
    calls = []

    def record(windows: np.ndarray) -> np.ndarray:
        calls.append(windows.copy())
        return np.repeat(windows, 2, axis=-1)

    windows = np.random.default_rng(0).random((2, 4, 6, 8, 1)).astype(np.float32)
    result = mirrored(record, swap_pairs=())(windows)
    assert len(calls) == 8
    flips = [(), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)]
    assert {call.tobytes() for call in calls} == {
        np.ascontiguousarray(np.flip(windows, axes)).tobytes() for axes in flips}
    # A function that commutes with flips gives back its own output.
    np.testing.assert_allclose(result, np.repeat(windows, 2, axis=-1), atol=1e-6)


def test_mirror_axes_flip_only_those_axes() -> None:
    calls = []

    def record(windows: np.ndarray) -> np.ndarray:
        calls.append(windows.copy())
        return _kidney_by_side(windows)

    image = np.random.default_rng(4).normal(size=PATCH).astype(np.float32)  # one window
    config = InferenceConfig(mirror=True, mirror_axes=(0, 1))
    segment_volume(image, record, PATCH, config, NUM_CLASSES)
    assert len(calls) == 4  # the identity, z, y and both
    window = image[np.newaxis, ..., np.newaxis]
    padding = np.zeros((config.batch_size - 1, *PATCH, 1), np.float32)  # the filled-up batch

    def batch(axes: tuple[int, ...]) -> bytes:
        return np.concatenate([np.flip(window, axes), padding]).tobytes()

    assert {call.tobytes() for call in calls} == {batch(a) for a in ((), (1,), (2,), (1, 2))}
    x_flipped = {batch(a) for a in ((3,), (1, 3), (2, 3), (1, 2, 3))}
    assert not x_flipped & {call.tobytes() for call in calls}


def test_mirror_swap_off_averages_left_right_flips_without_the_kidney_swap() -> None:
    # A 'network' that names the kidney by its side in the window (as one that recognises side
    # by context would in a flipped image): the x-flip's output, flipped back, says "right" at
    # 0.8. Without the swap it is averaged as such; with it (the default) it counts as "left".
    image, kidney = _left_kidney_phantom()
    unswapped = segment_volume(image, _kidney_by_side, PATCH,
                               InferenceConfig(mirror=True, mirror_axes=(2,), mirror_swap=False),
                               NUM_CLASSES, keep_probabilities=True)
    np.testing.assert_allclose(unswapped.probabilities[kidney][:, RIGHT_KIDNEY], (0.35 + 0.8) / 2,
                               atol=1e-6)
    np.testing.assert_allclose(unswapped.probabilities[kidney][:, LEFT_KIDNEY], (0.55 + 0.1) / 2,
                               atol=1e-6)
    assert (unswapped.labels[kidney] == RIGHT_KIDNEY).all()
    swapped = segment_volume(image, _kidney_by_side, PATCH,
                             InferenceConfig(mirror=True, mirror_axes=(2,)), NUM_CLASSES,
                             keep_probabilities=True)
    np.testing.assert_allclose(swapped.probabilities[kidney][:, LEFT_KIDNEY], (0.55 + 0.8) / 2,
                               atol=1e-6)
    assert (swapped.labels[kidney] == LEFT_KIDNEY).all()
    # Flips that keep the left-right axis are never swapped, whatever mirror_swap says.
    no_x = [segment_volume(image, _kidney_by_side, PATCH,
                           InferenceConfig(mirror=True, mirror_axes=(0, 1), mirror_swap=swap),
                           NUM_CLASSES, keep_probabilities=True).probabilities
            for swap in (True, False)]
    np.testing.assert_array_equal(no_x[0], no_x[1])


def _organ_with_island() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.zeros((24, 24, 24), np.uint8)
    organ = np.zeros_like(labels, dtype=bool)
    organ[2:12, 3:13, 4:14] = True  # 1000 voxels
    island = np.zeros_like(organ)
    island[19:21, 19:21, 19:21] = True  # 8 voxels, far away
    labels[organ | island] = LIVER
    labels[15:18, 2:5, 2:5] = LEFT_KIDNEY  # 27 voxels, another organ's only component
    return labels, organ, island


def test_largest_component_removes_a_distant_island_and_keeps_the_organ() -> None:
    labels, organ, island = _organ_with_island()
    cleaned = keep_components(labels, NUM_CLASSES, largest=True)
    assert (cleaned[organ] == LIVER).all()
    assert (cleaned[island] == 0).all()
    assert (cleaned == LEFT_KIDNEY).sum() == 27
    # Through the segmentation path, from probabilities that put the liver in both places.
    image = (labels == LIVER).astype(np.float32)

    def liver_where_bright(windows: np.ndarray) -> np.ndarray:
        bright = windows[..., 0] > 0.5
        probabilities = np.zeros((*windows.shape[:4], NUM_CLASSES), np.float32)
        probabilities[..., 0] = np.where(bright, 0.2, 0.8)
        probabilities[..., LIVER] = np.where(bright, 0.8, 0.2)
        return probabilities

    plain = segment_volume(image, liver_where_bright, PATCH, InferenceConfig(), NUM_CLASSES)
    assert (plain.labels[island] == LIVER).all()
    result = segment_volume(image, liver_where_bright, PATCH,
                            InferenceConfig(largest_component=True), NUM_CLASSES)
    np.testing.assert_array_equal(result.labels == LIVER, organ)


def test_min_component_voxels_removes_only_small_components() -> None:
    labels, organ, island = _organ_with_island()
    cleaned = keep_components(labels, NUM_CLASSES, min_voxels=20)
    assert (cleaned[organ] == LIVER).all() and (cleaned[island] == 0).all()
    assert (cleaned == LEFT_KIDNEY).sum() == 27
    assert (keep_components(labels, NUM_CLASSES, min_voxels=30) == LEFT_KIDNEY).sum() == 0
    np.testing.assert_array_equal(keep_components(labels, NUM_CLASSES), labels)


def _ranked_by_itk(labels: np.ndarray, largest: bool, min_voxels: int) -> np.ndarray:
    """The reference: per organ over the whole map, ITK's components ranked by size (ties in
    raster order) with RelabelComponent."""
    import SimpleITK as sitk

    result = labels.copy()
    for organ in range(1, NUM_CLASSES):
        mask = result == organ
        components = sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)))
        ranked = sitk.GetArrayFromImage(sitk.RelabelComponent(
            components, minimumObjectSize=min_voxels, sortByObjectSize=True))
        result[mask & ((ranked != 1) if largest else (ranked == 0))] = 0
    return result


def test_components_match_itk_ranking_on_random_maps() -> None:
    rng = np.random.default_rng(6)
    for _ in range(60):
        shape = tuple(int(n) for n in rng.integers(2, 12, 3))
        labels = ((rng.random(shape) < rng.uniform(0.05, 0.7))
                  * rng.integers(1, NUM_CLASSES, shape)).astype(np.uint8)
        for largest, min_voxels in ((True, 0), (False, 2), (True, 3)):
            np.testing.assert_array_equal(
                keep_components(labels, NUM_CLASSES, largest=largest, min_voxels=min_voxels),
                _ranked_by_itk(labels, largest, min_voxels))


def test_of_equally_large_components_the_first_in_raster_order_is_kept() -> None:
    labels = np.zeros((6, 8, 8), np.uint8)
    labels[4:6, 0:2, 0:2] = LIVER  # 8 voxels, later in raster order (higher z)
    labels[0:2, 6:8, 6:8] = LIVER  # 8 voxels, first in raster order
    cleaned = keep_components(labels, NUM_CLASSES, largest=True)
    assert (cleaned[0:2, 6:8, 6:8] == LIVER).all() and (cleaned[4:6] == 0).all()
    assert (keep_components(labels, NUM_CLASSES, largest=True, min_voxels=9) == 0).all()


def _ramp_along_x(windows: np.ndarray) -> np.ndarray:
    """Probabilities that depend on the position in the window: class 1 rises along x."""
    ramp = np.arange(windows.shape[3], dtype=np.float32) / (windows.shape[3] - 1)
    ramp = np.broadcast_to(ramp, windows.shape[:4])
    return np.stack([1.0 - ramp, ramp], axis=-1)


def _pointwise(windows: np.ndarray) -> np.ndarray:
    p = 1.0 / (1.0 + np.exp(-windows[..., 0]))
    return np.stack([1.0 - p, p], axis=-1)


def test_gaussian_and_uniform_differ_only_in_the_blending() -> None:
    image = np.random.default_rng(1).normal(size=(16, 16, 24)).astype(np.float32)
    uniform, gaussian = (InferenceConfig(weighting=w) for w in ("uniform", "gaussian"))
    # Where overlapping windows agree (a voxel-wise function), the blending changes nothing.
    a = segment_volume(image, _pointwise, PATCH, uniform, 2, keep_probabilities=True)
    b = segment_volume(image, _pointwise, PATCH, gaussian, 2, keep_probabilities=True)
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)
    np.testing.assert_array_equal(a.labels, b.labels)
    # Windows start at x = 0 and 8; x = 3 is seen by one window, x = 10 by both (at 10 and 2).
    a = segment_volume(image, _ramp_along_x, PATCH, uniform, 2, keep_probabilities=True)
    b = segment_volume(image, _ramp_along_x, PATCH, gaussian, 2, keep_probabilities=True)
    np.testing.assert_allclose(a.probabilities[..., 3, 1], 3 / 15, atol=1e-6)
    np.testing.assert_allclose(b.probabilities[..., 3, 1], 3 / 15, atol=1e-6)
    np.testing.assert_allclose(a.probabilities[..., 10, 1], (10 / 15 + 2 / 15) / 2, atol=1e-6)
    weight = [np.exp(-0.5 * ((i - 7.5) / 2.0) ** 2) for i in (10, 2)]  # sigma = 16 / 8
    expected = (weight[0] * 10 / 15 + weight[1] * 2 / 15) / sum(weight)
    np.testing.assert_allclose(b.probabilities[..., 10, 1], expected, atol=1e-5)


def test_segmentation_is_the_argmax_and_reports_progress() -> None:
    image = np.random.default_rng(2).normal(size=(20, 18, 16)).astype(np.float32)
    progress = []
    result = segment_volume(image, _pointwise, PATCH, InferenceConfig(batch_size=3), 2,
                            keep_probabilities=True, progress=lambda d, t: progress.append((d, t)))
    assert result.labels.dtype == np.uint8 and result.labels.shape == image.shape
    np.testing.assert_array_equal(result.labels, np.argmax(result.probabilities, axis=-1))
    assert result.num_windows == progress[-1][1] == progress[-1][0] == 4
    assert segment_volume(image, _pointwise, PATCH, InferenceConfig(), 2).probabilities is None


def test_segmentation_never_holds_a_whole_probability_volume() -> None:
    """Without keep_probabilities, the host's peak (the accumulator is one patch deep, the argmax
    goes slab by slab into uint8) stays far below one (z, y, x, C) float32 volume."""
    import tracemalloc

    image = np.zeros((768, 24, 32), np.float32)  # 48 patches deep
    whole = image.size * 2 * 4
    tracemalloc.start()
    try:
        result = segment_volume(image, _pointwise, PATCH, InferenceConfig(), 2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.labels.shape == image.shape
    assert peak < 0.4 * whole, (peak, whole)


def test_inference_config_round_trip_and_refusals() -> None:
    config = InferenceConfig(overlap=0.25, weighting="gaussian", batch_size=2, mirror=True,
                             mirror_axes=(0, 2), mirror_swap=False, largest_component=True,
                             min_component_voxels=10)
    assert InferenceConfig.from_dict(config.to_dict()) == config
    assert InferenceConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert InferenceConfig.from_dict({}) == InferenceConfig()
    # A config.json / export written before the mirroring options: their defaults.
    old = {k: v for k, v in config.to_dict().items() if k not in ("mirror_axes", "mirror_swap")}
    loaded = InferenceConfig.from_dict(old)
    assert (loaded.mirror_axes, loaded.mirror_swap) == ((0, 1, 2), True)
    assert InferenceConfig(mirror_axes=[2, 0]).mirror_axes == (0, 2)  # a JSON list, any order
    assert InferenceConfig(mirror_axes=()).mirror_axes == ()  # allowed while mirroring is off
    with pytest.raises(ConfigurationError, match="unknown inference setting.*tta"):
        InferenceConfig.from_dict({"tta": True})
    for bad in ({"overlap": 1.0}, {"weighting": "cosine"}, {"batch_size": 0},
                {"min_component_voxels": -1}, {"mirror_axes": (0, 3)},
                {"mirror_axes": (1, 1)}, {"mirror_axes": (-1,)}, {"mirror_axes": ("x",)},
                {"mirror_axes": (True,)}, {"mirror_axes": (), "mirror": True}):
        with pytest.raises(ConfigurationError, match="overlap|weighting|batch|component|mirror"):
            InferenceConfig(**bad)


def test_mirroring_options_are_flags() -> None:
    from absl import flags

    from dltk_mm.inference.config_flags import define_inference_flags, inference_from_flags

    fv = flags.FlagValues()
    define_inference_flags(fv)
    fv(["prog", "--mirror", "--mirror_axes=0,1", "--nomirror_swap"])
    config = inference_from_flags(fv, InferenceConfig())
    assert (config.mirror, config.mirror_axes, config.mirror_swap) == (True, (0, 1), False)
    fv = flags.FlagValues()
    define_inference_flags(fv)
    fv(["prog", "--mirror", "--mirror_axes=0,0"])
    with pytest.raises(ConfigurationError, match="mirror_axes must be distinct"):
        inference_from_flags(fv, InferenceConfig())


def test_paper_protocol_is_the_default() -> None:
    config = InferenceConfig()
    assert (config.overlap, config.weighting, config.mirror, config.largest_component,
            config.min_component_voxels) == (0.5, "uniform", False, False, 0)
    assert (config.mirror_axes, config.mirror_swap) == ((0, 1, 2), True)  # today's mirroring


def test_stream_probabilities_are_traced_once_per_stream() -> None:
    from dltk_mm.networks import build_multistream

    model = build_multistream("v4", modalities=("mr", "ct"), filters=(2, 4, 4, 4, 8),
                              num_res_units=1)
    streams = StreamProbabilities(model)
    rng = np.random.default_rng(3)
    for shape in ((1, 16, 16, 16, 1), (3, 16, 16, 16, 1), (2, 24, 16, 32, 1)):
        windows = rng.normal(size=shape).astype(np.float32)
        for modality in ("mr", "ct"):
            result = streams(windows, modality)
            assert result.shape == (*shape[:4], model.num_classes)
            assert result.dtype == np.float32
            expected = model.streams[modality](windows, training=False)["probabilities"]
            np.testing.assert_allclose(result, np.asarray(expected), atol=1e-5)
    for modality in ("mr", "ct"):
        assert streams.function(modality).experimental_get_tracing_count() == 1
    with pytest.raises(ConfigurationError, match="unknown modality 'pet'"):
        streams.function("pet")


def test_many_models_in_one_process_trigger_no_retracing_warning(caplog) -> None:
    """A benchmark builds one StreamProbabilities per validation and evaluation: their functions
    must not pool into TensorFlow's 'triggered tf.function retracing' warning."""
    import logging

    from dltk_mm.networks import build_multistream

    windows = np.zeros((1, 8, 8, 8, 1), np.float32)
    with caplog.at_level(logging.WARNING):
        for _ in range(7):
            model = build_multistream("joint", modalities=("mr", "ct"), filters=(2, 2, 2, 2, 2),
                                      num_res_units=1)
            streams = StreamProbabilities(model)
            for modality in ("mr", "ct"):
                streams(windows, modality)
                streams(windows, modality)
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]
