"""Training recipes: named sets of :class:`~dltk_mm.training.config.TrainConfig` settings.

A recipe is data, layered like the benchmark's presets: dotted field names with their values,
applied on top of TrainConfig's defaults and *under* whatever a user gives (``dltk-mm-train
--recipe=plus --loss=dice`` keeps the plus recipe except its loss). The run's ``config.json``
holds the resolved settings and, for the record, the recipe's name (``TrainConfig.recipe``).

* ``paper`` (the default): nothing changed - TrainConfig's defaults are the paper's protocol
  (docs/paper.md, sections 4-6).
* ``plus``: the standard practice of current segmentation work that this code base implements
  (docs/paper.md, section 9):
  Dice + cross-entropy loss, a poly learning-rate decay after a linear warm-up, random left-right
  flips of the patches (with the right/left kidney labels swapped), and validation with test-time
  mirroring, Gaussian window weighting and the largest connected component per organ.

The ``plus`` recipe is PROVISIONAL: it has not been chosen by measurement on dev splits, and its
first measurement (one seed, one held-out subject per modality; experiments/paper/README.md) was
worse than the paper recipe with only the loss changed to Dice + cross-entropy. Its parts
are the usual choices of published pipelines, taken as a starting point; whether each one helps
here, and by how much, is still to be measured (issue 12), and its values will change with those
measurements. The paper's tables are reproduced with ``paper``. Further candidates the pipeline
already offers (random gamma, contrast, brightness, scaling and rotation in
:class:`~dltk_mm.io.augmentation.AugmentationConfig`) are off in both recipes until measured.
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
        "lr_schedule": "poly",
        "warmup_steps": 200,
        # A flip of axis 2 (x, left-right in the LPS preprocessing) swaps labels 3 and 4.
        "pipeline.augmentation.flip_axes": (2,),
        "inference.mirror": True,
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
