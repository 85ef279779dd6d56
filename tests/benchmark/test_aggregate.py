"""Aggregation: only finished runs count; tables and box plots from their evaluation files."""

from __future__ import annotations

import pandas as pd

from dltk_mm.benchmark.aggregate import RESULTS_FILE, aggregate, load_results
from dltk_mm.benchmark.execute import DONE_FILE, EVALUATION_FILE
from dltk_mm.benchmark.plan import run_dir
from tests.benchmark.test_tables import synthetic_results


def write_run(results_dir, frame: pd.DataFrame, finished: bool) -> None:
    row = frame.iloc[0]
    folder = run_dir(results_dir, row["scheme"], row["fold"], row["seed"])
    folder.mkdir(parents=True)
    frame.to_csv(folder / EVALUATION_FILE, index=False)
    if finished:
        (folder / DONE_FILE).write_text("{}")


def test_only_finished_runs_are_gathered_into_tables_and_figures(tmp_path) -> None:
    assert aggregate(tmp_path) == {}  # nothing finished: nothing written
    assert list(tmp_path.iterdir()) == []
    results = synthetic_results()
    for (scheme, _, _), frame in results.groupby(["scheme", "fold", "seed"]):
        write_run(tmp_path, frame, finished=scheme != "msbn")  # msbn runs were interrupted
    gathered = load_results(tmp_path)
    assert set(gathered["scheme"]) == {"individual", "v4"}
    assert len(gathered) == len(results[results["scheme"] != "msbn"])
    files = aggregate(tmp_path, header="# header")
    assert files["results_all"] == tmp_path / RESULTS_FILE
    assert pd.read_csv(files["results_all"]).shape == gathered.shape
    assert {"table1_mr", "table2_ct", "table3_overall", "tables.md", "figure6_boxplots_mr",
            "figure7_boxplots_ct"} <= set(files)
    # no run kept a prediction, so there is no overlay to draw
    assert not {"figure4_overlay_mr", "figure5_overlay_ct"} & set(files)
    assert "MSBN" not in files["tables.md"].read_text()
