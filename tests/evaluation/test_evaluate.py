"""Tests of dltk_mm.evaluation.evaluate on small synthetic NIfTI files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from dltk_mm.core.label_map import LABEL_NAMES as CLASS_NAMES
from dltk_mm.errors import ConfigurationError, InputDataError
from dltk_mm.evaluation.evaluate import (
    ALL_ORGANS,
    RESULT_COLUMNS,
    EvaluationPair,
    evaluate_pairs,
    format_summary_table,
    input_files,
    pairs_from_folders,
    pairs_from_manifest,
    prediction_path,
    summarise,
)

SPACING_XYZ = (0.8, 1.0, 3.0)
ORIGIN = (-10.0, 5.0, 2.5)
DIRECTION_RAS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def _write(array: np.ndarray, path: Path, spacing=SPACING_XYZ, origin=ORIGIN) -> Path:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(DIRECTION_RAS)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def _label_map() -> np.ndarray:
    label = np.zeros((12, 16, 16), np.uint8)
    label[2:6, 2:8, 2:8] = 1  # liver: 4 slices
    label[8, 2:8, 2:8] = 2  # spleen: a one-slice plate
    label[2:5, 10:14, 2:6] = 3  # right kidney
    label[2:5, 10:14, 10:14] = 4  # left kidney
    return label


def _shifted_prediction() -> np.ndarray:
    prediction = _label_map()
    prediction[prediction == 1] = 0
    prediction[3:7, 2:8, 2:8] = 1  # liver shifted by one slice: Dice 3/4
    prediction[prediction == 2] = 0
    prediction[10, 2:8, 2:8] = 2  # spleen plate shifted by two slices: every distance 2 * 3 mm
    prediction[prediction == 4] = 0  # left kidney missed entirely
    return prediction


@pytest.fixture()
def dataset(tmp_path: Path) -> dict[str, Path]:
    label = _label_map()
    paths = {
        "labels": tmp_path / "labels",
        "predictions": tmp_path / "predictions",
    }
    _write(label, paths["labels"] / "perfect.nii.gz")
    _write(label, prediction_path(paths["predictions"], "perfect"))
    _write(label, paths["labels"] / "shifted.nii.gz")
    _write(_shifted_prediction(), prediction_path(paths["predictions"], "shifted"))
    return paths


def _pairs(paths: dict[str, Path], modality: str = "ct") -> list[EvaluationPair]:
    return [
        EvaluationPair(s, modality, prediction_path(paths["predictions"], s),
                       paths["labels"] / f"{s}.nii.gz")
        for s in ("perfect", "shifted")
    ]


def test_prediction_naming_convention(tmp_path: Path) -> None:
    assert prediction_path(tmp_path, "case_07") == tmp_path / "case_07.nii.gz"


def test_perfect_and_shifted_predictions_give_known_values(dataset) -> None:
    progress = []
    results = evaluate_pairs(_pairs(dataset), progress=lambda d, t, rows: progress.append((d, t)))
    assert list(results.columns) == list(RESULT_COLUMNS)
    assert progress == [(1, 2), (2, 2)]
    assert len(results) == 2 * 4
    perfect = results[results.subject_id == "perfect"].set_index("organ")
    assert list(perfect.index) == list(CLASS_NAMES[1:])
    np.testing.assert_array_equal(perfect["dice"], 1.0)
    np.testing.assert_array_equal(perfect["hd95_mm"], 0.0)
    np.testing.assert_array_equal(perfect["assd_mm"], 0.0)

    shifted = results[results.subject_id == "shifted"].set_index("organ")
    assert shifted.loc["liver", "dice"] == pytest.approx(0.75)
    assert shifted.loc["spleen", "dice"] == 0.0
    # spacing along z (array axis 0) is 3 mm: the plates are 2 slices = 6 mm apart everywhere
    assert shifted.loc["spleen", "hd95_mm"] == pytest.approx(6.0, rel=1e-5)
    assert shifted.loc["spleen", "assd_mm"] == pytest.approx(6.0, rel=1e-5)
    # liver shifted by one slice: the largest surface distance is one slice (3 mm)
    assert 0 < shifted.loc["liver", "hd95_mm"] <= 3.0 + 1e-5
    assert shifted.loc["right_kidney", "dice"] == 1.0
    assert shifted.loc["left_kidney", "dice"] == 0.0
    assert shifted.loc["left_kidney", "hd95_mm"] == math.inf
    assert set(results["modality"]) == {"ct"}
    assert results.loc[0, "prediction"].endswith("perfect.nii.gz")


def test_organ_absent_from_both_maps_is_nan(tmp_path: Path) -> None:
    label = np.zeros((6, 6, 6), np.uint8)
    label[1:4, 1:4, 1:4] = 1
    _write(label, tmp_path / "l.nii.gz")
    _write(label, tmp_path / "p.nii.gz")
    results = evaluate_pairs([("s", "MR", tmp_path / "p.nii.gz", tmp_path / "l.nii.gz")])
    spleen = results.set_index("organ").loc["spleen"]
    assert math.isnan(spleen["dice"]) and math.isnan(spleen["hd95_mm"])
    assert set(results["modality"]) == {"mr"}


@pytest.mark.parametrize(
    ("changes", "reported"),
    [
        ({"spacing": (0.8, 1.0, 2.0)}, "spacing (0.8, 1, 2) vs (0.8, 1, 3)"),
        ({"origin": (0.0, 5.0, 2.5)}, "origin (0, 5, 2.5) vs (-10, 5, 2.5)"),
    ],
)
def test_grid_mismatch_is_a_clear_error(tmp_path: Path, changes, reported) -> None:
    label = _label_map()
    label_file = _write(label, tmp_path / "labels" / "a.nii.gz")
    prediction_file = _write(label, tmp_path / "predictions" / "a.nii.gz", **changes)
    with pytest.raises(InputDataError) as error:
        evaluate_pairs([("a", "ct", prediction_file, label_file)])
    message = str(error.value)
    assert str(prediction_file) in message and str(label_file) in message
    assert reported in message and "resample" in message


def test_size_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    label_file = _write(_label_map(), tmp_path / "l.nii.gz")
    prediction_file = _write(_label_map()[:-1], tmp_path / "p.nii.gz")
    with pytest.raises(InputDataError, match="size"):
        evaluate_pairs([("a", "ct", prediction_file, label_file)])


def test_missing_prediction_names_the_subject(dataset) -> None:
    pairs = _pairs(dataset)
    pairs.append(EvaluationPair("ghost_17", "ct", prediction_path(dataset["predictions"],
                                                                  "ghost_17"),
                                dataset["labels"] / "perfect.nii.gz"))
    with pytest.raises(InputDataError, match="subject ghost_17") as error:
        evaluate_pairs(pairs)
    assert "ghost_17.nii.gz" in str(error.value)


def test_label_values_outside_the_label_map_are_rejected(tmp_path: Path) -> None:
    label = _label_map()
    label_file = _write(label, tmp_path / "l.nii.gz")
    bad = label.copy()
    bad[0, 0, 0] = 7
    prediction_file = _write(bad, tmp_path / "p.nii.gz")
    with pytest.raises(InputDataError, match=r"p\.nii\.gz.*label value\(s\) 7"):
        evaluate_pairs([("a", "ct", prediction_file, label_file)])


def test_pairs_from_folders_match_by_subject_id(dataset) -> None:
    _write(_label_map(), dataset["predictions"] / "unlabelled.nii.gz")
    pairs = pairs_from_folders(dataset["predictions"], dataset["labels"], "CT")
    assert [p.subject_id for p in pairs] == ["perfect", "shifted"]
    assert all(p.modality == "ct" for p in pairs)
    assert pairs[1].prediction == dataset["predictions"] / "shifted.nii.gz"
    assert pairs[1].label == dataset["labels"] / "shifted.nii.gz"
    with pytest.raises(InputDataError, match="no label file"):
        pairs_from_folders(dataset["predictions"], dataset["predictions"] / "..", "ct")


def _manifest(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_pairs_from_manifest_with_a_folder_or_a_prediction_column(dataset, tmp_path) -> None:
    rows = [
        {"subject_id": "perfect", "modality": "CT", "image": "img/perfect.nii.gz",
         "label": "labels/perfect.nii.gz", "prediction": "predictions/perfect.nii.gz"},
        {"subject_id": "shifted", "modality": "mr", "image": "img/shifted.nii.gz",
         "label": "labels/shifted.nii.gz", "prediction": "predictions/shifted.nii.gz"},
        {"subject_id": "unlabelled", "modality": "mr", "image": "img/u.nii.gz",
         "label": "", "prediction": ""},
    ]
    manifest = _manifest(tmp_path, rows)
    from_column = pairs_from_manifest(manifest)
    from_folder = pairs_from_manifest(manifest, predictions_dir=dataset["predictions"])
    assert [p.subject_id for p in from_column] == ["perfect", "shifted"]  # unlabelled skipped
    assert [p.modality for p in from_column] == ["ct", "mr"]
    for a, b in zip(from_column, from_folder, strict=True):
        assert a.prediction.resolve() == b.prediction.resolve()
        assert a.label == dataset["labels"].resolve() / f"{a.subject_id}.nii.gz"
    only_mr = pairs_from_manifest(manifest, modality="MR")
    assert [p.subject_id for p in only_mr] == ["shifted"]
    with pytest.raises(InputDataError, match="no row has modality 'pet'"):
        pairs_from_manifest(manifest, modality="pet")
    results = evaluate_pairs(from_column)
    assert results.groupby("modality").size().to_dict() == {"ct": 4, "mr": 4}


def _as_btcv_ids(label: np.ndarray) -> np.ndarray:
    """The project map written in BTCV ids (6 liver, 1 spleen, 2/3 kidneys), plus a BTCV organ
    the project does not segment (7, aorta) that must count as background."""
    btcv = np.zeros_like(label)
    for project_id, btcv_id in {1: 6, 2: 1, 3: 2, 4: 3}.items():
        btcv[label == project_id] = btcv_id
    btcv[10, 12:14, 12:14] = 7
    return btcv


def test_reference_labels_in_a_data_sets_own_ids(tmp_path: Path) -> None:
    label = _label_map()
    reference = _write(_as_btcv_ids(label), tmp_path / "btcv_label.nii.gz")
    prediction = _write(label, tmp_path / "prediction.nii.gz")
    results = evaluate_pairs([("s", "ct", prediction, reference)], label_preset="btcv")
    np.testing.assert_array_equal(results["dice"], 1.0)
    with pytest.raises(InputDataError, match=r"btcv_label\.nii\.gz.*label value\(s\) 6, 7"):
        evaluate_pairs([("s", "ct", prediction, reference)])  # identity: ids 6, 7 unknown
    with pytest.raises(ConfigurationError, match="num_classes=3 fits only the 'identity'"):
        evaluate_pairs([("s", "ct", prediction, reference)], num_classes=3, label_preset="btcv")
    with pytest.raises(ConfigurationError, match="unknown label preset 'nope'"):
        evaluate_pairs([("s", "ct", prediction, reference)], label_preset="nope")


def test_unknown_reference_ids_fail_unless_allowed(tmp_path: Path) -> None:
    label = _label_map()
    btcv = _as_btcv_ids(label)
    btcv[0, 0, 0] = 20  # not a BTCV id
    reference = _write(btcv, tmp_path / "odd.nii.gz")
    prediction = _write(label, tmp_path / "prediction.nii.gz")
    with pytest.raises(InputDataError, match=r"odd\.nii\.gz: label values \[20\].*'btcv'"):
        evaluate_pairs([("s", "ct", prediction, reference)], label_preset="btcv")
    results = evaluate_pairs([("s", "ct", prediction, reference)], label_preset="btcv",
                             allow_unknown_labels=True)
    np.testing.assert_array_equal(results["dice"], 1.0)


def test_unknown_ids_with_the_identity_preset_count_as_background_when_allowed(tmp_path):
    label = _label_map()
    odd = label.copy()
    odd[10, 12:14, 12:14] = 7  # outside 0..4
    reference = _write(odd, tmp_path / "odd.nii.gz")
    prediction = _write(label, tmp_path / "prediction.nii.gz")
    with pytest.raises(InputDataError, match=r"odd\.nii\.gz.*label value\(s\) 7"):
        evaluate_pairs([("s", "ct", prediction, reference)])
    results = evaluate_pairs([("s", "ct", prediction, reference)], allow_unknown_labels=True)
    np.testing.assert_array_equal(results["dice"], 1.0)
    # predictions are always checked: unknown ids there are the predictor's bug
    with pytest.raises(InputDataError, match=r"odd\.nii\.gz: the prediction"):
        evaluate_pairs([("s", "ct", reference, prediction)], allow_unknown_labels=True)


def test_manifest_rows_reading_one_prediction_are_refused_with_their_lines(dataset, tmp_path):
    rows = [{"subject_id": s, "modality": m, "image": f"img/{s}.nii.gz",
             "label": f"labels/{s}.nii.gz"}
            for s, m in (("perfect", "ct"), ("shifted", "ct"), ("perfect", "mr"))]
    manifest = _manifest(tmp_path, rows)
    with pytest.raises(InputDataError, match=r"line 2 \(subject perfect, ct\) and line 4 "
                                             r"\(subject perfect, mr\)"):
        pairs_from_manifest(manifest, predictions_dir=dataset["predictions"])
    # with a prediction column naming distinct files the same id in two modalities is fine
    _write(_label_map(), dataset["predictions"] / "perfect_mr.nii.gz")
    for row in rows:
        row["prediction"] = f"predictions/{row['subject_id']}.nii.gz"
    rows[2]["prediction"] = "predictions/perfect_mr.nii.gz"
    pairs = pairs_from_manifest(_manifest(tmp_path, rows))
    assert [p.prediction.name for p in pairs] == ["perfect.nii.gz", "shifted.nii.gz",
                                                  "perfect_mr.nii.gz"]
    assert [p.image.name for p in pairs] == ["perfect.nii.gz", "shifted.nii.gz", "perfect.nii.gz"]
    rows[2]["prediction"] = "predictions/perfect.nii.gz"
    with pytest.raises(InputDataError, match="line 2 .* and line 4 .* both read prediction"):
        pairs_from_manifest(_manifest(tmp_path, rows))


def test_input_files_lists_predictions_labels_and_images(dataset, tmp_path) -> None:
    pair = EvaluationPair("a", "ct", tmp_path / "p.nii.gz", tmp_path / "l.nii.gz", None,
                          tmp_path / "i.nii.gz")
    assert input_files([pair]) == {(tmp_path / n).resolve() for n in ("p.nii.gz", "l.nii.gz",
                                                                       "i.nii.gz")}


def test_reference_labels_mapped_by_a_preset_file(tmp_path: Path, monkeypatch) -> None:
    from dltk_mm.io.labels import LabelPreset, write_preset_file

    label = _label_map()
    grey = np.select([label == 1, label == 2, label == 3, label == 4], [63, 252, 126, 189], 0)
    reference = _write(grey, tmp_path / "grey.nii.gz")
    prediction = _write(label, tmp_path / "prediction.nii.gz")
    preset = LabelPreset("Grey", {0: 0, 63: 1, 252: 2, 126: 3, 189: 4},
                         frozenset({0, 63, 126, 189, 252}), "grey values")
    (tmp_path / "Presets").mkdir()
    write_preset_file(preset, tmp_path / "Presets" / "Grey.json")
    monkeypatch.chdir(tmp_path)  # a relative file path, with capitals, is kept as a file
    results = evaluate_pairs([("s", "mr", prediction, reference)],
                             label_preset="Presets/Grey.json")
    np.testing.assert_array_equal(results["dice"], 1.0)


def test_manifest_label_preset_column_wins_per_row(tmp_path: Path) -> None:
    label = _label_map()
    _write(_as_btcv_ids(label), tmp_path / "labels" / "a.nii.gz")
    _write(label, tmp_path / "labels" / "b.nii.gz")
    _write(label, prediction_path(tmp_path / "predictions", "a"))
    _write(label, prediction_path(tmp_path / "predictions", "b"))
    manifest = _manifest(tmp_path, [
        {"subject_id": "a", "modality": "ct", "image": "img/a.nii.gz",
         "label": "labels/a.nii.gz", "label_preset": "btcv"},
        {"subject_id": "b", "modality": "ct", "image": "img/b.nii.gz",
         "label": "labels/b.nii.gz", "label_preset": ""},
    ])
    pairs = pairs_from_manifest(manifest, predictions_dir=tmp_path / "predictions")
    assert [p.label_preset for p in pairs] == ["btcv", "identity"]
    results = evaluate_pairs(pairs)
    np.testing.assert_array_equal(results["dice"], 1.0)
    # The default applies to rows without a preset of their own: b read as BTCV ids is wrong
    # (its liver id 1 is BTCV's spleen).
    pairs = pairs_from_manifest(manifest, predictions_dir=tmp_path / "predictions",
                                label_preset="btcv")
    assert [p.label_preset for p in pairs] == ["btcv", "btcv"]
    results = evaluate_pairs(pairs).set_index(["subject_id", "organ"])["dice"]
    assert results["a", "liver"] == 1.0 and results["b", "liver"] == 0.0


def test_manifest_without_prediction_column_needs_a_folder(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, [{"subject_id": "a", "modality": "ct", "image": "a.nii.gz",
                                     "label": "a_label.nii.gz"}])
    with pytest.raises(InputDataError, match="no 'prediction' column"):
        pairs_from_manifest(manifest)
    pairs = pairs_from_manifest(manifest, predictions_dir=tmp_path / "pred")
    assert pairs[0].prediction == tmp_path / "pred" / "a.nii.gz"


def test_summarise_means_stds_and_all_organs_row() -> None:
    results = pd.DataFrame(
        {
            "subject_id": ["a", "a", "b", "b", "c", "c"],
            "modality": ["ct", "ct", "ct", "ct", "mr", "mr"],
            "organ": ["liver", "spleen"] * 3,
            "dice": [0.9, 0.5, 0.7, math.nan, 0.8, 0.0],
            "hd95_mm": [2.0, 4.0, 6.0, math.nan, 1.0, math.inf],
            "assd_mm": [1.0, 2.0, 3.0, math.nan, 0.5, math.inf],
            "prediction": ["p"] * 6,
            "label": ["l"] * 6,
        }
    )
    summary = summarise(results).set_index(["modality", "organ"])
    assert list(summary.index) == [("ct", "liver"), ("ct", "spleen"), ("ct", ALL_ORGANS),
                                   ("mr", "liver"), ("mr", "spleen"), ("mr", ALL_ORGANS)]
    liver = summary.loc[("ct", "liver")]
    assert liver["n"] == 2
    assert liver["dice_mean"] == pytest.approx(0.8)
    assert liver["dice_std"] == pytest.approx(np.std([0.9, 0.7], ddof=1))
    assert liver["hd95_mm_mean"] == pytest.approx(4.0)
    ct_spleen = summary.loc[("ct", "spleen")]
    assert ct_spleen["n"] == 1 and ct_spleen["dice_mean"] == 0.5
    assert math.isnan(ct_spleen["dice_std"])
    ct_all = summary.loc[("ct", ALL_ORGANS)]
    assert ct_all["n"] == 3 and ct_all["dice_mean"] == pytest.approx(0.7)
    mr_all = summary.loc[("mr", ALL_ORGANS)]
    assert mr_all["dice_mean"] == pytest.approx(0.4)
    assert mr_all["hd95_mm_mean"] == 1.0 and mr_all["n_inf"] == 1

    table = format_summary_table(summarise(results))
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["modality", "organ", "n"]
    assert any(line.startswith("ct") and "liver" in line and "0.800 +/- 0.141" in line
               for line in lines)
    assert any(line.startswith("mr") and ALL_ORGANS in line for line in lines)


def test_real_label_against_itself(real_data_dir: Path) -> None:
    label = real_data_dir / "labels" / "ts_mr_example_sm.nii.gz"
    results = evaluate_pairs([("ts_mr_example_sm", "mr", label, label)])
    assert list(results["organ"]) == list(CLASS_NAMES[1:])
    np.testing.assert_array_equal(results["dice"], 1.0)
    np.testing.assert_array_equal(results["hd95_mm"], 0.0)
