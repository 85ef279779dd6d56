"""Evaluation protocols: how the held-out volumes of a run are segmented for its scores.

* ``paper``: the paper's protocol, :class:`~dltk_mm.inference.InferenceConfig`'s defaults
  (sliding window with 50 % overlap, uniform blending, no mirroring, no post-processing;
  docs/paper.md, section 6). Tables 1-3 and the figures, compared with the paper's numbers, are
  this protocol's.
* ``improved``: the run's own ``TrainConfig.inference`` (the one its validation used) with the
  benchmark's ``--eval_*`` changes; evaluated only where it differs from ``paper``.
* ``ensemble`` (``--ensemble``): the models of every seed of one scheme and fold segmenting as
  one (their probabilities averaged, :class:`~dltk_mm.inference.ensemble.EnsemblePredictor`),
  with the ``improved`` protocol's options; scored once per scheme and fold, beyond the paper.
* The ablation (``--ablation``): the paper's protocol plus one addition each
  (:data:`ABLATION_ADDITIONS`, docs/paper.md, section 9): Gaussian blending, test-time mirroring
  (with and without the right/left kidney channel swap, and without the left-right flip) and the
  largest connected component, then all of them together.

Every protocol keeps the run's inference ``batch_size`` (windows per network call: it changes the
speed, never the labels), so ``paper`` and ``improved`` differ only in what changes the labels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from dltk_mm.errors import ConfigurationError
from dltk_mm.inference import InferenceConfig

#: The paper's protocol and the run's own (``TrainConfig.inference`` with the ``--eval_*``
#: changes).
PAPER, IMPROVED = "paper", "improved"
#: The ensemble of a scheme and fold's seeds (``--ensemble``), segmented as ``improved``.
ENSEMBLE = "ensemble"
#: The ablation: protocol -> its changes to the paper's protocol.
ABLATION_ADDITIONS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "+gaussian": {"weighting": "gaussian"},
    "+mirror": {"mirror": True},
    "+mirror_no_swap": {"mirror": True, "mirror_swap": False},
    "+mirror_no_lr": {"mirror": True, "mirror_axes": (0, 1)},
    "+largest_component": {"largest_component": True},
    "all": {"weighting": "gaussian", "mirror": True, "largest_component": True},
})
#: Every protocol name, in table order.
PROTOCOL_ORDER: tuple[str, ...] = (PAPER, *ABLATION_ADDITIONS, IMPROVED, ENSEMBLE)


def paper_inference(base: InferenceConfig) -> InferenceConfig:
    """The paper's protocol with ``base``'s batch size."""
    return InferenceConfig(batch_size=base.batch_size)


def main_protocols(inference: InferenceConfig) -> dict[str, InferenceConfig]:
    """``paper`` and, where it differs, ``improved`` (= ``inference``, a run's evaluation)."""
    paper = paper_inference(inference)
    protocols = {PAPER: paper}
    if inference != paper:
        protocols[IMPROVED] = inference
    return protocols


def ablation_protocols(inference: InferenceConfig) -> dict[str, InferenceConfig]:
    """The ablation's protocols (:data:`ABLATION_ADDITIONS`) with ``inference``'s batch size."""
    paper = paper_inference(inference)
    return {name: dataclasses.replace(paper, **changes)
            for name, changes in ABLATION_ADDITIONS.items()}


def protocol_rank(name: str) -> int:
    """Position of a protocol in :data:`PROTOCOL_ORDER` (unknown names last)."""
    return PROTOCOL_ORDER.index(name) if name in PROTOCOL_ORDER else len(PROTOCOL_ORDER)


def file_stem(name: str) -> str:
    """A file-name-safe form of a protocol name (``+mirror`` -> ``plus_mirror``)."""
    return name.replace("+", "plus_")


def stored_inference(values: Any) -> dict[str, Any] | None:
    """A protocol's options as read back from a record, in today's :meth:`InferenceConfig.to_dict`
    form, or None when they are not valid options.

    Options a newer version added are filled with their defaults, so that a record written before
    they existed still matches the same protocol (and its scores are reused, not recomputed),
    while a record whose options differ, or that names options unknown today, does not.
    """
    if not isinstance(values, Mapping):
        return None
    try:
        return InferenceConfig.from_dict(values).to_dict()
    except (ConfigurationError, TypeError, ValueError):
        return None
