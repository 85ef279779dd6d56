"""Tests of dltk_mm.io.labels: data-set label ids -> 0 bg, 1 liver, 2 spleen, 3 RK, 4 LK."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from dltk_mm.core import label_map
from dltk_mm.errors import ConfigurationError, InputDataError
from dltk_mm.io.labels import (
    LABEL_NAMES,
    NUM_CLASSES,
    PRESETS,
    get_preset,
    is_preset_file,
    load_preset_file,
    map_labels,
    organ_id_from_name,
    preset_from_label_names,
    preset_problem,
    resolve_preset_reference,
    write_preset_file,
)


def test_project_map() -> None:
    assert LABEL_NAMES == ("background", "liver", "spleen", "right_kidney", "left_kidney")
    assert NUM_CLASSES == 5
    assert LABEL_NAMES is label_map.LABEL_NAMES  # one list of organs, re-exported


@pytest.mark.parametrize(
    ("preset", "ids", "expected"),
    [
        ("btcv", range(14), [0, 2, 3, 4, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]),
        ("amos", range(16), [0, 2, 3, 4, 0, 0, 1] + [0] * 9),
        ("chaos", [0, 63, 126, 189, 252], [0, 1, 3, 4, 2]),
        ("chaos_ct", [0, 1, 128, 255], [0, 1, 1, 1]),
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
    organs = [0] + [LABEL_NAMES.index(organ) for organ in preset.organs()]
    encoded = np.array([inverse[c] for c in organs])
    assert preset.apply(encoded).tolist() == organs


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


def test_organs_a_preset_annotates() -> None:
    assert get_preset("chaos_ct").organs() == ("liver",)
    assert get_preset("btcv").organs() == LABEL_NAMES[1:]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("liver", 1), ("Liver", 1), ("spleen", 2), ("right_kidney", 3), ("kidney_right", 3),
     ("Kidney (R)", 3), ("right kidney", 3), ("kidney R", 3), ("left_kidney", 4),
     ("kidney_left", 4), ("Kidney (L)", 4), ("L kidney", 4), ("kidney", None),
     ("liver tumour", None), ("kidney cyst", None), ("stomach", None), ("background", None)],
)
def test_organ_names_as_data_sets_spell_them(name: str, expected: int | None) -> None:
    assert organ_id_from_name(name) == expected


def test_preset_from_label_names_warns_about_missing_organs() -> None:
    preset, missing = preset_from_label_names(
        {0: "background", 1: "Liver", 2: "Kidney (R)", 3: "stomach"}, "mine")
    assert missing == ("spleen", "left_kidney")
    assert preset.apply(np.array([0, 1, 2, 3])).tolist() == [0, 1, 3, 0]
    with pytest.raises(InputDataError, match="4"):
        preset.apply(np.array([4]))
    with pytest.raises(InputDataError, match="both name the liver"):
        preset_from_label_names({1: "liver", 2: "Liver"}, "twice")


def test_json_preset_file_round_trip(tmp_path: Path) -> None:
    preset, _ = preset_from_label_names({0: "background", 1: "spleen", 5: "liver", 7: "aorta"},
                                        "derived", "from a dataset.json")
    path = write_preset_file(preset, tmp_path / "derived.labels.json",
                             {0: "background", 1: "spleen", 5: "liver", 7: "aorta"})
    content = json.loads(path.read_text())
    assert content["labels"] == {"0": "background", "1": "spleen", "5": "liver",
                                 "7": "other: aorta"}
    loaded = get_preset(str(path))
    assert loaded.name == "derived" and dict(loaded.mapping) == dict(preset.mapping)
    assert loaded.valid_ids == preset.valid_ids
    assert map_labels(np.array([0, 1, 5, 7]), str(path)).tolist() == [0, 2, 1, 0]


def test_csv_preset_file(tmp_path: Path) -> None:
    path = tmp_path / "My_Map.csv"
    path.write_text("id,label\n0,background\n10,liver\n20,2\n30,gallbladder\n")
    preset = load_preset_file(path)
    assert preset.name == "My_Map"
    assert preset.apply(np.array([0, 10, 20, 30])).tolist() == [0, 1, 2, 0]
    with pytest.raises(InputDataError, match=r"\[40\]"):
        preset.apply(np.array([40]), source="seg.nii.gz")


@pytest.mark.parametrize(
    ("content", "match"),
    [('{"labels": []}', "labels"), ("{not json", "not valid JSON"),
     ('{"labels": {"x": "liver"}}', "not an integer"), ('{"labels": {"1": 9}}', "project id 9"),
     ('{"labels": {}}', "lists no label ids")],
)
def test_bad_preset_files_name_the_file(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InputDataError, match=match) as error:
        get_preset(str(path))
    assert str(path) in str(error.value)


def test_preset_references(tmp_path: Path) -> None:
    assert is_preset_file("maps/My.JSON") and is_preset_file("a.csv") and not is_preset_file("btcv")
    assert resolve_preset_reference("BTCV", tmp_path) == "btcv"
    assert resolve_preset_reference("Maps/My.json", tmp_path) == str(tmp_path / "Maps/My.json")
    assert preset_problem("amos") is None
    assert "not found" in preset_problem(str(tmp_path / "missing.json"))
    assert "unknown label preset" in preset_problem("nonsense")
