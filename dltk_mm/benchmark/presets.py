"""Presets of the paper's benchmark: data that override fields of the training configuration.

Every run of the benchmark starts from :class:`~dltk_mm.training.TrainConfig`'s defaults, which
are the paper's settings (docs/paper.md, sections 4 and 5); a :class:`BenchmarkPreset` overrides
some of its fields by dotted name (``"network.width"``, ``"pipeline.patch_size"``) and chooses the
benchmark's extent (schemes, folds, seeds, phantom data). The ``dltk-mm-train`` flags given on the
benchmark's command line win over both (see ``experiments/paper/README.md``):

* ``paper``: exactly the paper (Valindria et al., WACV 2018): full width, 64^3 patches at 2 mm,
  batch 16, 10k steps, six schemes x 2 folds x 3 seeds. Meant for a GPU.
* ``cpu``: the same architecture (five scales, three residual units each, the paper's kernels) at a
  quarter of the width, 32^3 patches at 4 mm (the paper's 128 mm field of view with 1/8 of its
  voxels), batch 4 and 3000 steps, so that a model trains on two CPU cores in about 8-14 minutes
  (individual: twice that). Chosen by 3-fold cross-validation on real CT and MR: 4 mm beat the
  earlier 2 mm (64 mm of context) with the paper recipe, mean Dice 0.670 -> 0.780
  (``experiments/paper/README.md``, "Accuracy on the dev folder"); one seed by default.
* ``smoke``: minutes on a fresh machine or in CI: a small network (one residual unit per scale),
  24^3 patches at 4 mm, batch 4, 300 steps, one fold and one seed, all six schemes plus ``msbn``. It
  proves the whole benchmark runs and writes every table and figure; its numbers mean nothing.

The names are the benchmark's (:data:`BENCHMARK_PRESETS`, :func:`get_benchmark_preset`); the label
presets of :mod:`dltk_mm.io.labels` are another thing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from dltk_mm.benchmark.paper_results import PAPER_SCHEMES
from dltk_mm.errors import ConfigurationError
from dltk_mm.networks import SCHEMES

#: The paper's six plus msbn (the smoke preset runs all of them).
ALL_SCHEMES: tuple[str, ...] = (*PAPER_SCHEMES, "msbn")

#: The authors'-code variants (their shared part is fed by another modality's copies, see
#: :mod:`dltk_mm.networks.schemes`): never run by default, only when named with ``--schemes``.
CODE_SCHEMES: tuple[str, ...] = tuple(
    name for name, scheme in SCHEMES.items() if scheme.feature_source is not None)

#: Every scheme the benchmark can run.
AVAILABLE_SCHEMES: tuple[str, ...] = tuple(SCHEMES)


@dataclasses.dataclass(frozen=True)
class BenchmarkPreset:
    """One preset of the benchmark.

    Attributes:
        name: preset name (``--preset``).
        description: one line: what it is for.
        overrides: dotted :class:`~dltk_mm.training.TrainConfig` field -> value, applied to the
            defaults with :meth:`~dltk_mm.training.TrainConfig.with_overrides`.
        schemes: schemes run by default.
        folds: held-out folds run by default (None: every fold of ``num_folds``).
        seeds: training seeds (repetitions) run by default.
        phantoms_per_modality: CT and MR phantoms generated when no manifest is given.
    """

    name: str
    description: str
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    schemes: tuple[str, ...] = PAPER_SCHEMES
    folds: tuple[int, ...] | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    phantoms_per_modality: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))


BENCHMARK_PRESETS: Mapping[str, BenchmarkPreset] = MappingProxyType({
    "paper": BenchmarkPreset(
        name="paper",
        description="exactly the paper: full width, 64^3 patches at 2 mm, batch 16, 10k steps, "
                    "2-fold cross-validation x 3 seeds (a GPU)",
    ),
    "cpu": BenchmarkPreset(
        name="cpu",
        description="the paper's architecture at 1/4 width, 32^3 patches at 4 mm, batch 4, 3000 "
                    "steps: about 8-14 minutes per model on 2 CPU cores; 1 seed",
        overrides={
            "network.width": 0.25,
            "preprocessing.spacing_mm": 4.0,
            "pipeline.patch_size": (32, 32, 32),
            "pipeline.batch_size": 4,
            "pipeline.jitter": (-8, 7),
            "steps": 3000,
            "log_interval": 25,
        },
        seeds=(0,),
    ),
    "smoke": BenchmarkPreset(
        name="smoke",
        description="minutes, for a fresh machine or CI: small network (1 residual unit per "
                    "scale), 24^3 patches at 4 mm, 300 steps, fold 0, seed 0, phantoms",
        overrides={
            "network.filters": (8, 16, 16, 32, 32),
            "network.num_res_units": 1,
            "preprocessing.spacing_mm": 4.0,
            "preprocessing.crop_margin_mm": 8.0,
            "pipeline.patch_size": (24, 24, 24),
            "pipeline.batch_size": 4,
            "pipeline.jitter": (-6, 5),
            "pipeline.shuffle_buffer": 32,
            "steps": 300,
            "validation_interval": 300,
            "checkpoint_interval": 100,
            "log_interval": 25,
            "inference.batch_size": 8,
        },
        schemes=ALL_SCHEMES,
        folds=(0,),
        seeds=(0,),
        phantoms_per_modality=4,
    ),
})
"""Preset name -> :class:`BenchmarkPreset`."""


def get_benchmark_preset(name: str) -> BenchmarkPreset:
    """The benchmark preset called ``name``.

    Raises:
        ConfigurationError: for an unknown name (listing the known ones).
    """
    try:
        return BENCHMARK_PRESETS[name.lower()]
    except KeyError:
        raise ConfigurationError(
            f"unknown benchmark preset {name!r}; choose one of {sorted(BENCHMARK_PRESETS)}"
        ) from None
