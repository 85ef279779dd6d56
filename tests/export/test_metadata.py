"""Tests of dltk_mm.export.metadata: reading an export's ``assets/dltk_mm_export.json``."""

from __future__ import annotations

import json
import shutil

import pytest

from dltk_mm.errors import InputDataError
from dltk_mm.export.metadata import (
    EXPORT_FORMAT_VERSION,
    is_saved_model_dir,
    metadata_path,
    read_export_metadata,
    size_factor_of,
)
from dltk_mm.inference.segment import InferenceConfig


def test_size_factor_is_the_stride_product_per_axis() -> None:
    assert size_factor_of({"strides": [[1, 1, 1], [2, 2, 1], [2, 2, 2], 2, [1, 1, 1]]}) == (
        8, 8, 4)


def test_missing_or_foreign_metadata_is_a_clear_error(exported_v4, tmp_path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(exported_v4[1], bare)
    metadata_path(bare).unlink()
    assert is_saved_model_dir(bare)
    with pytest.raises(InputDataError, match="without dltk_mm metadata.*dltk-mm-export"):
        read_export_metadata(bare)
    with pytest.raises(InputDataError, match="not a TensorFlow SavedModel"):
        read_export_metadata(tmp_path)
    with pytest.raises(InputDataError, match="not found"):
        read_export_metadata(tmp_path / "missing")
    metadata_path(bare).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(InputDataError, match="not a dltk_mm export description"):
        read_export_metadata(bare)
    metadata_path(bare).write_text("{not json")
    with pytest.raises(InputDataError, match="cannot be read as JSON"):
        read_export_metadata(bare)


def test_versions(exported_v4, tmp_path) -> None:
    export_dir = tmp_path / "export"
    shutil.copytree(exported_v4[1], export_dir)
    data = json.loads(metadata_path(export_dir).read_text())
    # An export of format 1 (before the inference settings were recorded) still reads.
    old = {key: value for key, value in data.items() if key != "inference"}
    metadata_path(export_dir).write_text(json.dumps({**old, "format_version": 1}))
    assert read_export_metadata(export_dir).inference == InferenceConfig()
    # An export written before the mirroring options: today's mirroring (all axes, swapped).
    before = {k: v for k, v in data["inference"].items() if k not in ("mirror_axes", "mirror_swap")}
    metadata_path(export_dir).write_text(json.dumps({**data, "inference": before}))
    loaded = read_export_metadata(export_dir).inference
    assert (loaded.mirror_axes, loaded.mirror_swap) == ((0, 1, 2), True)
    assert loaded == InferenceConfig.from_dict(data["inference"])
    metadata_path(export_dir).write_text(json.dumps(
        {**data, "inference": {**data["inference"], "mirror_axes": [1, 0], "mirror_swap": False}}))
    loaded = read_export_metadata(export_dir).inference
    assert (loaded.mirror_axes, loaded.mirror_swap) == ((0, 1), False)
    metadata_path(export_dir).write_text(
        json.dumps({**data, "inference": {**data["inference"], "mirror_axes": [0, 5]}}))
    with pytest.raises(InputDataError, match="invalid dltk_mm export description.*mirror_axes"):
        read_export_metadata(export_dir)
    metadata_path(export_dir).write_text(
        json.dumps({**data, "format_version": EXPORT_FORMAT_VERSION + 1}))
    with pytest.raises(InputDataError, match="newer than this dltk_mm understands"):
        read_export_metadata(export_dir)
    metadata_path(export_dir).write_text(
        json.dumps({**data, "inference": {**data["inference"], "overlap": 2.0}}))
    with pytest.raises(InputDataError, match="invalid dltk_mm export description.*overlap"):
        read_export_metadata(export_dir)
