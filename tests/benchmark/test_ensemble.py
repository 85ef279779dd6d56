"""The benchmark's seed ensembles (stand-in networks: seed 0 perfect, seed 1 leaning to
background): scored as one model, tabulated, cached, refused where they cannot be formed."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from dltk_mm.benchmark import plan_runs, run_benchmark
from dltk_mm.benchmark.ensemble import ensemble_file
from dltk_mm.benchmark.evaluate import ENSEMBLE_SEED, evaluate_ensemble
from dltk_mm.benchmark.execute import check_finished
from dltk_mm.cli.benchmark import print_summary
from dltk_mm.errors import ConfigurationError, InputDataError


def test_an_ensemble_needs_two_seeds(fake_run) -> None:
    with pytest.raises(ConfigurationError, match="--seeds with two or more"):
        dataclasses.replace(fake_run.settings, ensemble=True)


def test_the_seeds_are_averaged_scored_tabulated_and_cached(fake_run, capsys) -> None:
    fake_run.write_legacy_done()
    settings = dataclasses.replace(fake_run.add_seeds(1), ensemble=True)
    report = run_benchmark(settings)
    assert sorted(report.names("evaluated")) == ["joint/fold0/seed0", "joint/fold0/seed1"]
    assert [o.status for o in report.ensembles] == ["ensemble"]
    results = pd.read_csv(report.files["results_all"])
    per_seed = results[results["protocol"] == "paper"].groupby("seed")["dice"].mean()
    assert per_seed[0] == 1.0 and per_seed[1] == 0.0  # alone, the weak streams find nothing
    scores = pd.read_csv(ensemble_file(settings.results_dir, "joint", 0, (0, 1)),
                         dtype={"subject_id": str})
    assert set(scores["protocol"]) == {"ensemble"} and set(scores["seed"]) == {ENSEMBLE_SEED}
    assert sorted(scores["subject_id"].unique()) == ["ct_a", "mr_a"]
    assert (scores["dice"] == 1.0).all()  # averaged probabilities: the perfect member wins
    table = pd.read_csv(report.files["ensemble/table3_overall"])
    assert table.loc[0, "measured_mean"] == 1.0
    assert "seed ensembles" in report.files["ensemble/tables.md"].read_text()
    print_summary(report)
    assert "Table 3, seed ensembles" in capsys.readouterr().out

    windows = fake_run.streams.windows
    again = run_benchmark(settings)
    assert again.ensembles == [] and fake_run.streams.windows == windows  # cached
    assert "ensemble/table3_overall" in again.files

    # a member evaluated otherwise (here: its record edited) makes the ensemble be redone
    record_path = ensemble_file(settings.results_dir, "joint", 0, (0, 1)).with_suffix(".json")
    record = json.loads(record_path.read_text())
    record["record"]["members"]["joint/fold0/seed1"] = {"file": "ckpt-9", "mtime_ns": 1}
    record_path.write_text(json.dumps(record))
    third = run_benchmark(settings)
    assert [o.status for o in third.ensembles] == ["ensemble"]
    assert fake_run.streams.windows > windows


def test_an_unfinished_seed_leaves_its_ensemble_out(fake_run) -> None:
    fake_run.write_legacy_done()
    run_benchmark(fake_run.settings)  # seed 0 finished
    settings = dataclasses.replace(fake_run.add_seeds(1), ensemble=True)
    first, second = plan_runs(settings, fake_run.manifest)
    (second.model_dir / "DONE.json").unlink()  # seed 1 not trained yet
    report = run_benchmark(settings, aggregate_only=True)
    assert check_finished(first, settings) and not check_finished(second, settings)
    assert report.ensembles == [] and "ensemble/table3_overall" not in report.files
    assert not ensemble_file(settings.results_dir, "joint", 0, (0, 1)).exists()


def test_members_with_other_held_out_subjects_are_refused(fake_run) -> None:
    settings = fake_run.add_seeds(1)
    first, second = plan_runs(settings, fake_run.manifest)
    split = pd.read_csv(second.model_dir / "split.csv")
    split["role"] = split["role"].map({"train": "validation", "validation": "train"})
    split.to_csv(second.model_dir / "split.csv", index=False)
    with pytest.raises(InputDataError, match="held out different subjects"):
        evaluate_ensemble([first, second], settings, first.inference)
