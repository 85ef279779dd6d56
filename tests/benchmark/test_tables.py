"""Tables 1-3 put the paper's numbers beside the measured ones, with correct differences."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dltk_mm.benchmark import tables
from dltk_mm.benchmark.paper_results import (
    ORGAN_TITLES,
    PAPER_DICE,
    PAPER_OVERALL,
    PAPER_SCHEMES,
    paper_dice,
)
from dltk_mm.core.label_map import NUM_CLASSES, organ_names

ORGANS = organ_names(NUM_CLASSES)


def synthetic_results() -> pd.DataFrame:
    """Three subjects per modality, two seeds; Dice = base(scheme, modality, organ) + offsets."""
    rows = []
    bases = {"individual": 0.80, "v4": 0.70, "msbn": 0.60}
    for scheme, base in bases.items():
        for seed in (0, 1):
            for modality in ("mr", "ct"):
                for s, offset in enumerate((-0.1, 0.0, 0.1)):
                    for o, organ in enumerate(ORGANS):
                        dice = base + 0.01 * o + offset + (0.02 if modality == "ct" else 0.0)
                        rows.append({"scheme": scheme, "fold": s % 2, "seed": seed,
                                     "protocol": "paper", "subject_id": f"{modality}_{s}",
                                     "modality": modality, "organ": organ, "dice": dice,
                                     "hd95_mm": 2.0 + o, "assd_mm": 0.5 if s else math.inf,
                                     "segment_s": 1.0 + s})
    return pd.DataFrame(rows)


def test_paper_tables_name_the_organs_of_the_label_map() -> None:
    for modality in ("mr", "ct"):
        assert tuple(PAPER_DICE[modality]) == ORGANS
    assert tuple(ORGAN_TITLES) == ORGANS


def test_run_results_are_the_evaluation_columns_of_one_run() -> None:
    from dltk_mm.evaluation import RESULT_COLUMNS

    assert tables.RUN_RESULT_COLUMNS[:4] == ("scheme", "fold", "seed", "protocol")
    assert tables.RUN_RESULT_COLUMNS[-1] == "segment_s"
    assert set(tables.RUN_RESULT_COLUMNS[4:-1]) < set(RESULT_COLUMNS)
    assert {"dice", "hd95_mm", "assd_mm", "subject_id", "organ"} <= set(tables.RUN_RESULT_COLUMNS)


def test_paper_table3_is_the_mean_of_tables_1_and_2() -> None:
    for scheme in PAPER_SCHEMES:
        values = [PAPER_DICE[m][o][scheme] for m in ("mr", "ct") for o in ORGANS]
        assert np.mean(values) == pytest.approx(PAPER_OVERALL[scheme], abs=1e-3)  # rounding
    assert paper_dice("mr", "liver", "individual") == 0.913
    assert paper_dice("ct", "left_kidney", "v4") == 0.851
    assert math.isnan(paper_dice("mr", "liver", "msbn"))


def test_organ_table_means_paper_and_differences() -> None:
    table = tables.organ_table(synthetic_results(), "mr")
    assert list(table["scheme"].unique()) == ["individual", "v4", "msbn"]
    row = table[(table["organ"] == "spleen") & (table["scheme"] == "individual")].iloc[0]
    assert row["n"] == 6  # 3 subjects x 2 seeds
    assert row["measured_mean"] == pytest.approx(0.81)
    assert row["measured_std"] == pytest.approx(np.std([0.71, 0.81, 0.91] * 2, ddof=1))
    assert row["paper"] == 0.772
    assert row["difference"] == pytest.approx(0.81 - 0.772)
    msbn = table[(table["organ"] == "liver") & (table["scheme"] == "msbn")].iloc[0]
    assert math.isnan(msbn["paper"]) and math.isnan(msbn["difference"])
    mean = table[(table["organ"] == tables.MEAN_ROW) & (table["scheme"] == "v4")].iloc[0]
    assert mean["measured_mean"] == pytest.approx(0.715)
    assert mean["paper"] == pytest.approx(np.mean([PAPER_DICE["mr"][o]["v4"] for o in ORGANS]))


def test_overall_table_averages_modalities_like_the_paper() -> None:
    table = tables.overall_table(synthetic_results()).set_index("scheme")
    assert table.loc["v4", "mr_mean"] == pytest.approx(0.715)
    assert table.loc["v4", "ct_mean"] == pytest.approx(0.735)
    assert table.loc["v4", "measured_mean"] == pytest.approx(0.725)
    assert table.loc["v4", "paper"] == 0.860
    assert table.loc["v4", "difference"] == pytest.approx(0.725 - 0.860)
    assert table.loc["individual", "n"] == 48
    assert math.isnan(table.loc["msbn", "paper"])


def test_written_markdown_and_csv_show_paper_numbers(tmp_path) -> None:
    written = tables.write_tables(synthetic_results(), tmp_path, header="# header line")
    assert {"table1_mr", "table2_ct", "table3_overall", "table_surface", "tables.md"} <= set(
        written)
    markdown = written["tables.md"].read_text()
    assert markdown.startswith("# header line")
    assert "Table 1 (MR)" in markdown and "Table 2 (CT)" in markdown and "Table 3" in markdown
    # MR liver, Individual: measured 0.800, paper 0.913, difference -0.113
    assert "| Liver | Individual | 6 | 0.800 ± 0.089 | 0.913 | -0.113 |" in markdown
    # CT spleen, V4: measured 0.730, paper 0.859
    assert "| Spleen | V4 | 6 | 0.730 ± 0.089 | 0.859 | -0.129 |" in markdown
    # msbn has no paper numbers
    assert "| Liver | MSBN | 6 | 0.600 ± 0.089 | - | - |" in markdown
    assert "| V4 | 48 | 0.725 ± " in markdown and "| 0.860 | -0.135 |" in markdown
    table2 = pd.read_csv(written["table2_ct"])
    cell = table2[(table2["organ"] == "right_kidney") & (table2["scheme"] == "individual")]
    assert cell["paper"].item() == pytest.approx(0.820)
    assert cell["difference"].item() == pytest.approx(0.84 - 0.820)
    surface = pd.read_csv(written["table_surface"])
    cell = surface[(surface["modality"] == "mr") & (surface["organ"] == "liver")
                   & (surface["scheme"] == "v4")].iloc[0]
    assert cell["hd95_mean"] == pytest.approx(2.0)
    assert cell["assd_mean"] == pytest.approx(0.5) and cell["missed"] == 0
    assert "Surface distances" in markdown


def test_missing_columns_are_named() -> None:
    with pytest.raises(ValueError, match="dice"):
        tables.organ_table(synthetic_results().drop(columns=["dice"]), "mr")


def test_ablation_table_has_one_row_per_protocol_and_scheme_with_the_change_and_time(
        tmp_path) -> None:
    paper = synthetic_results()
    gaussian = paper.assign(protocol="+gaussian", dice=paper["dice"] + 0.01,
                            segment_s=paper["segment_s"] * 2)
    improved = paper.assign(protocol="improved", dice=paper["dice"] - 0.02)
    results = pd.concat([improved, gaussian, paper], ignore_index=True)  # any order
    table = tables.ablation_table(results)
    assert list(zip(table["protocol"], table["scheme"], strict=True)) == [
        (p, s) for p in ("paper", "+gaussian", "improved") for s in ("individual", "v4", "msbn")]
    row = table[(table["protocol"] == "+gaussian") & (table["scheme"] == "v4")].iloc[0]
    assert row["mr_spleen"] == pytest.approx(0.72)  # 0.70 + 0.01 (organ) + 0.01 (gaussian)
    assert row["ct_liver"] == pytest.approx(0.73)
    assert row["mr_mean"] == pytest.approx(0.725) and row["ct_mean"] == pytest.approx(0.745)
    assert row["both"] == pytest.approx(0.735) and row["difference"] == pytest.approx(0.01)
    assert row["volumes"] == 12  # 2 seeds x 3 subjects x 2 modalities
    assert row["seconds_per_volume"] == pytest.approx(4.0)  # 2 x mean(1, 2, 3)
    improved_row = table[(table["protocol"] == "improved") & (table["scheme"] == "v4")].iloc[0]
    assert improved_row["difference"] == pytest.approx(-0.02)

    written = tables.write_ablation(results, tmp_path, header="# ablation header")
    markdown = written["ablation.md"].read_text()
    assert markdown.startswith("# ablation header")
    assert "| `+gaussian` | V4 | 0.710 | 0.720 |" in markdown and "| +0.010 | 4.00 |" in markdown
    assert len(pd.read_csv(written["ablation"])) == 9
    single = tables.ablation_table_markdown(tables.ablation_table(
        results[results["scheme"] == "v4"]))
    assert "Scheme" not in single and "| `paper` | 0.700 |" in single


def test_ablation_rows_of_a_scheme_average_the_same_runs(caplog) -> None:
    paper = synthetic_results()
    gaussian = paper.assign(protocol="+gaussian", dice=paper["dice"] + 0.01)
    # One run (v4, seed 1) has no +gaussian scores: it is left out of every v4 row.
    partial = gaussian[~((gaussian["scheme"] == "v4") & (gaussian["seed"] == 1))]
    shifted = paper.assign(dice=np.where((paper["scheme"] == "v4") & (paper["seed"] == 1),
                                         paper["dice"] - 0.5, paper["dice"]))
    with caplog.at_level("WARNING"):
        table = tables.ablation_table(pd.concat([shifted, partial], ignore_index=True))
    v4 = table[table["scheme"] == "v4"].set_index("protocol")
    assert v4.loc["paper", "volumes"] == v4.loc["+gaussian", "volumes"] == 6
    assert v4.loc["+gaussian", "difference"] == pytest.approx(0.01)
    assert "v4/0/1" in caplog.text and "not scored under every protocol" in caplog.text
    individual = table[table["scheme"] == "individual"].set_index("protocol")
    assert individual.loc["paper", "volumes"] == 12  # complete runs all kept
