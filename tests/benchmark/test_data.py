"""The benchmark's data: a missing manifest is named; phantoms of other settings are refused."""

from __future__ import annotations

import json

import pytest

from dltk_mm.benchmark.data import PHANTOMS_DIR, resolve_manifest
from dltk_mm.benchmark.plan import BenchmarkSettings
from dltk_mm.benchmark.presets import get_benchmark_preset
from dltk_mm.errors import ConfigurationError, InputDataError


def settings(tmp_path, **options) -> BenchmarkSettings:
    return BenchmarkSettings(results_dir=tmp_path, preset=get_benchmark_preset("smoke"),
                             **options)


def test_missing_manifest_is_named(tmp_path) -> None:
    with pytest.raises(InputDataError, match="missing.csv"):
        resolve_manifest(settings(tmp_path, manifest=tmp_path / "missing.csv"))


def test_phantoms_with_other_settings_are_refused_and_kept(tmp_path) -> None:
    folder = tmp_path / PHANTOMS_DIR
    folder.mkdir(parents=True)
    marker = json.dumps({"seed": 5, "num_ct": 4, "num_mr": 4})
    (folder / "phantoms.json").write_text(marker)
    (folder / "manifest.csv").write_text("subject_id,modality,image,label\n")
    assert resolve_manifest(settings(tmp_path, phantom_seed=5)) == folder / "manifest.csv"
    with pytest.raises(ConfigurationError, match="other settings"):
        resolve_manifest(settings(tmp_path, phantom_seed=0))
    with pytest.raises(ConfigurationError, match="other settings"):
        resolve_manifest(settings(tmp_path, phantom_seed=5, phantoms_per_modality=3))
    assert (folder / "phantoms.json").read_text() == marker
