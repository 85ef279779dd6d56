"""Evaluation protocols: the paper's, the run's own where it differs, the ablation's additions."""

from __future__ import annotations

import dataclasses

import pytest

from dltk_mm.benchmark.protocols import (
    ABLATION_ADDITIONS,
    ENSEMBLE,
    IMPROVED,
    PAPER,
    PROTOCOL_ORDER,
    ablation_protocols,
    file_stem,
    main_protocols,
    paper_inference,
)
from dltk_mm.inference import InferenceConfig


def test_the_paper_protocol_is_the_defaults_with_the_runs_batch_size() -> None:
    run = InferenceConfig(batch_size=8, mirror=True, weighting="gaussian")
    assert paper_inference(run) == InferenceConfig(batch_size=8)
    assert main_protocols(InferenceConfig(batch_size=8)) == {PAPER: InferenceConfig(batch_size=8)}
    assert main_protocols(run) == {PAPER: InferenceConfig(batch_size=8), IMPROVED: run}


def test_each_ablation_protocol_is_the_paper_protocol_plus_its_addition() -> None:
    base = InferenceConfig(batch_size=2, overlap=0.25)  # the run's own overlap is not the paper's
    ablation = ablation_protocols(base)
    assert list(ablation) == ["+gaussian", "+mirror", "+mirror_no_swap", "+mirror_no_lr",
                              "+largest_component", "all"]
    paper = InferenceConfig(batch_size=2)
    for name, inference in ablation.items():
        changed = {f.name for f in dataclasses.fields(InferenceConfig)
                   if getattr(inference, f.name) != getattr(paper, f.name)}
        assert changed == set(ABLATION_ADDITIONS[name]), name
    assert ablation["+mirror_no_lr"].mirror_axes == (0, 1)
    assert ablation["+mirror_no_swap"].mirror_swap is False
    assert ablation["all"] == dataclasses.replace(paper, weighting="gaussian", mirror=True,
                                                  largest_component=True)
    assert PROTOCOL_ORDER[0] == PAPER and PROTOCOL_ORDER[-2:] == (IMPROVED, ENSEMBLE)
    assert file_stem("+mirror_no_lr") == "plus_mirror_no_lr"


@pytest.mark.parametrize("name", list(ABLATION_ADDITIONS))
def test_every_ablation_protocol_is_a_valid_configuration(name) -> None:
    assert isinstance(ablation_protocols(InferenceConfig())[name], InferenceConfig)
