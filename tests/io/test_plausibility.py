"""Tests of dltk_mm.io.plausibility: warnings naming the file for data that is probably wrong.

The volumes go through :func:`dltk_mm.io.preprocessing.preprocess_volume`, the reading path of
the preprocess, train and predict commands.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from absl import logging

from dltk_mm.io.geometry import Geometry
from dltk_mm.io.preprocessing import preprocess_volume
from dltk_mm.io.readers import write_volume

GEOMETRY = Geometry.from_orientation("LPS", (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (16, 16, 16))


@pytest.fixture
def warnings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    messages: list[str] = []
    monkeypatch.setattr(logging, "warning", lambda fmt, *args: messages.append(fmt % args))
    return messages


def _pair(tmp_path: Path, image: np.ndarray, label: np.ndarray | None = None) -> tuple[Path, Path]:
    if label is None:
        label = np.zeros(image.shape, np.uint8)
        label[4:10, 4:10, 4:10] = 1
    return (write_volume(image.astype(np.float32), tmp_path / "image.nii.gz", GEOMETRY),
            write_volume(label.astype(np.uint8), tmp_path / "label.nii.gz", GEOMETRY))


def _body_ct() -> np.ndarray:
    """Air around a soft-tissue body: a plausible CT in HU."""
    image = np.full((16, 16, 16), -1000.0)
    image[2:14, 2:14, 2:14] = np.random.default_rng(0).normal(40.0, 20.0, (12, 12, 12))
    return image


def test_a_plausible_ct_and_label_give_no_warning(tmp_path, warnings):
    image, label = _pair(tmp_path, _body_ct())
    preprocess_volume(image, label, "ct")
    assert warnings == []


def test_an_all_zero_label_map_is_named(tmp_path, warnings):
    image, label = _pair(tmp_path, _body_ct(), np.zeros((16, 16, 16), np.uint8))
    preprocess_volume(image, label, "ct")
    assert any(str(label) in m and "no organ voxel" in m and "preset" in m for m in warnings)


def test_a_constant_image_is_named(tmp_path, warnings):
    image, label = _pair(tmp_path, np.full((16, 16, 16), 7.0))
    preprocess_volume(image, label, "mr")
    assert any(str(image) in m and "constant" in m for m in warnings)


@pytest.mark.parametrize(("values", "why"), [
    (lambda ct: ct - 3000.0, "below -1000 HU"),  # most voxels clipped at -1000
    (lambda ct: ct + 3024.0, "median"),  # stored with an offset: median far above soft tissue
])
def test_a_ct_outside_the_hounsfield_range_is_named(tmp_path, warnings, values, why):
    image, label = _pair(tmp_path, values(_body_ct()))
    preprocess_volume(image, label, "ct")
    assert any(str(image) in m and "Hounsfield" in m and why in m for m in warnings)


def test_an_mr_is_not_checked_against_hounsfield_units(tmp_path, warnings):
    image, label = _pair(tmp_path, _body_ct() + 5000.0)
    preprocess_volume(image, label, "mr")
    assert warnings == []
