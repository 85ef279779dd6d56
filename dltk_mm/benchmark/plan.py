"""The benchmark's plan: which runs (scheme x held-out fold x seed) and their configurations.

A run's :class:`~dltk_mm.training.TrainConfig` is built in layers, later winning: the defaults
(the paper's settings, docs/paper.md, sections 4 and 5), the preset's overrides, the benchmark's
cache folder, the user's overrides, then the run's own manifest, scheme, fold and seed. A run's
held-out fold is segmented under the paper's protocol and as its validation was
(``TrainConfig.inference``, changed by the settings' inference overrides: the ``improved``
protocol, :mod:`dltk_mm.benchmark.protocols`). Nothing here reads or writes a file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dltk_mm import flag_fields
from dltk_mm.benchmark.presets import AVAILABLE_SCHEMES, BenchmarkPreset
from dltk_mm.errors import ConfigurationError
from dltk_mm.inference import InferenceConfig
from dltk_mm.training.config import TrainConfig

#: Folder of the run folders inside the results folder.
RUNS_DIR = "runs"
#: Fields the benchmark sets itself for every run (the user chooses them with the benchmark's
#: own options: --manifest, --schemes, --folds, --seeds).
RUN_FIELDS: tuple[str, ...] = ("manifest", "scheme", "fold", "seed")
#: Weights a run is evaluated with: the last ones (no selection on the test fold) or the best
#: validation ones.
WEIGHTS: tuple[str, ...] = ("last", "best")


@dataclasses.dataclass(frozen=True)
class BenchmarkSettings:
    """What the benchmark runs.

    Attributes:
        results_dir: output folder (runs/, data/, cache/, tables/, figures/, results_all.csv).
        preset: the preset layered on the paper's defaults.
        manifest: manifest CSV of the data; None generates phantoms into ``results_dir/data``.
        schemes: schemes to run (default: the preset's).
        folds: held-out folds (default: the preset's, else every fold).
        seeds: training seeds = repetitions (default: the preset's).
        overrides: dotted :class:`~dltk_mm.training.TrainConfig` field -> value, applied after
            the preset (the ``dltk-mm-train`` flags of the benchmark's command line).
        phantoms_per_modality: CT and MR phantoms generated without a manifest (default: preset).
        phantom_seed: seed of the phantom generator.
        inference_overrides: :class:`~dltk_mm.inference.InferenceConfig` field -> value
            changing, for the ``improved`` evaluation protocol of the held-out volumes, each
            run's own ``TrainConfig.inference`` (the one its validation used); every run is also
            evaluated under the paper's protocol (:mod:`dltk_mm.benchmark.protocols`).
        weights: evaluate the ``"last"`` weights (default; no model selection on the test fold)
            or the ``"best"`` validation weights.
        surface_metrics: also compute HD95 and ASSD.
        max_runs: stop after training this many runs (None: all); for splitting the work.
        ablation: also score every finished run under the ablation's protocols (the paper's
            plus one inference addition each) and write ``tables/ablation.md``.
        ensemble: also score, per scheme and fold whose seeds have all finished, the ensemble
            of the seeds' models (``ensemble`` protocol) and write ``tables/ensemble/``; needs
            two or more seeds.
    """

    results_dir: Path
    preset: BenchmarkPreset
    manifest: Path | None = None
    schemes: tuple[str, ...] | None = None
    folds: tuple[int, ...] | None = None
    seeds: tuple[int, ...] | None = None
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    phantoms_per_modality: int | None = None
    phantom_seed: int = 0
    inference_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    weights: str = "last"
    surface_metrics: bool = True
    max_runs: int | None = None
    ablation: bool = False
    ensemble: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "results_dir", Path(self.results_dir))
        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))
        object.__setattr__(self, "inference_overrides",
                           MappingProxyType(dict(self.inference_overrides)))
        flag_fields.replace(InferenceConfig(), self.inference_overrides)  # names and values
        reserved = sorted(set(self.overrides) & set(RUN_FIELDS))
        if reserved:
            raise ConfigurationError(
                f"{reserved} are set by the benchmark for every run; use its --manifest, "
                "--schemes, --folds and --seeds instead")
        unknown = [s for s in self.effective_schemes if s not in AVAILABLE_SCHEMES]
        if unknown:
            raise ConfigurationError(
                f"unknown scheme(s) {unknown}; choose from {list(AVAILABLE_SCHEMES)}")
        if self.weights not in WEIGHTS:
            raise ConfigurationError(f"weights must be one of {WEIGHTS}, got {self.weights!r}")
        if self.ensemble and len(set(self.effective_seeds)) < 2:
            raise ConfigurationError(
                f"an ensemble averages the models of several seeds, but the benchmark runs "
                f"seed(s) {list(self.effective_seeds)}; give --seeds with two or more (e.g. "
                "--seeds=0,1)")

    @property
    def effective_schemes(self) -> tuple[str, ...]:
        """The schemes run."""
        return tuple(s.lower() for s in (self.schemes or self.preset.schemes))

    @property
    def effective_seeds(self) -> tuple[int, ...]:
        """The seeds run."""
        return tuple(self.seeds if self.seeds is not None else self.preset.seeds)

    @property
    def cache_dir(self) -> Path:
        """The preprocessing cache shared by all runs."""
        return self.results_dir / "cache"


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run: a scheme trained on one fold split with one seed.

    Attributes:
        scheme: training scheme.
        fold: held-out fold.
        seed: training seed.
        model_dir: the run's folder.
        config: its training configuration.
        inference: how its held-out volumes are segmented for the ``improved`` evaluation
            protocol (the ``paper`` one is :func:`~dltk_mm.benchmark.protocols.paper_inference`).
    """

    scheme: str
    fold: int
    seed: int
    model_dir: Path
    config: TrainConfig
    inference: InferenceConfig

    @property
    def name(self) -> str:
        """``scheme/fold<k>/seed<s>``."""
        return f"{self.scheme}/fold{self.fold}/seed{self.seed}"


def run_dir(results_dir: str | Path, scheme: str, fold: int, seed: int) -> Path:
    """The folder of one run: ``<results_dir>/runs/<scheme>/fold<k>/seed<s>``."""
    return Path(results_dir) / RUNS_DIR / scheme / f"fold{int(fold)}" / f"seed{int(seed)}"


def run_config(settings: BenchmarkSettings, scheme: str, fold: int, seed: int,
               manifest: str | Path) -> TrainConfig:
    """The :class:`~dltk_mm.training.TrainConfig` of one run (layers in the module docstring).

    Raises:
        ConfigurationError: an unknown field or a bad value in the overrides (naming it).
    """
    config = TrainConfig(manifest=str(manifest), scheme=scheme, fold=int(fold), seed=int(seed))
    config = config.with_overrides(settings.preset.overrides)
    config = config.with_overrides({"cache_dir": str(settings.cache_dir)})
    return config.with_overrides(settings.overrides)


def plan_runs(settings: BenchmarkSettings, manifest: str | Path) -> list[RunSpec]:
    """Every (scheme, fold, seed) run, in the order run: seed, fold, then scheme (so that a
    partial benchmark has complete comparisons early).

    Raises:
        ConfigurationError: bad overrides (see :func:`run_config`).
    """
    schemes = settings.effective_schemes
    folds = settings.folds if settings.folds is not None else settings.preset.folds
    if folds is None:
        folds = tuple(range(run_config(settings, schemes[0], 0, 0, manifest).num_folds))
    runs = []
    for seed in settings.effective_seeds:
        for fold in folds:
            for scheme in schemes:
                config = run_config(settings, scheme, fold, seed, manifest)
                inference = flag_fields.replace(config.inference, settings.inference_overrides)
                runs.append(RunSpec(scheme, int(fold), int(seed),
                                    run_dir(settings.results_dir, scheme, fold, seed), config,
                                    inference))
    return runs
