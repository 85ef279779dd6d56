"""A cut-down benchmark on tiny phantoms: interrupted, resumed, a finished run redone, evaluated
again under another protocol, tables and figures written (2 schemes, 1 fold, 1 seed, 4 steps);
refusals that come before any training; the ablation flag end to end (stand-in network)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal

import pandas as pd
import pytest

from dltk_mm.benchmark import BenchmarkSettings, get_benchmark_preset, plan_runs, run_benchmark
from dltk_mm.benchmark.execute import DONE_FILE, done_record
from dltk_mm.cli.benchmark import print_summary
from dltk_mm.errors import ConfigurationError
from dltk_mm.training import FolderLock, TrainingCallback
from dltk_mm.training.model_dir import LOCK_FILE

TINY = {"network.filters": (2, 4, 4, 4, 8), "pipeline.batch_size": 2, "steps": 4,
        "checkpoint_interval": 2, "validation_interval": 4, "log_interval": 2,
        "inference.batch_size": 4, "pipeline.patch_size": (16, 16, 16), "pipeline.jitter": (-4, 3)}


class SigtermAt(TrainingCallback):
    """Sends SIGTERM to this process at ``step`` of ``scheme`` (as a kill would)."""

    def __init__(self, scheme: str, step: int) -> None:
        self.scheme, self.step, self.active = scheme, step, False

    def on_train_begin(self, info) -> None:
        self.active = info.config.scheme == self.scheme

    def on_step_end(self, step, logs) -> None:
        if self.active and step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class TrainingCount(TrainingCallback):
    """Counts the trainings started."""

    def __init__(self) -> None:
        self.started = 0

    def on_train_begin(self, info) -> None:
        self.started += 1


class LockProbe(TrainingCallback):
    """Records, during training, whether the results folder is locked against a second user."""

    def __init__(self, results_dir) -> None:
        self.results_dir, self.refusals = results_dir, []

    def on_train_begin(self, info) -> None:
        with pytest.raises(ConfigurationError, match="in use") as refused:
            FolderLock(self.results_dir, purpose="benchmark results folder").acquire()
        self.refusals.append(str(refused.value))


@pytest.fixture()
def settings(tmp_path) -> BenchmarkSettings:
    return BenchmarkSettings(
        results_dir=tmp_path / "bench", preset=get_benchmark_preset("smoke"),
        schemes=("joint", "v4"), folds=(0,), seeds=(0,), overrides=TINY,
        phantoms_per_modality=2)


def test_interrupted_benchmark_resumes_and_redoes_only_missing_runs(settings) -> None:
    # 1. killed (SIGTERM) during the second run: the first is finished, the second checkpointed
    probe = LockProbe(settings.results_dir)
    first = run_benchmark(settings, callbacks=[SigtermAt("v4", 2), probe])
    assert first.interrupted_by == signal.SIGTERM
    assert first.names("done") == ["joint/fold0/seed0"]
    assert first.names("interrupted") == ["v4/fold0/seed0"]
    assert len(probe.refusals) == 2  # the results folder was locked during both trainings
    runs = settings.results_dir / "runs"
    assert (runs / "joint/fold0/seed0" / DONE_FILE).is_file()
    assert not (runs / "v4/fold0/seed0" / DONE_FILE).exists()
    assert not first.files  # no tables from a partial benchmark
    assert not (settings.results_dir / LOCK_FILE).exists()  # released

    # 2. rerun: the finished run is skipped, the interrupted one resumes from its checkpoint
    events = []
    second = run_benchmark(settings, progress=events.append)
    assert [(e.spec.name, e.outcome.status if e.outcome else "start") for e in events] == [
        ("joint/fold0/seed0", "skipped"), ("v4/fold0/seed0", "start"),
        ("v4/fold0/seed0", "done")]
    assert [e.remaining for e in events if e.outcome] == [1, 0]
    assert second.interrupted_by is None
    assert second.names("skipped") == ["joint/fold0/seed0"]
    assert second.names("done") == ["v4/fold0/seed0"]
    assert second.outcomes[1].initial_step == 2
    done = json.loads((runs / "v4/fold0/seed0" / DONE_FILE).read_text())
    assert done["steps"] == 4 and done["subjects"] == 2
    paper = done["protocols"]["paper"]
    assert paper["overlap"] == 0.5 and paper["batch_size"] == 4

    results = pd.read_csv(settings.results_dir / "results_all.csv")
    # 2 schemes x (1 held-out MR + 1 held-out CT subject) x 4 organs, the paper's protocol only
    # (the runs' own evaluation is the paper's: only the batch size differs)
    assert len(results) == 16 and set(results["protocol"]) == {"paper"}
    assert (results["segment_s"] > 0).all()
    first_results = results
    assert done["scoring"] == "source_geometry" and list(done["protocols"]) == ["paper"]
    assert set(results["scheme"]) == {"joint", "v4"} and set(results["modality"]) == {"mr", "ct"}
    assert results["dice"].between(0.0, 1.0).all()
    assert {"hd95_mm", "assd_mm"} <= set(results.columns)
    for name in ("figure4_overlay_mr", "figure5_overlay_ct", "figure6_boxplots_mr",
                 "figure7_boxplots_ct"):
        assert second.files[name].stat().st_size > 10_000, name
    assert len(pd.read_csv(second.files["table1_mr"])) == 5 * 2  # (4 organs + mean) x 2 schemes
    assert len(pd.read_csv(second.files["table2_ct"])) == 5 * 2
    table3 = pd.read_csv(second.files["table3_overall"]).set_index("scheme")
    assert table3.loc["v4", "paper"] == 0.860
    assert table3.loc["v4", "difference"] == pytest.approx(table3.loc["v4", "measured_mean"]
                                                           - 0.860)
    markdown = second.files["tables.md"].read_text()
    assert "| Liver | V4 | 1 |" in markdown and "0.914" in markdown  # paper: MR liver, V4
    assert "preset: `smoke`" in markdown and "label's own geometry" in markdown
    assert "improved/table3_overall" not in second.files

    # 3. a lost completion marker: only that run is redone (evaluated again, not retrained)
    (runs / "joint/fold0/seed0" / DONE_FILE).unlink()
    count = TrainingCount()
    third = run_benchmark(settings, callbacks=[count])
    assert third.names("evaluated") == ["joint/fold0/seed0"]
    assert third.names("skipped") == ["v4/fold0/seed0"]
    assert third.outcomes[0].initial_step == 4 and count.started == 0

    # 4. tables and figures again from the finished runs only; the ablation table from the
    # cached scores (nothing segmented in an aggregate-only call). Other evaluation options:
    # test_other_evaluation_options_evaluate_again_without_training (no network to train)
    fourth = run_benchmark(dataclasses.replace(settings, ablation=True), aggregate_only=True)
    assert fourth.outcomes == [] and fourth.ablation == [] and "table3_overall" in fourth.files
    assert list(pd.read_csv(fourth.files["ablation"])["protocol"]) == ["paper"] * 2  # 2 schemes
    pd.testing.assert_frame_equal(pd.read_csv(fourth.files["results_all"]), first_results)


def _fake_finished_run(settings: BenchmarkSettings, manifest, scheme: str) -> None:
    """A finished run folder as the benchmark leaves it (config.json and DONE.json)."""
    (spec,) = [r for r in plan_runs(settings, manifest) if r.scheme == scheme]
    spec.config.save(spec.model_dir / "config.json")
    (spec.model_dir / DONE_FILE).write_text(json.dumps(done_record(spec, settings)))


def test_finished_run_with_other_settings_is_refused_before_any_training(settings,
                                                                         tmp_path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("subject_id,modality,image,label\n")
    settings = dataclasses.replace(settings, manifest=manifest)
    _fake_finished_run(settings, manifest, "v4")
    other = dataclasses.replace(settings, overrides={**TINY, "pipeline.patch_size": (24, 24, 24)})
    with pytest.raises(ConfigurationError, match="pipeline.patch_size"):
        run_benchmark(other)
    # joint comes first in the plan, yet nothing was trained or written for it
    assert not (settings.results_dir / "runs" / "joint").exists()
    assert not (settings.results_dir / LOCK_FILE).exists()


def test_results_folder_in_use_is_refused(settings, tmp_path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("subject_id,modality,image,label\n")
    settings = dataclasses.replace(settings, manifest=manifest)
    with (FolderLock(settings.results_dir, purpose="benchmark results folder"),
          pytest.raises(ConfigurationError, match="in use")):
        run_benchmark(settings)
    assert not (settings.results_dir / "runs").exists()



def test_a_finished_run_is_extended_reevaluated_or_refused_by_its_steps(settings,
                                                                          tmp_path) -> None:
    from dltk_mm.benchmark.execute import FINISHED, NEW, TRAINED, run_state

    manifest = tmp_path / "manifest.csv"
    manifest.write_text("subject_id,modality,image,label\n")
    settings = dataclasses.replace(settings, manifest=manifest, schemes=("v4",))
    _fake_finished_run(settings, manifest, "v4")  # 4 steps, default evaluation

    def state(**changes) -> str:
        changed = dataclasses.replace(settings, **changes)
        (spec,) = plan_runs(changed, manifest)
        return run_state(spec, changed)

    assert state() == FINISHED
    assert state(inference_overrides={"mirror": True}) == TRAINED  # evaluated again only
    assert state(weights="best") == TRAINED
    assert state(surface_metrics=False) == TRAINED
    assert state(overrides={**TINY, "steps": 8}) == NEW  # resumed to 8 steps
    assert state(overrides={**TINY, "log_interval": 1}) == FINISHED  # schedule only
    with pytest.raises(ConfigurationError, match="steps: 4 .saved. != 2"):
        state(overrides={**TINY, "steps": 2})


def test_the_ablation_flag_scores_and_tabulates_without_training(fake_run) -> None:
    fake_run.write_legacy_done()  # a run trained by an older version, evaluated otherwise
    settings = dataclasses.replace(fake_run.settings, ablation=True)
    events = []
    report = run_benchmark(settings, progress=events.append)
    assert report.names("evaluated") == ["joint/fold0/seed0"]
    assert [o.status for o in report.ablation] == ["ablation"]
    assert [e.outcome.status for e in events if e.outcome] == ["evaluated", "ablation"]
    ablation = pd.read_csv(report.files["ablation"])
    assert list(ablation["protocol"]) == ["paper", "+gaussian", "+mirror", "+mirror_no_swap",
                                          "+mirror_no_lr", "+largest_component", "all"]
    assert ablation.loc[0, "both"] == 1.0  # the stand-in network is perfect, in source geometry
    assert "Ablation" in report.files["ablation.md"].read_text()
    windows = fake_run.streams.windows
    again = run_benchmark(settings)
    assert again.names("skipped") == ["joint/fold0/seed0"] and fake_run.streams.windows == windows


def test_other_evaluation_options_evaluate_again_without_training(fake_run, capsys) -> None:
    fake_run.write_legacy_done()  # a trained run (stand-in network), evaluated by an old version
    count = TrainingCount()
    first = run_benchmark(fake_run.settings, callbacks=[count])
    assert first.names("evaluated") == ["joint/fold0/seed0"]
    before = pd.read_csv(first.files["results_all"])
    assert set(before["protocol"]) == {"paper"}

    # another evaluation asked for: evaluated again under the improved protocol (the paper's
    # scores reused), not retrained
    other = dataclasses.replace(fake_run.settings, inference_overrides={"overlap": 0.0})
    second = run_benchmark(other, callbacks=[count])
    assert second.names("evaluated") == ["joint/fold0/seed0"]
    assert second.outcomes[0].initial_step == 4 and count.started == 0
    (spec,) = plan_runs(other, fake_run.manifest)
    done = json.loads((spec.model_dir / DONE_FILE).read_text())
    assert "inference" not in done  # the protocols' options are recorded once
    assert done["protocols"]["improved"]["overlap"] == 0.0
    assert done["protocols"]["paper"]["overlap"] == 0.5
    results = pd.read_csv(second.files["results_all"])
    assert len(results) == 16 and list(results["protocol"].unique()) == ["paper", "improved"]
    paper = results[results["protocol"] == "paper"].reset_index(drop=True)
    pd.testing.assert_frame_equal(paper, before)  # the paper's scores not recomputed
    assert second.files["improved/tables.md"].parent == other.results_dir / "tables/improved"
    assert "overlap 0.0" in second.files["improved/tables.md"].read_text()
    assert "improved protocol: sliding window overlap 0.0" in second.files[
        "tables.md"].read_text()
    print_summary(second)
    summary = capsys.readouterr().out
    assert "Table 3, paper protocol" in summary and "Table 3, improved protocol" in summary

    third = run_benchmark(dataclasses.replace(other, ablation=True), aggregate_only=True)
    assert list(pd.read_csv(third.files["ablation"])["protocol"]) == ["paper", "improved"]
