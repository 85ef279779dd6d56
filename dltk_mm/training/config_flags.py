"""The command-line flags of the training and inference configurations, in one place.

Every field of :class:`~dltk_mm.training.config.TrainConfig` (and of its network, preprocessing,
pipeline, augmentation and inference parts) gets one absl flag derived by
:mod:`dltk_mm.flag_fields` from the field itself: its default, type and help text are the
dataclass's, never restated here. A flag is named after its field (``--filters``,
``--patch_size``, ``--noise_sigma``, ...); the validation settings of ``TrainConfig.inference``
are ``--validation_<field>`` (``--validation_overlap``, ``--validation_mirror``, ...). Exceptions,
each written below with its reason: ``--num_classes`` sets both the network's and the pipeline's
class count, and ``pipeline.seed`` has no flag (it is derived from ``--seed``).

``--recipe`` (:mod:`dltk_mm.training.recipes`) layers a named set of settings over the defaults:
the resolved configuration is TrainConfig's defaults, then the recipe's fields, then every flag
given (on the command line or in a flagfile), so a flag always wins over the recipe.

The prediction command's inference flags (``--overlap``, ``--weighting``, ``--batch_size``,
``--mirror``, ...) come from the same mechanism in :mod:`dltk_mm.inference.config_flags`
(re-exported here; no TensorFlow import), and dltk-mm-preprocess derives its flags from
:class:`~dltk_mm.io.preprocessing.PreprocessingConfig` with the same names as here.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from absl import flags

from dltk_mm import flag_fields
from dltk_mm.core.losses import LOSS_NAMES
from dltk_mm.inference.config_flags import (  # re-exported: one import for every command
    define_inference_flags,
    inference_flag_specs,
    inference_from_flags,
)
from dltk_mm.inference.segment import WEIGHTINGS
from dltk_mm.io.labels import is_preset_file
from dltk_mm.networks.schemes import SCHEMES
from dltk_mm.training.config import (
    LR_SCHEDULES,
    STRIDED_KERNELS,
    SUPPORTED_STRATEGIES,
    UPSAMPLE_BORDERS,
    UPSCORE_KERNELS,
    TrainConfig,
)
from dltk_mm.training.recipes import RECIPES, recipe_overrides

#: Fields whose flag also sets other fields (they must agree, so one flag sets both).
_MERGED = {"network.num_classes": ("pipeline.num_classes",)}
#: Fields without a flag: the input pipeline's seed is derived from ``--seed`` (TrainConfig
#: refuses any other value).
_WITHOUT_FLAG = ("pipeline.seed",)

#: Help texts that say more than the field's docstring on a command line.
_HELPS = {
    "manifest": "Manifest CSV (subject_id, modality, image, label[, fold, label_preset]) of the "
                "training data.",
    "pipeline.patch_size": "Patch size z,y,x, or one value for a cube (paper: 64).",
    "network.num_classes": "Classes including background (network output and label range; "
                           "5: background, liver, spleen, right and left kidney).",
    "learning_rate": "Adam learning rate; none = the scheme's paper value ("
                     + ", ".join(f"{s.name} {s.learning_rate:g}" for s in SCHEMES.values())
                     + ").",
    "recipe": "Named settings layered over the defaults and under every flag given: paper (the "
              "paper's protocol) or plus (chosen by cross-validation on real CT and MR: Dice + "
              "cross-entropy, intensity and spatial augmentation, Gaussian blending, largest "
              "component; see dltk_mm/training/recipes.py).",
}

_TRAIN_CHOICES = {
    "scheme": tuple(SCHEMES),
    "strategy": tuple(SUPPORTED_STRATEGIES),
    "network.strided_kernel": STRIDED_KERNELS,
    "network.upscore_kernel": UPSCORE_KERNELS,
    "network.upsample_border": UPSAMPLE_BORDERS,
    "inference.weighting": WEIGHTINGS,
    "loss": LOSS_NAMES,
    "lr_schedule": LR_SCHEDULES,
    "recipe": tuple(RECIPES),
}


@functools.cache
def train_flag_specs() -> tuple[flag_fields.FlagSpec, ...]:
    """The flags of :class:`TrainConfig`, one per field (see the module docstring)."""
    return flag_fields.derive_specs(
        TrainConfig, prefixes={"inference": "validation_"}, merge=_MERGED,
        exclude=_WITHOUT_FLAG, helps=_HELPS, choices=_TRAIN_CHOICES)


# --------------------------------------------------------------------------------------------
def define_train_flags(fv: flags.FlagValues, required: bool = True) -> None:
    """Defines one flag per :class:`TrainConfig` field in ``fv`` (defaults: the dataclass's).

    Args:
        fv: the flag registry (a fresh ``flags.FlagValues()`` or the command's ``FLAGS``).
        required: make ``--manifest`` and ``--scheme`` (fields without a default) required.
    """
    flag_fields.define_flags(fv, TrainConfig, train_flag_specs(), mark_required=required)


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def _resolve_paths(values: dict[str, Any]) -> dict[str, Any]:
    """Paths given on a command line, made absolute against the working folder."""
    for name in ("manifest", "cache_dir"):
        if values.get(name) is not None:
            values[name] = _absolute(os.fspath(values[name]))
    preset = values.get("preprocessing.label_preset")
    if preset is not None and is_preset_file(preset):
        values["preprocessing.label_preset"] = _absolute(preset)
    return values


def _given(fv: flags.FlagValues) -> dict[str, Any]:
    """``{dotted field: value}`` of the flags given, over the fields of their recipe."""
    given = flag_fields.flag_values(fv, train_flag_specs(), only_present=True)
    return _resolve_paths(recipe_overrides(fv["recipe"].value, given))


def config_from_flags(fv: flags.FlagValues) -> TrainConfig:
    """The :class:`TrainConfig` of parsed flags: defaults, then ``--recipe``'s fields, then the
    flags given (paths made absolute).

    Raises:
        ConfigurationError: on an invalid configuration (e.g. a patch size not divisible by the
            network's strides).
    """
    values = flag_fields.flag_values(fv, train_flag_specs())
    return flag_fields.build(TrainConfig, {**_resolve_paths(values), **_given(fv)})


def _parsed(args: Sequence[str], required: bool) -> flags.FlagValues:
    fv = flags.FlagValues()
    define_train_flags(fv, required=required)
    fv(["dltk-mm-train", *args])
    return fv


def config_from_args(args: Sequence[str]) -> TrainConfig:
    """The :class:`TrainConfig` of command-line arguments, parsed in a fresh flag registry.

    Args:
        args: flags as on the command line, e.g. ``["--flagfile=experiments/paper/v4.cfg",
            "--manifest=data/manifest.csv"]`` (``--manifest`` and ``--scheme`` are required).

    Raises:
        flags.Error: on an unknown flag or a malformed value.
        ConfigurationError: on an invalid configuration.
    """
    return config_from_flags(_parsed(args, required=True))


def overrides_from_args(args: Sequence[str]) -> dict[str, Any]:
    """``{dotted TrainConfig field: value}`` of the flags given in ``args`` (flagfiles expanded).

    Only the flags actually given appear (also those set to their default), so that they can be
    layered over another configuration with :meth:`TrainConfig.with_overrides`; a ``--recipe``
    given brings its fields too (under the flags given).

    Raises:
        flags.Error: on an unknown flag or a malformed value.
    """
    fv = _parsed(args, required=False)
    if not fv["recipe"].present:
        return _resolve_paths(flag_fields.flag_values(fv, train_flag_specs(), only_present=True))
    return _given(fv)


def train_args(config: TrainConfig, only_changed_from: TrainConfig | None = None) -> list[str]:
    """``--name=value`` arguments that :func:`config_from_args` turns back into ``config``.

    Args:
        config: a configuration.
        only_changed_from: leave out the flags whose fields equal this configuration's (except
            those of the fields ``config.recipe`` sets: they are always written, since the
            recipe would otherwise set them).
    """
    if only_changed_from is None:
        return flag_fields.to_args(config, train_flag_specs())
    recipe_fields = set(RECIPES[config.recipe])
    args = []
    for spec in train_flag_specs():
        always = bool(recipe_fields & set(spec.paths))
        args += flag_fields.to_args(config, [spec], None if always else only_changed_from)
    return args


__all__ = [
    "config_from_args", "config_from_flags", "define_inference_flags", "define_train_flags",
    "inference_flag_specs", "inference_from_flags", "overrides_from_args", "train_args",
    "train_flag_specs",
]
