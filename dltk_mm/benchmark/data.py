"""The benchmark's data: the user's manifest, or built-in phantoms generated once."""

from __future__ import annotations

import json
from pathlib import Path

from absl import logging

from dltk_mm.benchmark.plan import BenchmarkSettings
from dltk_mm.errors import ConfigurationError, InputDataError
from dltk_mm.io.phantoms import generate_phantom_dataset

#: Where the phantoms live inside the results folder.
PHANTOMS_DIR = Path("data") / "phantoms"


def phantom_manifest(settings: BenchmarkSettings) -> Path:
    """The built-in phantom data set (generated once into ``results_dir/data/phantoms``).

    Raises:
        ConfigurationError: fewer than 2 phantoms per modality, or a phantom set with other
            settings already in the results folder (its finished runs were trained on it).
    """
    count = settings.phantoms_per_modality or settings.preset.phantoms_per_modality
    if count < 2:
        raise ConfigurationError(f"phantoms_per_modality must be >= 2 (one per fold), got {count}")
    out_dir = settings.results_dir / PHANTOMS_DIR
    marker = out_dir / "phantoms.json"
    manifest = out_dir / "manifest.csv"
    if marker.is_file() and manifest.is_file():
        previous = json.loads(marker.read_text(encoding="utf-8"))
        if (previous.get("seed"), previous.get("num_ct"), previous.get("num_mr")) == (
                settings.phantom_seed, count, count):
            return manifest
        raise ConfigurationError(
            f"{out_dir} holds phantoms with other settings (seed {previous.get('seed')}, "
            f"{previous.get('num_ct')} per modality); finished runs were trained on them: use "
            "another --results_dir, or the same --phantoms_per_modality/--phantom_seed"
        )
    logging.info("generating %d CT + %d MR phantoms into %s", count, count, out_dir)
    summary = generate_phantom_dataset(out_dir, num_ct=count, num_mr=count,
                                       seed=settings.phantom_seed)
    return summary.manifest_path


def resolve_manifest(settings: BenchmarkSettings) -> Path:
    """The absolute path of the benchmark's manifest: the given one, or the phantoms'.

    Raises:
        InputDataError: the given manifest does not exist.
        ConfigurationError: see :func:`phantom_manifest`.
    """
    if settings.manifest is None:
        return phantom_manifest(settings).resolve()
    manifest = Path(settings.manifest).expanduser().resolve()
    if not manifest.is_file():
        raise InputDataError(f"manifest {manifest}: file not found; check --manifest")
    return manifest
