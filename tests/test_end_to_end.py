"""The whole user path on built-in phantoms, through the library functions the commands call.

phantoms -> preprocess -> train (two schemes, v4 included) -> predict (in the inputs' geometry)
-> evaluate -> export -> predict from the SavedModel (identical to the model_dir's predictions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dltk_mm.evaluation.evaluate import EvaluationPair, evaluate_pairs
from dltk_mm.export import SavedModelPredictor, export_model_dir
from dltk_mm.inference.predict import inputs_from_manifest, predict_files
from dltk_mm.inference.predictor import KerasPredictor
from dltk_mm.io.manifest import load_manifest
from dltk_mm.io.phantoms import PhantomConfig, generate_phantom_dataset
from dltk_mm.io.preprocessing import PreprocessingConfig, preprocess_manifest
from dltk_mm.io.readers import read_volume
from dltk_mm.training import load_trained_model, read_split, train
from tests.conftest import tiny_train_config

STEPS = 300


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("e2e")
    summary = generate_phantom_dataset(
        root / "phantoms", num_ct=4, num_mr=4, seed=3,
        config=PhantomConfig(matrix={"ct": 64, "mr": 64}),
    )
    cache = root / "cache"
    preprocessing = PreprocessingConfig(spacing_mm=4.0, crop_to_organs=False)
    volumes = preprocess_manifest(load_manifest(summary.manifest_path), preprocessing, cache)
    assert len(volumes) == 8 and all(v.label is not None for v in volumes)
    return summary.manifest_path, cache


def _train(scheme: str, manifest: Path, cache: Path, model_dir: Path):
    return train(tiny_train_config(manifest, scheme, cache, STEPS), model_dir)


def _held_out(model_dir: Path, manifest: Path) -> pd.DataFrame:
    split = read_split(model_dir)
    held_out = set(split.loc[split["role"] != "train", "subject_id"])
    rows = load_manifest(manifest)
    return rows[rows["subject_id"].isin(held_out)].reset_index(drop=True)


@pytest.mark.parametrize("scheme", ["v4", "joint"])
def test_phantoms_to_saved_model(scheme: str, data, tmp_path: Path) -> None:
    manifest, cache = data
    model_dir = tmp_path / "model"
    result = _train(scheme, manifest, cache, model_dir)
    assert result.completed and result.step == STEPS

    test_rows = _held_out(model_dir, manifest)
    assert set(test_rows["modality"]) == {"mr", "ct"}
    inputs = inputs_from_manifest(test_rows)

    keras_predictor = KerasPredictor.from_loaded(load_trained_model(model_dir, weights="last"))
    records = predict_files(keras_predictor, inputs, tmp_path / "pred", patch_size=(24, 24, 24))
    for record in records:
        written, source = read_volume(record.labels), read_volume(record.image)
        assert written.geometry.same_grid(source.geometry, 1e-6)
        assert written.array.shape == source.array.shape

    pairs = [
        EvaluationPair(row.subject_id, row.modality, tmp_path / "pred" / f"{row.subject_id}.nii.gz",
                       Path(row.label))
        for row in test_rows.itertuples()
    ]
    scores = evaluate_pairs(pairs)
    # Chance: a random labelling scores about the organ's volume fraction (< 0.1 for every organ
    # of these phantoms); a tiny model trained for a few hundred steps must be far above it.
    liver = scores[scores["organ"] == "liver"].groupby("modality")["dice"].mean()
    assert (liver > 0.45).all(), scores.groupby(["modality", "organ"])["dice"].mean()
    assert scores["dice"].mean() > 0.2, scores.groupby(["modality", "organ"])["dice"].mean()

    export_dir = tmp_path / "export"
    export_model_dir(model_dir, export_dir, weights="last")
    saved_predictor = SavedModelPredictor(export_dir)
    saved_records = predict_files(saved_predictor, inputs, tmp_path / "pred_saved",
                                  patch_size=(24, 24, 24))
    for keras_record, saved_record in zip(records, saved_records, strict=True):
        np.testing.assert_array_equal(read_volume(keras_record.labels).array,
                                      read_volume(saved_record.labels).array)
