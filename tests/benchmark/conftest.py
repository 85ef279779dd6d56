"""A trained-looking run without training: label files in their own geometry and presets, and a
stand-in network that segments them perfectly (so the benchmark's evaluation, protocols, caches
and tables are tested in seconds; the real network is trained in test_driver.py)."""

from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from dltk_mm.benchmark import evaluate
from dltk_mm.benchmark.execute import DONE_FILE
from dltk_mm.benchmark.plan import BenchmarkSettings, RunSpec, plan_runs
from dltk_mm.benchmark.presets import get_benchmark_preset
from dltk_mm.inference.predictor import Predictor
from dltk_mm.io.geometry import Geometry
from dltk_mm.io.labels import get_preset
from dltk_mm.io.preprocessing import preprocess_manifest
from dltk_mm.training import load_config

#: Source grid (x, y, z) spacing: differs from the 2 mm preprocessing in x and y.
SOURCE_SPACING = (1.0, 1.0, 2.0)
#: Project label -> image intensity (the stand-in network reads the label off the intensity).
INTENSITY = np.array([0.0, 100.0, 200.0, 300.0, 400.0])
#: Organ boxes (z, y, x slices) in the source grid, aligned to the 2 mm grid in x and y so that
#: resampling to 2 mm and back is exact; project labels 1 liver, 2 spleen, 3 right and 4 left
#: kidney.
BOXES = {1: np.s_[4:12, 4:16, 4:14], 2: np.s_[4:10, 18:26, 20:28], 3: np.s_[6:10, 20:24, 4:8],
         4: np.s_[6:10, 26:30, 10:14]}
#: The label preset of each modality's files (the manifest's label_preset column).
PRESETS = {"ct": "btcv", "mr": "chaos"}
OVERRIDES = {"preprocessing.spacing_mm": 2.0, "preprocessing.crop_margin_mm": 4.0,
             "pipeline.patch_size": (16, 16, 16), "steps": 4, "inference.batch_size": 8}


def project_label() -> np.ndarray:
    """The (z, y, x) source label in the project map."""
    label = np.zeros((16, 32, 32), np.uint8)
    for value, box in BOXES.items():
        label[box] = value
    return label


def write_pair(folder: Path, subject: str, modality: str) -> dict[str, str]:
    """Writes an image and its label (in the modality's preset, RAS) and returns the row."""
    label = project_label()
    geometry = Geometry.from_orientation("RAS", SOURCE_SPACING, (10.0, -5.0, 3.0),
                                         label.shape[::-1])
    inverse = get_preset(PRESETS[modality]).inverse()
    in_preset = np.vectorize(lambda v: inverse[int(v)] if v else 0)(label).astype(np.uint8)
    image, label_file = folder / f"{subject}_image.nii.gz", folder / f"{subject}_label.nii.gz"
    sitk.WriteImage(geometry.image_from_array(INTENSITY[label].astype(np.float32)), str(image))
    sitk.WriteImage(geometry.image_from_array(in_preset), str(label_file))
    return {"subject_id": subject, "modality": modality, "image": str(image),
            "label": str(label_file), "label_preset": PRESETS[modality]}


class FakeStreams:
    """Stands in for a trained network's streams: one-hot probabilities of the label whose
    (normalised) intensity is nearest; counts the windows it was asked for. ``weak`` streams
    lean to background instead (0.3 background, 0.175 each organ, everywhere): alone they find
    nothing, averaged with perfect ones they change no label."""

    def __init__(self, levels: dict[str, np.ndarray], weak: bool = False) -> None:
        self.levels, self.windows, self.weak = levels, 0, weak

    def __call__(self, windows: np.ndarray, modality: str) -> np.ndarray:
        self.windows += len(windows)
        if self.weak:
            probabilities = np.full((*windows.shape[:4], len(INTENSITY)), 0.175, np.float32)
            probabilities[..., 0] = 0.3
            return probabilities
        distance = np.abs(windows[..., :1] - self.levels[modality])
        return np.eye(len(INTENSITY), dtype=np.float32)[np.argmin(distance, axis=-1)]


class FakePredictor(Predictor):
    """A :class:`~dltk_mm.inference.predictor.Predictor` of a run folder by :class:`FakeStreams`
    (what the benchmark's evaluation builds from a trained run)."""

    def __init__(self, streams: FakeStreams, config, source: str) -> None:
        super().__init__(config.modalities, len(INTENSITY), config.preprocessing,
                         config.pipeline.patch_size, (1, 1, 1), source)
        self.streams = streams

    def _probabilities(self, batch: np.ndarray, modality: str) -> np.ndarray:
        return self.streams(batch, modality)


@dataclasses.dataclass
class FakeRun:
    """A run folder as training leaves it (config.json, split.csv), scored by FakeStreams (seed
    0's perfect, :attr:`streams`; other seeds' weak, :attr:`weak_streams`)."""

    settings: BenchmarkSettings
    manifest: Path
    streams: FakeStreams
    weak_streams: FakeStreams
    rows: list[dict[str, str]]

    def add_seeds(self, *seeds: int) -> BenchmarkSettings:
        """Run folders of more seeds (trained-looking, as :meth:`write_legacy_done` leaves
        them); returns the settings that plan every seed."""
        self.settings = dataclasses.replace(
            self.settings, seeds=(*self.settings.seeds, *seeds))
        for spec in plan_runs(self.settings, self.manifest):
            if spec.seed in seeds:
                write_run_folder(spec, self.rows)
                (spec.model_dir / DONE_FILE).write_text(json.dumps(
                    {"inference": spec.inference.to_dict(), "weights": self.settings.weights}))
        return self.settings

    def spec(self, **changes: object) -> tuple[RunSpec, BenchmarkSettings]:
        """The run and the settings with ``changes``."""
        settings = dataclasses.replace(self.settings, **changes)
        (spec,) = plan_runs(settings, self.manifest)
        return spec, settings

    def write_legacy_done(self) -> None:
        """A DONE.json as the benchmark wrote it before evaluation protocols."""
        spec, settings = self.spec()
        (spec.model_dir / DONE_FILE).write_text(json.dumps(
            {"inference": spec.inference.to_dict(), "weights": settings.weights}))


@pytest.fixture()
def fake_run(tmp_path, monkeypatch) -> FakeRun:
    data = tmp_path / "data"
    data.mkdir()
    rows = [write_pair(data, "ct_a", "ct"), write_pair(data, "ct_b", "ct"),
            write_pair(data, "mr_a", "mr"), write_pair(data, "mr_b", "mr")]
    manifest = data / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    settings = BenchmarkSettings(results_dir=tmp_path / "bench",
                                 preset=get_benchmark_preset("smoke"), manifest=manifest,
                                 schemes=("joint",), folds=(0,), seeds=(0,), overrides=OVERRIDES)
    (spec,) = plan_runs(settings, manifest)
    write_run_folder(spec, rows)
    levels = {}
    for volume in preprocess_manifest(pd.DataFrame(rows), spec.config.preprocessing):
        levels[volume.modality] = np.array([volume.image[volume.label == value].mean()
                                            for value in range(len(INTENSITY))])
    streams, weak = FakeStreams(levels), FakeStreams(levels, weak=True)
    monkeypatch.setattr(evaluate, "load_trained_model", lambda model_dir, weights: (
        types.SimpleNamespace(model_dir=model_dir, config=load_config(model_dir))))
    monkeypatch.setattr(evaluate, "KerasPredictor", types.SimpleNamespace(
        from_loaded=lambda loaded: FakePredictor(
            streams if loaded.config.seed == 0 else weak, loaded.config,
            str(loaded.model_dir))))
    return FakeRun(settings, manifest, streams, weak, rows)


def write_run_folder(spec: RunSpec, rows: list[dict[str, str]]) -> None:
    """config.json and split.csv of a run (held out: ct_a and mr_a)."""
    spec.model_dir.mkdir(parents=True)
    spec.config.save(spec.model_dir / "config.json")
    held_out = {"ct_a", "mr_a"}
    pd.DataFrame([{"subject_id": r["subject_id"], "modality": r["modality"], "fold": 0,
                   "role": "validation" if r["subject_id"] in held_out else "train"}
                  for r in rows]).to_csv(spec.model_dir / "split.csv", index=False)
