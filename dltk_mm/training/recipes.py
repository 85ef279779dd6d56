"""Training recipes: named sets of :class:`~dltk_mm.training.config.TrainConfig` settings.

A recipe is data, layered like the benchmark's presets: dotted field names with their values,
applied on top of TrainConfig's defaults and *under* whatever a user gives (``dltk-mm-train
--recipe=plus --loss=dice`` keeps the plus recipe except its loss). The run's ``config.json``
holds the resolved settings and, for the record, the recipe's name (``TrainConfig.recipe``).

* ``paper`` (the default): nothing changed - TrainConfig's defaults are the paper's protocol
  (docs/paper.md, sections 4-6).
* ``plus``: what measurement on cross-validation splits of real CT and MR chose among the
  additions this code base implements (docs/paper.md, section 9; the figures and commands are in
  experiments/paper/README.md, "Accuracy on the dev folder"): Dice + cross-entropy loss; random
  gamma, contrast and brightness (each on 30 % of the patches), a factor per labelled organ on
  its intensities (30 %; added after three seeds with and without it: MR +0.013, CT +0.005) and
  zoom and rotation about the patch centre (each on 20 %;
  :class:`~dltk_mm.io.augmentation.AugmentationConfig`); validation and evaluation with Gaussian
  window weighting and the largest connected component per organ.
  Measured and left out: test-time mirroring (it ruins a model trained without random flips; see
  :class:`~dltk_mm.inference.InferenceConfig`), and the provisional recipe's poly decay with
  warm-up and left-right flips (the kidney labels swapped), which together scored below the loss
  change alone, and random flips of all three axes with mirrored evaluation (below the recipe
  without them, mirrored or not).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from dltk_mm.errors import ConfigurationError

#: The recipe of TrainConfig's defaults (the paper's protocol).
PAPER = "paper"

#: Recipe name -> {dotted TrainConfig field: value} (read-only).
RECIPES: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    PAPER: MappingProxyType({}),
    "plus": MappingProxyType({
        "loss": "dice_cross_entropy",
        "pipeline.augmentation.gamma_probability": 0.3,
        "pipeline.augmentation.contrast_probability": 0.3,
        "pipeline.augmentation.brightness_probability": 0.3,
        "pipeline.augmentation.organ_intensity_probability": 0.3,
        "pipeline.augmentation.scale_probability": 0.2,
        "pipeline.augmentation.rotation_probability": 0.2,
        "inference.weighting": "gaussian",
        "inference.largest_component": True,
    }),
})


def check_recipe(name: str) -> str:
    """``name`` if it is a recipe.

    Raises:
        ConfigurationError: for an unknown name, listing the known ones.
    """
    if name not in RECIPES:
        raise ConfigurationError(f"unknown recipe {name!r}; use one of {sorted(RECIPES)}")
    return name


def recipe_overrides(name: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The dotted field values of recipe ``name`` with ``overrides`` on top (they win).

    The result also sets ``recipe`` to ``name``; give it to
    :meth:`TrainConfig.with_overrides <dltk_mm.training.config.TrainConfig.with_overrides>`
    (e.g. ``TrainConfig(manifest=m, scheme="v4").with_overrides(recipe_overrides("plus"))``).

    Raises:
        ConfigurationError: for an unknown recipe.
    """
    return {**RECIPES[check_recipe(name)], "recipe": name, **(overrides or {})}
