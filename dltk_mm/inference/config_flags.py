"""The absl flags of :class:`~dltk_mm.inference.segment.InferenceConfig`, derived from its fields.

``--overlap``, ``--weighting``, ``--batch_size``, ``--mirror``, ``--mirror_axes`` (e.g.
``--mirror_axes=0,1``), ``--mirror_swap`` / ``--nomirror_swap``, ``--largest_component`` and
``--min_component_voxels``, with the dataclass's defaults (the paper's protocol) and its
``Attributes:`` documentation as help (:mod:`dltk_mm.flag_fields`). This module imports no
TensorFlow, so a command can define and check these flags before its start-up.
"""

from __future__ import annotations

from absl import flags

from dltk_mm import flag_fields
from dltk_mm.inference.segment import WEIGHTINGS, InferenceConfig


def inference_flag_specs() -> tuple[flag_fields.FlagSpec, ...]:
    """One flag per :class:`InferenceConfig` field (``--overlap``, ...)."""
    return flag_fields.derive_specs(InferenceConfig, choices={"weighting": WEIGHTINGS})


def define_inference_flags(fv: flags.FlagValues) -> None:
    """Defines the inference flags in ``fv`` (defaults: :class:`InferenceConfig`'s)."""
    flag_fields.define_flags(fv, InferenceConfig, inference_flag_specs())


def inference_from_flags(fv: flags.FlagValues, base: InferenceConfig) -> InferenceConfig:
    """``base`` (e.g. a model's own settings) with the inference flags given on the command line.

    Flags left out (not on the command line nor in a flagfile) do not change ``base``.

    Raises:
        ConfigurationError: on an invalid value.
    """
    return flag_fields.replace(base, flag_fields.flag_values(fv, inference_flag_specs(),
                                                             only_present=True))


__all__ = ["define_inference_flags", "inference_flag_specs", "inference_from_flags"]
