"""Tests of dltk_mm.export.destination: --overwrite replaces an earlier export and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dltk_mm.errors import ConfigurationError
from dltk_mm.export import destination
from dltk_mm.export.destination import check_export_destination, is_model_folder
from dltk_mm.training.config import TrainConfig


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(folder.rglob("*"))}


def _data_folder(root: Path) -> Path:
    data = root / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    (data / "images" / "s1.nii.gz").write_bytes(b"image")
    (data / "labels" / "s1.nii.gz").write_bytes(b"label")
    (data / "manifest.csv").write_text("subject_id,modality,image,label\n"
                                       "s1,ct,images/s1.nii.gz,labels/s1.nii.gz\n")
    return data


def _model_folder(root: Path) -> Path:
    model_dir = root / "run"
    TrainConfig(manifest=str(root / "manifest.csv"), scheme="v4").save(model_dir / "config.json")
    (model_dir / "checkpoints").mkdir()
    (model_dir / "checkpoints" / "ckpt-1.index").write_bytes(b"weights")
    return model_dir


def test_overwrite_refuses_a_data_folder(tmp_path) -> None:
    data = _data_folder(tmp_path)
    before = _snapshot(data)
    with pytest.raises(ConfigurationError, match="only replaces a dltk_mm export.*nothing was"):
        check_export_destination(data, overwrite=True)
    assert _snapshot(data) == before


def test_refuses_anything_in_a_model_folder(tmp_path) -> None:
    model_dir = _model_folder(tmp_path)
    assert is_model_folder(model_dir)
    before = _snapshot(model_dir)
    for target in (model_dir / "checkpoints", model_dir, model_dir / "export",
                   model_dir / "checkpoints" / "new"):
        for overwrite in (False, True):
            with pytest.raises(ConfigurationError, match="training run's folder"):
                check_export_destination(target, overwrite=overwrite)
    assert _snapshot(model_dir) == before
    # A damaged run is still a run; another tool's config.json is not.
    (model_dir / "config.json").write_text("{damaged")
    assert is_model_folder(model_dir)
    (model_dir / "config.json").write_text(json.dumps({"name": "another tool"}))
    assert not is_model_folder(model_dir)


def _fake_export(folder: Path) -> Path:
    (folder / "variables").mkdir(parents=True)
    (folder / "assets").mkdir()
    (folder / "saved_model.pb").write_bytes(b"graph")
    (folder / "assets" / "dltk_mm_export.json").write_text("{}")
    return folder


def test_overwrite_replaces_only_a_clean_export(tmp_path) -> None:
    export_dir = _fake_export(tmp_path / "export")
    assert check_export_destination(export_dir, overwrite=True) == export_dir
    with pytest.raises(ConfigurationError, match="already exists and is not empty.*--overwrite"):
        check_export_destination(export_dir)
    (export_dir / "manifest.csv").write_text("subject_id\n")
    with pytest.raises(ConfigurationError, match=r"not part of an export \(manifest.csv\)"):
        check_export_destination(export_dir, overwrite=True)
    (export_dir / "manifest.csv").unlink()
    (export_dir / "assets" / "dltk_mm_export.json").unlink()  # a SavedModel, not dltk_mm's
    with pytest.raises(ConfigurationError, match="only replaces a dltk_mm export"):
        check_export_destination(export_dir, overwrite=True)


def test_new_empty_and_file_destinations(tmp_path) -> None:
    assert check_export_destination(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    assert check_export_destination(tmp_path / "empty", overwrite=True) == tmp_path / "empty"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigurationError, match="not a folder"):
        check_export_destination(tmp_path / "file", overwrite=True)
    assert (tmp_path / "file").read_text() == "x"


def test_config_file_is_the_one_training_writes() -> None:
    from dltk_mm.training.model_dir import CONFIG_FILE

    assert destination.CONFIG_FILE == CONFIG_FILE
