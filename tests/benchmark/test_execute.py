"""Finished runs: evaluated under the paper's protocol and their own, evaluated again (never
retrained) when the evaluation asked for changes or was recorded by an older version; the
ablation's protocols scored from the trained model and cached."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from dltk_mm.benchmark import tables
from dltk_mm.benchmark.evaluate import protocol_file
from dltk_mm.benchmark.execute import (
    DONE_FILE,
    EVALUATION_FILE,
    FINISHED,
    TRAINED,
    ablation_results,
    run_one,
    run_state,
)
from dltk_mm.benchmark.protocols import IMPROVED, PAPER
from dltk_mm.core.label_map import NUM_CLASSES, organ_names


def _evaluation(spec) -> pd.DataFrame:
    return pd.read_csv(spec.model_dir / EVALUATION_FILE, dtype={"subject_id": str})


def test_an_old_or_unreadable_done_json_means_evaluate_again_not_a_crash(fake_run) -> None:
    spec, settings = fake_run.spec()
    fake_run.write_legacy_done()  # no protocols, no scoring recorded
    assert run_state(spec, settings) == TRAINED
    (spec.model_dir / DONE_FILE).write_text("{not json")
    assert run_state(spec, settings) == TRAINED
    (spec.model_dir / DONE_FILE).write_text("[]")
    assert run_state(spec, settings) == TRAINED


def test_runs_are_scored_under_paper_and_improved_and_again_when_eval_options_change(
        fake_run) -> None:
    spec, settings = fake_run.spec()
    fake_run.write_legacy_done()
    outcome = run_one(spec, settings)
    assert outcome.status == "evaluated" and outcome.initial_step == spec.config.steps
    frame = _evaluation(spec)
    assert set(frame["protocol"]) == {PAPER}  # the run's evaluation is the paper's
    assert (frame["dice"] == 1.0).all() and outcome.protocol_dice == {PAPER: 1.0}
    assert run_state(spec, settings) == FINISHED
    done = json.loads((spec.model_dir / DONE_FILE).read_text())
    assert list(done["protocols"]) == [PAPER] and done["scoring"] == "source_geometry"

    windows = fake_run.streams.windows
    paper_file = protocol_file(spec.model_dir, PAPER)
    paper_written = paper_file.stat().st_mtime_ns
    other, other_settings = fake_run.spec(inference_overrides={"overlap": 0.25})
    assert run_state(other, other_settings) == TRAINED
    outcome = run_one(other, other_settings)
    assert outcome.status == "evaluated" and set(outcome.protocol_dice) == {PAPER, IMPROVED}
    frame = _evaluation(other)
    assert list(frame["protocol"].unique()) == [PAPER, IMPROVED]
    assert len(frame) == 2 * 2 * 4  # protocols x held-out volumes x organs
    done = json.loads((spec.model_dir / DONE_FILE).read_text())
    assert done["protocols"][IMPROVED]["overlap"] == 0.25
    assert done["protocols"][PAPER]["overlap"] == 0.5
    assert fake_run.streams.windows > windows  # improved segmented ...
    assert paper_file.stat().st_mtime_ns == paper_written  # ... the paper's from the cache
    assert run_state(other, other_settings) == FINISHED

    # back to the first evaluation: recorded otherwise, evaluated again, all from the caches
    windows = fake_run.streams.windows
    assert run_state(spec, settings) == TRAINED
    assert run_one(spec, settings).status == "evaluated"
    assert fake_run.streams.windows == windows
    assert set(_evaluation(spec)["protocol"]) == {PAPER}


def test_the_ablation_scores_finished_runs_once_with_the_weights_asked(fake_run) -> None:
    spec, settings = fake_run.spec(inference_overrides={"mirror": True})
    fake_run.write_legacy_done()
    assert ablation_results([spec], settings).empty  # not finished: nothing scored
    run_one(spec, settings)
    scores = ablation_results([spec], settings)
    table = tables.ablation_table(scores).set_index("protocol")
    assert list(table.index) == [PAPER, "+gaussian", "+mirror", "+mirror_no_swap",
                                 "+mirror_no_lr", "+largest_component", "all", IMPROVED]
    assert (table["volumes"] == 2).all() and (table["seconds_per_volume"] > 0).all()
    organs = organ_names(NUM_CLASSES)
    # the stand-in network tells the kidneys apart by intensity, not side: mirroring with the
    # kidney swap mixes them up, without the swap (or without left-right flips) it does not
    for protocol in (PAPER, "+gaussian", "+mirror_no_swap", "+mirror_no_lr",
                     "+largest_component"):
        assert table.loc[protocol, [f"mr_{o}" for o in organs]].tolist() == [1.0] * 4, protocol
        assert table.loc[protocol, "difference"] == 0.0
    for protocol in ("+mirror", "all", IMPROVED):
        assert table.loc[protocol, "ct_liver"] == 1.0
        assert table.loc[protocol, "ct_left_kidney"] < 1.0
        assert table.loc[protocol, "difference"] < 0.0

    windows = fake_run.streams.windows
    again = ablation_results([spec], settings)  # a rerun: every score from the caches
    assert fake_run.streams.windows == windows
    pd.testing.assert_frame_equal(scores, again)
    assert len(ablation_results([spec], settings, compute=False)) == len(scores)

    best_spec, best = fake_run.spec(inference_overrides={"mirror": True}, weights="best")
    run_one(best_spec, best)
    assert len(ablation_results([best_spec], best)) == len(scores)
    assert fake_run.streams.windows > windows  # other weights: every protocol evaluated again
    record = json.loads(next(spec.model_dir.glob("evaluation_plus_mirror.json")).read_text())
    assert record["record"]["weights"] == "best" and record["protocol"] == "+mirror"


@pytest.mark.parametrize("weights", ["last", "best"])
def test_the_weights_are_recorded_in_done_json(fake_run, weights) -> None:
    spec, settings = fake_run.spec(weights=weights)
    fake_run.write_legacy_done()
    run_one(spec, settings)
    assert json.loads((spec.model_dir / DONE_FILE).read_text())["weights"] == weights
    assert run_state(spec, settings) == FINISHED


def test_records_from_before_an_inference_option_existed_still_match(fake_run) -> None:
    """A record without an option added later (at its default) is the same protocol: the run
    stays finished and its cached scores are reused; an option unknown today is not."""
    spec, settings = fake_run.spec()
    fake_run.write_legacy_done()
    run_one(spec, settings)
    done_path, paper_record = spec.model_dir / DONE_FILE, protocol_file(spec.model_dir, PAPER)
    record_path = paper_record.with_suffix(".json")
    done = json.loads(done_path.read_text())
    record = json.loads(record_path.read_text())
    for options in (done["protocols"][PAPER], record["record"]["inference"]):
        del options["mirror_swap"], options["mirror_axes"]  # as written before they existed
    done_path.write_text(json.dumps(done))
    record_path.write_text(json.dumps(record))
    assert run_state(spec, settings) == FINISHED
    windows = fake_run.streams.windows
    assert len(ablation_results([spec], settings, compute=False)) > 0
    assert fake_run.streams.windows == windows

    done["protocols"][PAPER]["sharpening"] = 2.0  # unknown today: evaluated again
    done_path.write_text(json.dumps(done))
    assert run_state(spec, settings) == TRAINED
