"""Aggregation: only finished runs count; tables and box plots from their evaluation files."""

from __future__ import annotations

import pandas as pd
import pytest

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
    files = aggregate(tmp_path, headers={"paper": "# header"})
    assert files["results_all"] == tmp_path / RESULTS_FILE
    assert pd.read_csv(files["results_all"]).shape == gathered.shape
    assert {"table1_mr", "table2_ct", "table3_overall", "tables.md", "figure6_boxplots_mr",
            "figure7_boxplots_ct"} <= set(files)
    # no run kept a prediction, so there is no overlay to draw
    assert not {"figure4_overlay_mr", "figure5_overlay_ct"} & set(files)
    assert "MSBN" not in files["tables.md"].read_text()
    assert not (tmp_path / "tables" / "improved").exists()  # no improved protocol evaluated
    assert "ablation" not in files


def test_improved_protocol_tables_go_to_their_own_folder_beside_the_papers(tmp_path) -> None:
    paper = synthetic_results()
    improved = paper.assign(protocol="improved", dice=paper["dice"] + 0.05)
    for _, frame in pd.concat([paper, improved]).groupby(["scheme", "fold", "seed"]):
        write_run(tmp_path, frame, finished=True)
    files = aggregate(tmp_path, headers={"paper": "# paper", "improved": "# improved"},
                      ablation=pd.concat([paper, improved]))
    assert files["improved/tables.md"] == tmp_path / "tables" / "improved" / "tables.md"
    assert files["improved/tables.md"].read_text().startswith("# improved")
    assert files["tables.md"].read_text().startswith("# paper")
    paper3 = pd.read_csv(files["table3_overall"]).set_index("scheme")
    improved3 = pd.read_csv(files["improved/table3_overall"]).set_index("scheme")
    assert improved3.loc["v4", "measured_mean"] == pytest.approx(
        paper3.loc["v4", "measured_mean"] + 0.05)
    assert set(pd.read_csv(files["results_all"])["protocol"]) == {"paper", "improved"}
    ablation = pd.read_csv(files["ablation"])
    assert list(ablation["protocol"].unique()) == ["paper", "improved"]
    assert files["ablation.md"] == tmp_path / "tables" / "ablation.md"
    assert "figure6_boxplots_mr" in files and "improved/figure6_boxplots_mr" not in files


def test_evaluations_written_before_protocols_still_gather(tmp_path) -> None:
    old = synthetic_results().drop(columns=["protocol", "segment_s"])
    for _, frame in old.groupby(["scheme", "fold", "seed"]):
        write_run(tmp_path, frame, finished=True)
    gathered = load_results(tmp_path)
    assert set(gathered["protocol"]) == {"paper"} and gathered["segment_s"].isna().all()
    assert "table3_overall" in aggregate(tmp_path)
