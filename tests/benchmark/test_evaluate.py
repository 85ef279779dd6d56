"""The benchmark's scoring: in the label file's own geometry (its preset, grid and spacing), per
protocol, cached so that nothing is segmented twice."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dltk_mm.benchmark.evaluate import (
    SCORING,
    evaluate_run,
    prediction_file,
    protocol_file,
    protocol_scores,
    source_scores,
)
from dltk_mm.benchmark.protocols import IMPROVED, PAPER, main_protocols
from dltk_mm.errors import InputDataError
from dltk_mm.io.preprocessing import PreprocessingConfig, preprocess_manifest, read_source_label
from tests.benchmark.conftest import SOURCE_SPACING, project_label, write_pair


def test_scores_are_computed_on_the_label_files_grid_at_its_spacing(tmp_path) -> None:
    (volume,) = preprocess_manifest(pd.DataFrame([write_pair(tmp_path, "s", "ct")]),
                                    PreprocessingConfig(spacing_mm=2.0))
    assert volume.source_geometry.spacing == SOURCE_SPACING != (2.0,) * 3
    assert volume.label.shape != project_label().shape  # resampled and cropped
    truth = read_source_label(volume)  # the btcv file, mapped as for training
    np.testing.assert_array_equal(truth, project_label())

    # the prediction that is the label once back in the source grid: perfect
    perfect = source_scores(volume.label, volume, truth, num_classes=5)
    assert {organ: s["dice"] for organ, s in perfect.items()} == {
        "liver": 1.0, "spleen": 1.0, "right_kidney": 1.0, "left_kidney": 1.0}
    assert all(s["hd95_mm"] == 0.0 for s in perfect.values())

    # one preprocessed voxel (2 mm) off along x: 2 source voxels of 1 mm
    shifted = source_scores(np.roll(volume.label, 1, axis=2), volume, truth, num_classes=5)
    assert all(s["dice"] < 1.0 for s in shifted.values())
    assert shifted["liver"]["dice"] == pytest.approx(0.8)  # 10 source voxels wide, 2 off
    assert all(s["hd95_mm"] == pytest.approx(2.0) for s in shifted.values())  # mm, not voxels
    plain = source_scores(np.roll(volume.label, 1, axis=2), volume, truth, num_classes=5,
                          surface_metrics=False)
    assert plain["liver"]["dice"] == pytest.approx(0.8) and np.isnan(plain["liver"]["hd95_mm"])


def test_a_volume_without_a_label_file_cannot_be_scored(tmp_path) -> None:
    row = {**write_pair(tmp_path, "s", "mr"), "label": ""}
    (volume,) = preprocess_manifest(pd.DataFrame([row]), PreprocessingConfig())
    with pytest.raises(InputDataError, match="no label file"):
        read_source_label(volume)


def test_each_protocol_is_scored_and_shared_options_are_segmented_once(fake_run) -> None:
    spec, settings = fake_run.spec(inference_overrides={"overlap": 0.25})
    protocols = {**main_protocols(spec.inference), "copy": spec.inference}
    frame = evaluate_run(spec, settings, protocols)
    assert list(frame["protocol"].unique()) == [PAPER, IMPROVED, "copy"]
    # 2 held-out volumes (1 CT, 1 MR) x 4 organs per protocol, all perfect in the source grid
    assert len(frame) == 3 * 2 * 4 and (frame["dice"] == 1.0).all()
    assert (frame["segment_s"] > 0).all()
    improved, copy = (frame[frame["protocol"] == name].reset_index(drop=True)
                      for name in (IMPROVED, "copy"))
    pd.testing.assert_series_equal(improved["segment_s"], copy["segment_s"])  # one segmentation
    for subject, modality in (("ct_a", "ct"), ("mr_a", "mr")):  # the paper's, for the figures
        with np.load(prediction_file(spec.model_dir, modality, subject)) as data:
            assert data["prediction"].shape != project_label().shape  # preprocessed grid


def test_protocol_scores_are_cached_and_redone_when_evaluated_otherwise(fake_run) -> None:
    spec, settings = fake_run.spec()
    protocols = main_protocols(spec.inference)
    first = protocol_scores(spec, settings, protocols)
    record = json.loads(protocol_file(spec.model_dir, PAPER).with_suffix(".json").read_text())
    assert record["record"]["scoring"] == SCORING and record["record"]["weights"] == "last"
    asked = fake_run.streams.windows
    assert asked > 0

    again = protocol_scores(spec, settings, protocols)
    assert fake_run.streams.windows == asked  # from the cache
    pd.testing.assert_frame_equal(first, again)

    _, best = fake_run.spec(weights="best")
    protocol_scores(spec, best, protocols)
    assert fake_run.streams.windows == 2 * asked  # other weights: evaluated again
    assert protocol_scores(spec, settings, protocols, compute=False).empty  # last's replaced
