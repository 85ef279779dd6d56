"""TensorFlow runtime settings that dltk_mm chooses before TensorFlow is imported.

TensorFlow reads some settings from the environment once, when it is imported. ``import dltk_mm``
fills in dltk_mm's defaults for them (:data:`ENVIRONMENT_DEFAULTS`), never overriding a value the
user has set, so that ``TF_ENABLE_ONEDNN_OPTS=0 dltk-mm-train ...`` still turns oneDNN off.

Why oneDNN is on by default: the pip wheels of TensorFlow 2.21 enable the oneDNN CPU kernels only
on CPUs with AVX-512; elsewhere (AVX2 machines such as most cloud AMD EPYC vCPUs) 3-D convolutions
and their gradients fall back to generic Eigen kernels. On a 2-core AVX2 machine oneDNN made the
gradients of single FCN layers 1.1-9x faster, and a full-width training step took 6.9 s instead of
12.6 s (experiments/bench/README.md, "How the step got here"). oneDNN
sums in a different order, so results differ from the generic kernels by float32 round-off.
Settings that only affect CPU kernels change nothing on a GPU.
"""

from __future__ import annotations

import os
import sys

from absl import logging

#: Environment variables dltk_mm sets when they are unset, before TensorFlow is imported.
ENVIRONMENT_DEFAULTS: dict[str, str] = {"TF_ENABLE_ONEDNN_OPTS": "1"}


def apply_environment_defaults() -> dict[str, str]:
    """Sets each unset variable of :data:`ENVIRONMENT_DEFAULTS`; called by ``import dltk_mm``.

    Returns:
        The variables this call set (empty where the user set them all, or on a second call).
    """
    applied = {}
    for name, value in ENVIRONMENT_DEFAULTS.items():
        if name not in os.environ:
            os.environ[name] = value
            applied[name] = value
    if applied and "tensorflow" in sys.modules:
        logging.warning(
            "TensorFlow was imported before dltk_mm, so %s may not take effect; import dltk_mm "
            "first or set it in the environment", ", ".join(f"{k}={v}" for k, v in applied.items()))
    return applied


def onednn_enabled() -> bool:
    """Whether this TensorFlow process runs its CPU kernels through oneDNN."""
    from tensorflow.python.util import _pywrap_util_port  # TensorFlow's own build/runtime query

    return bool(_pywrap_util_port.IsMklEnabled())


__all__ = ["ENVIRONMENT_DEFAULTS", "apply_environment_defaults", "onednn_enabled"]
