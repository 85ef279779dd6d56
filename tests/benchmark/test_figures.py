"""Figures 4-7: box plots and overlays are written as readable PNGs in the paper's colours."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest

from dltk_mm.benchmark import figures
from tests.benchmark.test_tables import synthetic_results


def phantom_volume() -> tuple[np.ndarray, np.ndarray]:
    """A 12 x 40 x 48 image with an organ of each class; slice 7 holds all four."""
    rng = np.random.default_rng(0)
    image = rng.normal(size=(12, 40, 48)).astype(np.float32)
    label = np.zeros(image.shape, dtype=np.uint8)
    label[2:10, 5:30, 4:22] = 1  # liver
    label[6:9, 8:20, 30:44] = 2  # spleen
    label[7:8, 30:36, 8:14] = 3  # right kidney (thin: only slice 7)
    label[5:11, 30:36, 34:40] = 4  # left kidney
    label[3, 30:31, 8:9] = 3  # a sliver of right kidney that must not count
    image[label > 0] += 2.0
    return image, label


def test_best_axial_slice_prefers_the_slice_through_most_organs() -> None:
    _, label = phantom_volume()
    assert figures.best_axial_slice(label) == 7


def test_blend_uses_the_paper_colours() -> None:
    image = np.zeros((4, 4), dtype=np.float32)
    label = np.array([[0, 1, 2, 3], [4, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    rgb = figures.blend(image, label, alpha=1.0)
    assert rgb.shape == (4, 4, 3)
    np.testing.assert_allclose(rgb[0, 1], (1.0, 0.0, 0.0))  # liver red
    np.testing.assert_allclose(rgb[0, 2], figures.LABEL_COLOURS[2])  # spleen green
    assert rgb[0, 3, 2] == 1.0 and rgb[0, 3, 0] == 0.0  # right kidney blue
    np.testing.assert_allclose(rgb[1, 0], figures.LABEL_COLOURS[4])  # left kidney yellow
    assert np.all(rgb[2] == rgb[2, 0])  # background stays grey


def test_boxplot_figure_is_written(tmp_path) -> None:
    path = figures.boxplot_figure(synthetic_results(), "ct", tmp_path / "box.png")
    assert path.is_file() and path.stat().st_size > 20_000
    assert [p.name for p in tmp_path.iterdir()] == ["box.png"]  # no temporary file left
    pixels = matplotlib.image.imread(path)
    height, width = pixels.shape[:2]
    assert width >= 1200 and height >= 400  # readable without zooming
    assert pixels[..., :3].std() > 0.05  # not blank


def test_overlay_figure_is_written_with_one_panel_per_scheme(tmp_path) -> None:
    image, label = phantom_volume()
    predictions = {"v4": label, "individual": np.where(label == 2, 0, label), "msbn": label * 0}
    path = figures.overlay_figure(image, label, predictions, tmp_path / "overlay.png",
                                  title="test", scores={"v4": 1.0, "individual": 0.75})
    assert path.is_file() and path.stat().st_size > 10_000
    pixels = matplotlib.image.imread(path)[..., :3]
    assert pixels.shape[1] > 2.5 * pixels.shape[0]  # four panels side by side
    red = (pixels[..., 0] > 0.7) & (pixels[..., 1] < 0.45) & (pixels[..., 2] < 0.45)
    assert red.sum() > 200  # the liver overlay is visible


def test_subject_scores_average_organs() -> None:
    scores = figures.subject_scores(synthetic_results(), "mr_1", "mr", ["v4", "msbn"], 1, 0)
    assert scores["v4"] == pytest.approx(0.715)
    assert scores["msbn"] == pytest.approx(0.615)
