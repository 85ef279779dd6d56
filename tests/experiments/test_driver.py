"""A cut-down benchmark on tiny phantoms: interrupted, resumed, a finished run redone, tables and
figures written (2 schemes, 1 fold, 1 seed, 4 steps)."""

from __future__ import annotations

import json
import os
import signal

import pandas as pd
import pytest

from dltk_mm.training.callbacks import TrainingCallback
from experiments.paper import run
from experiments.paper.presets import get_preset

TINY = ("--filters=2,4,4,4,8", "--batch_size=2", "--steps=4", "--checkpoint_interval=2",
        "--validation_interval=4", "--log_interval=2", "--validation_batch_size=4",
        "--patch_size=16", "--jitter=-4,3")


class SigtermAt(TrainingCallback):
    """Sends SIGTERM to this process at ``step`` of ``scheme`` (as a kill would)."""

    def __init__(self, scheme: str, step: int) -> None:
        self.scheme, self.step, self.active = scheme, step, False

    def on_train_begin(self, info) -> None:
        self.active = info.config.scheme == self.scheme

    def on_step_end(self, step, logs) -> None:
        if self.active and step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> run.BenchmarkSettings:
    return run.BenchmarkSettings(
        results_dir=tmp_path_factory.mktemp("bench"), preset=get_preset("smoke"),
        schemes=("joint", "v4"), folds=(0,), seeds=(0,), train_overrides=TINY,
        phantoms_per_modality=2)


def test_interrupted_benchmark_resumes_and_redoes_only_missing_runs(settings) -> None:
    # 1. killed (SIGTERM) during the second run: the first is finished, the second checkpointed
    first = run.run_benchmark(settings, callbacks=[SigtermAt("v4", 2)])
    assert first.interrupted_by == signal.SIGTERM
    assert first.names("done") == ["joint/fold0/seed0"]
    assert first.names("interrupted") == ["v4/fold0/seed0"]
    runs = settings.results_dir / "runs"
    assert (runs / "joint/fold0/seed0/DONE.json").is_file()
    assert not (runs / "v4/fold0/seed0/DONE.json").exists()
    assert not first.files  # no tables from a partial benchmark

    # 2. rerun: the finished run is skipped, the interrupted one resumes from its checkpoint
    second = run.run_benchmark(settings)
    assert second.interrupted_by is None
    assert second.names("skipped") == ["joint/fold0/seed0"]
    assert second.names("done") == ["v4/fold0/seed0"]
    assert second.outcomes[1].initial_step == 2
    done = json.loads((runs / "v4/fold0/seed0/DONE.json").read_text())
    assert done["steps"] == 4 and done["subjects"] == 2

    results = pd.read_csv(settings.results_dir / "results_all.csv")
    # 2 schemes x (1 held-out MR + 1 held-out CT subject) x 4 organs
    assert len(results) == 16
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
    assert "preset: `smoke`" in markdown

    # 3. a lost completion marker: only that run is redone (evaluated again, not retrained)
    (runs / "joint/fold0/seed0/DONE.json").unlink()
    third = run.run_benchmark(settings)
    assert third.names("done") == ["joint/fold0/seed0"]
    assert third.names("skipped") == ["v4/fold0/seed0"]
    assert third.outcomes[0].initial_step == 4

    # 4. tables and figures again from the finished runs only
    fourth = run.run_benchmark(settings, aggregate_only=True)
    assert fourth.outcomes == [] and "table3_overall" in fourth.files


def test_finished_run_with_other_settings_is_refused(settings) -> None:
    if not (settings.results_dir / "runs/v4/fold0/seed0/DONE.json").is_file():
        pytest.skip("needs the benchmark of the previous test")
    other = run.BenchmarkSettings(
        results_dir=settings.results_dir, preset=settings.preset, schemes=("v4",),
        folds=(0,), seeds=(0,), train_overrides=(*TINY, "--patch_size=24"),
        phantoms_per_modality=2)
    with pytest.raises(run.ConfigurationError, match="pipeline.patch_size"):
        run.run_benchmark(other)
