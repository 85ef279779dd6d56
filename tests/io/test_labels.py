"""Tests of dltk_mm.io.labels: data-set label ids -> 0 bg, 1 liver, 2 spleen, 3 RK, 4 LK."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from dltk_mm.errors import ConfigurationError, InputDataError
from dltk_mm.io.labels import LABEL_NAMES, NUM_CLASSES, PRESETS, get_preset, map_labels


def test_project_map() -> None:
    assert LABEL_NAMES == ("background", "liver", "spleen", "right_kidney", "left_kidney")
    assert NUM_CLASSES == 5


@pytest.mark.parametrize(
    ("preset", "ids", "expected"),
    [
        ("btcv", range(14), [0, 2, 3, 4, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]),
        ("amos", range(16), [0, 2, 3, 4, 0, 0, 1] + [0] * 9),
        ("chaos", [0, 63, 126, 189, 252], [0, 1, 3, 4, 2]),
        ("totalsegmentator", range(118), [0, 2, 3, 4, 0, 1] + [0] * 112),
        ("identity", range(5), [0, 1, 2, 3, 4]),
    ],
)
def test_presets_map_every_known_id(preset: str, ids, expected: list[int]) -> None:
    source = np.array(list(ids), dtype=np.int16).reshape(1, 1, -1)
    mapped = map_labels(source, preset, source="x.nii.gz")
    assert mapped.dtype == np.uint8
    assert mapped.ravel().tolist() == expected


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_inverse_round_trip(name: str) -> None:
    preset = get_preset(name)
    inverse = preset.inverse()
    encoded = np.array([inverse[c] for c in range(5)])
    assert preset.apply(encoded).tolist() == [0, 1, 2, 3, 4]


def test_unknown_ids_name_file_and_values() -> None:
    labels = np.array([[[0, 1, 7, 9, 7]]], dtype=np.uint8)
    with pytest.raises(InputDataError) as error:
        map_labels(labels, "identity", source="/data/case_07_seg.nii.gz")
    message = str(error.value)
    assert "/data/case_07_seg.nii.gz" in message
    assert "[7, 9]" in message and "identity" in message and "preset" in message
    with pytest.raises(InputDataError, match=r"\[14, 200\]"):
        map_labels(np.array([0, 6, 14, 200]), "btcv", source="btcv.nii.gz")
    with pytest.raises(InputDataError, match=r"\[1, 2\]"):
        map_labels(np.array([0, 1, 2, 63]), "chaos", source="chaos.png")


def test_allow_unknown_maps_to_background_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    labels = np.array([0, 1, 7, 4, 9], dtype=np.int32)
    with caplog.at_level(logging.WARNING):
        mapped = map_labels(labels, "identity", source="seg.nii.gz", allow_unknown=True)
    assert mapped.tolist() == [0, 1, 0, 4, 0]
    assert any("seg.nii.gz" in record.getMessage() for record in caplog.records)


def test_non_integer_labels_rejected() -> None:
    with pytest.raises(InputDataError, match="non-integer") as error:
        map_labels(np.array([0.0, 1.0, 0.5]), "identity", source="image_not_label.nii.gz")
    assert "image_not_label.nii.gz" in str(error.value)
    assert map_labels(np.array([0.0, 6.0]), "btcv").tolist() == [0, 1]


def test_unknown_preset() -> None:
    with pytest.raises(ConfigurationError, match="btcv"):
        get_preset("nonsense")
    assert get_preset("BTCV") is PRESETS["btcv"]
