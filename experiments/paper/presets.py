"""Presets of the paper's benchmark: overrides layered on top of the paper's flagfiles.

The paper's settings live in ``experiments/paper/common.cfg`` and ``experiments/paper/<scheme>.cfg``
(``dltk-mm-train`` flags). A :class:`Preset` changes some of those training flags and chooses the
benchmark's extent (schemes, folds, seeds, phantom data). Any single flag given on the command line
still wins over both (see ``experiments/paper/README.md``):

* ``paper``: exactly the paper (Valindria et al., WACV 2018): full width, 64^3 patches at 2 mm,
  batch 16, 10k steps, six schemes x 2 folds x 3 seeds. Meant for a GPU.
* ``cpu``: the same architecture (five scales, three residual units each, the paper's kernels) at a
  quarter of the width, 32^3 patches at 2 mm, batch 4 and 3000 steps, so that a model trains on
  two CPU cores in about 13 minutes; on real CT and MR volumes it learns the four organs (mean
  Dice 0.52-0.76 on held-out subjects; 1000 steps had left it undertrained, see
  ``experiments/paper/README.md``); one seed by default.
* ``smoke``: minutes on a fresh machine or in CI: a small network (one residual unit per scale),
  24^3 patches at 4 mm, batch 4, 300 steps, one fold and one seed, all six schemes plus ``msbn``. It
  proves the whole benchmark runs and writes every table and figure; its numbers mean nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from dltk_mm.errors import ConfigurationError
from experiments.paper.paper_results import PAPER_SCHEMES

#: Folder of the flagfiles (common.cfg and one <scheme>.cfg per scheme).
CONFIG_DIR = Path(__file__).resolve().parent

#: The paper's six plus msbn (the smoke preset runs all of them).
ALL_SCHEMES: tuple[str, ...] = (*PAPER_SCHEMES, "msbn")

#: The authors'-code variants (dltk_mm.networks.schemes): never run by default, only when named
#: with ``--schemes`` (e.g. ``--schemes=v4,v4_code``).
CODE_SCHEMES: tuple[str, ...] = ("v1_code", "v2_code", "v4_code")

#: Schemes with a flagfile, i.e. every scheme ``--schemes`` accepts.
AVAILABLE_SCHEMES: tuple[str, ...] = (*ALL_SCHEMES, *CODE_SCHEMES)


@dataclasses.dataclass(frozen=True)
class Preset:
    """One preset of the benchmark.

    Attributes:
        name: preset name (``--preset``).
        description: one line: what it is for.
        train_flags: ``dltk-mm-train`` flag name -> value (as on the command line, without
            ``--``), applied after common.cfg and the scheme's flagfile.
        schemes: schemes run by default.
        folds: held-out folds run by default (None: every fold of ``--num_folds``).
        seeds: training seeds (repetitions) run by default.
        phantoms_per_modality: CT and MR phantoms generated when no manifest is given.
        eval_overlap: sliding-window overlap of the final evaluation (paper code: 0.5 during
            validation).
    """

    name: str
    description: str
    train_flags: Mapping[str, str]
    schemes: tuple[str, ...] = PAPER_SCHEMES
    folds: tuple[int, ...] | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    phantoms_per_modality: int = 8
    eval_overlap: float = 0.5

    def train_args(self) -> list[str]:
        """The overrides as command-line arguments (``--name=value``)."""
        return [f"--{name}={value}" for name, value in self.train_flags.items()]


PRESETS: dict[str, Preset] = {
    "paper": Preset(
        name="paper",
        description="exactly the paper: full width, 64^3 patches at 2 mm, batch 16, 10k steps, "
                    "2-fold cross-validation x 3 seeds (a GPU)",
        train_flags={},
    ),
    "cpu": Preset(
        name="cpu",
        description="the paper's architecture at 1/4 width, 32^3 patches at 2 mm, batch 4, 3000 "
                    "steps: about 13 minutes per model on 2 CPU cores; 1 seed",
        train_flags={
            "width": "0.25",
            "patch_size": "32",
            "batch_size": "4",
            "jitter": "-8,7",
            "steps": "3000",
            "validation_interval": "500",
            "checkpoint_interval": "500",
            "log_interval": "25",
            "validation_batch_size": "4",
        },
        seeds=(0,),
    ),
    "smoke": Preset(
        name="smoke",
        description="minutes, for a fresh machine or CI: small network (1 residual unit per "
                    "scale), 24^3 patches at 4 mm, 300 steps, fold 0, seed 0, phantoms",
        train_flags={
            "filters": "8,16,16,32,32",
            "num_res_units": "1",
            "spacing_mm": "4.0",
            "crop_margin_mm": "8.0",
            "patch_size": "24",
            "batch_size": "4",
            "jitter": "-6,5",
            "shuffle_buffer": "32",
            "steps": "300",
            "validation_interval": "300",
            "checkpoint_interval": "100",
            "log_interval": "25",
            "validation_batch_size": "8",
        },
        schemes=ALL_SCHEMES,
        folds=(0,),
        seeds=(0,),
        phantoms_per_modality=4,
    ),
}
"""Preset name -> :class:`Preset`."""


def get_preset(name: str) -> Preset:
    """The preset called ``name``.

    Raises:
        ConfigurationError: for an unknown name (listing the known ones).
    """
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise ConfigurationError(
            f"unknown preset {name!r}; choose one of {sorted(PRESETS)}"
        ) from None


def scheme_flagfiles(scheme: str, config_dir: str | Path = CONFIG_DIR) -> list[Path]:
    """The flagfiles of ``scheme``: ``common.cfg`` then ``<scheme>.cfg``.

    Raises:
        ConfigurationError: when a file is missing (an unknown scheme).
    """
    config_dir = Path(config_dir)
    files = [config_dir / "common.cfg", config_dir / f"{scheme.lower()}.cfg"]
    for path in files:
        if not path.is_file():
            known = sorted(p.stem for p in config_dir.glob("*.cfg") if p.stem != "common")
            raise ConfigurationError(
                f"{path}: no such flagfile; schemes with a flagfile are {known}"
            )
    return files
