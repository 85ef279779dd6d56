"""Tables 1-3 of Valindria et al. (WACV 2018) from the benchmark's per-run results.

Input: the per-subject, per-organ results of every run (one row per run, held-out subject and
organ: ``scheme, fold, seed, subject_id, modality, organ, dice, hd95_mm, assd_mm``), as written by
:mod:`dltk_mm.benchmark.execute` into ``runs/<scheme>/fold<k>/seed<s>/evaluation.csv``.

* Table 1 (MR) and Table 2 (CT): per organ and scheme, the mean and standard deviation of the Dice
  over all test subjects of all folds and repetitions (the paper's averaging), the paper's value
  and the difference (measured - paper).
* Table 3: per scheme, the mean Dice over the four organs with MR and CT averaged (the mean of the
  eight per-organ means, the paper's definition), the standard deviation over all subject x organ
  values, and the paper's value. The paper gives means only, so only means can be compared.
* A supplementary table of the surface distances (HD95, ASSD in mm; no paper numbers).

These take the results of one evaluation protocol (the ``protocol`` column,
:mod:`dltk_mm.benchmark.protocols`). Schemes without paper numbers (``msbn``) show ``-`` in the
paper and difference columns.

* The ablation table (:func:`ablation_table`): one row per protocol and scheme, the mean Dice per
  organ and modality, their means (MR, CT, both: Table 3's definition), the change of ``both``
  from the ``paper`` protocol, and the mean segmentation time per volume.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from absl import logging

from dltk_mm.benchmark.paper_results import (
    ORGAN_TITLES,
    SCHEME_TITLES,
    TABLE_NUMBER,
    paper_dice,
    paper_overall,
)
from dltk_mm.benchmark.protocols import PAPER, protocol_rank
from dltk_mm.core.label_map import NUM_CLASSES, organ_names
from dltk_mm.evaluation import RESULT_COLUMNS
from dltk_mm.io.files import atomic_write, atomic_write_text

#: What identifies a run in the per-run results: its scheme, held-out fold and seed.
RUN_KEYS: tuple[str, ...] = ("scheme", "fold", "seed")

#: Columns of the per-run result files: the run, the evaluation protocol
#: (:mod:`dltk_mm.benchmark.protocols`), the per-subject evaluation columns of
#: :data:`dltk_mm.evaluation.RESULT_COLUMNS` without its file names (the prediction lives in the
#: run folder), then the volume's segmentation time in seconds.
RUN_RESULT_COLUMNS: tuple[str, ...] = (
    *RUN_KEYS, "protocol", *(c for c in RESULT_COLUMNS if c not in ("prediction", "label")),
    "segment_s",
)

#: Name of the row holding the mean over organs in Tables 1 and 2.
MEAN_ROW = "mean"

MODALITY_TITLES: dict[str, str] = {"mr": "MR", "ct": "CT"}


def scheme_order(schemes: Sequence[str]) -> list[str]:
    """Schemes in the paper's column order, unknown ones (e.g. msbn) after, alphabetically."""
    known = [s for s in SCHEME_TITLES if s in set(schemes)]
    return known + sorted(set(schemes) - set(known))


def _title(scheme: str) -> str:
    return SCHEME_TITLES.get(scheme, scheme)


def _finite(values: pd.Series) -> np.ndarray:
    array = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    return array[np.isfinite(array)]


def _mean_std(values: pd.Series) -> tuple[float, float, int]:
    finite = _finite(values)
    if finite.size == 0:
        return math.nan, math.nan, 0
    std = float(np.std(finite, ddof=1)) if finite.size > 1 else 0.0
    return float(np.mean(finite)), std, int(finite.size)


def check_results(results: pd.DataFrame) -> pd.DataFrame:
    """Checks the columns of a results frame and normalises their types.

    Raises:
        ValueError: naming the missing columns.
    """
    missing = [c for c in RUN_RESULT_COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(
            f"results lack the column(s) {missing}; expected {list(RUN_RESULT_COLUMNS)}")
    frame = results.copy()
    for column in ("scheme", "protocol", "modality", "organ", "subject_id"):
        frame[column] = frame[column].astype(str)
    for column in ("dice", "hd95_mm", "assd_mm", "segment_s"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def organ_table(results: pd.DataFrame, modality: str) -> pd.DataFrame:
    """Table 1 (``modality="mr"``) or Table 2 (``"ct"``) in long form.

    Args:
        results: per-run results (see :data:`RUN_RESULT_COLUMNS`).
        modality: ``"mr"`` or ``"ct"`` (other modalities get a table without paper numbers).

    Returns:
        One row per organ (paper order, then a ``mean`` row: the mean of the organ means) and
        scheme (paper order) with columns ``modality, organ, scheme, n, measured_mean,
        measured_std, paper, difference`` (NaN where the paper has no number).
    """
    frame = check_results(results)
    frame = frame[frame["modality"] == modality]
    rows = []
    schemes = scheme_order(frame["scheme"].unique())
    for organ in organ_names(NUM_CLASSES):
        for scheme in schemes:
            values = frame[(frame["organ"] == organ) & (frame["scheme"] == scheme)]["dice"]
            mean, std, n = _mean_std(values)
            paper = paper_dice(modality, organ, scheme)
            rows.append({"modality": modality, "organ": organ, "scheme": scheme, "n": n,
                         "measured_mean": mean, "measured_std": std, "paper": paper,
                         "difference": mean - paper})
    for scheme in schemes:
        organ_rows = [r for r in rows if r["scheme"] == scheme]
        means = [r["measured_mean"] for r in organ_rows]
        papers = [r["paper"] for r in organ_rows]
        mean = float(np.nanmean(means)) if np.isfinite(means).any() else math.nan
        paper = float(np.mean(papers)) if np.isfinite(papers).all() else math.nan
        values = frame[frame["scheme"] == scheme]["dice"]
        _, std, n = _mean_std(values)
        rows.append({"modality": modality, "organ": MEAN_ROW, "scheme": scheme, "n": n,
                     "measured_mean": mean, "measured_std": std, "paper": paper,
                     "difference": mean - paper})
    return pd.DataFrame(rows, columns=["modality", "organ", "scheme", "n", "measured_mean",
                                       "measured_std", "paper", "difference"])


def overall_table(results: pd.DataFrame) -> pd.DataFrame:
    """Table 3: per scheme, the mean Dice over all organs with MR and CT averaged.

    The mean is the mean of the per-(modality, organ) means (the paper's definition, so that both
    modalities weigh the same); ``measured_std`` is the standard deviation of all subject x organ
    Dice values of the scheme; ``mr_mean`` and ``ct_mean`` are the per-modality means over organs.

    Returns:
        One row per scheme with columns ``scheme, n, measured_mean, measured_std, mr_mean,
        ct_mean, paper, difference``.
    """
    frame = check_results(results)
    rows = []
    for scheme in scheme_order(frame["scheme"].unique()):
        own = frame[frame["scheme"] == scheme]
        per_modality = {}
        cell_means = []
        for modality in ("mr", "ct"):
            means = []
            for organ in organ_names(NUM_CLASSES):
                mean, _, n = _mean_std(own[(own["modality"] == modality)
                                           & (own["organ"] == organ)]["dice"])
                if n:
                    means.append(mean)
            per_modality[modality] = float(np.mean(means)) if means else math.nan
            cell_means += means
        _, std, n = _mean_std(own["dice"])
        mean = float(np.mean(cell_means)) if cell_means else math.nan
        paper = paper_overall(scheme)
        rows.append({"scheme": scheme, "n": n, "measured_mean": mean, "measured_std": std,
                     "mr_mean": per_modality["mr"], "ct_mean": per_modality["ct"],
                     "paper": paper, "difference": mean - paper})
    return pd.DataFrame(rows, columns=["scheme", "n", "measured_mean", "measured_std", "mr_mean",
                                       "ct_mean", "paper", "difference"])


def surface_table(results: pd.DataFrame) -> pd.DataFrame:
    """Supplementary: mean HD95 and ASSD (mm) per modality, organ and scheme (no paper numbers).

    Infinite distances (an organ missing from the prediction) are left out of the means and
    counted in ``missed``.

    Returns:
        Columns ``modality, organ, scheme, n, hd95_mean, hd95_std, assd_mean, assd_std, missed``.
    """
    frame = check_results(results)
    rows = []
    schemes = scheme_order(frame["scheme"].unique())
    for modality in sorted(frame["modality"].unique(), key=lambda m: (m != "mr", m)):
        for organ in organ_names(NUM_CLASSES):
            for scheme in schemes:
                cell = frame[(frame["modality"] == modality) & (frame["organ"] == organ)
                             & (frame["scheme"] == scheme)]
                hd_mean, hd_std, n = _mean_std(cell["hd95_mm"])
                as_mean, as_std, _ = _mean_std(cell["assd_mm"])
                missed = int(np.isinf(pd.to_numeric(cell["hd95_mm"], errors="coerce")).sum())
                rows.append({"modality": modality, "organ": organ, "scheme": scheme, "n": n,
                             "hd95_mean": hd_mean, "hd95_std": hd_std, "assd_mean": as_mean,
                             "assd_std": as_std, "missed": missed})
    return pd.DataFrame(rows, columns=["modality", "organ", "scheme", "n", "hd95_mean",
                                       "hd95_std", "assd_mean", "assd_std", "missed"])


def _runs_with_every_protocol(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of the runs scored under every protocol their scheme has."""
    per_run = frame.groupby(list(RUN_KEYS))["protocol"].agg(frozenset)
    wanted = frame.groupby("scheme")["protocol"].agg(frozenset)
    incomplete = [run for run, protocols in per_run.items() if protocols != wanted[run[0]]]
    if incomplete:
        logging.warning("ablation: left out %d run(s) not scored under every protocol: %s",
                        len(incomplete), ", ".join("/".join(map(str, run)) for run in incomplete))
    keys = frame[list(RUN_KEYS)].apply(tuple, axis=1)
    return frame[~keys.isin(incomplete)]


def ablation_table(results: pd.DataFrame) -> pd.DataFrame:
    """The ablation: per protocol (in :data:`~dltk_mm.benchmark.protocols.PROTOCOL_ORDER`) and
    scheme, the mean Dice of each (modality, organ) over all held-out subjects, folds and seeds.

    Returns:
        Columns ``protocol, scheme, volumes, mr_<organ>..., ct_<organ>..., mr_mean, ct_mean,
        both, difference, seconds_per_volume``: ``both`` is the mean of the eight (modality,
        organ) means (:func:`overall_table`), ``difference`` its change from the ``paper``
        protocol of the same scheme (NaN without it), ``seconds_per_volume`` the mean
        segmentation time of a held-out volume.

    Only the runs scored under every protocol of their scheme count, so that each row of a
    scheme averages the same runs (a run without some protocol is left out, with a warning).
    """
    frame = _runs_with_every_protocol(check_results(results))
    organs = organ_names(NUM_CLASSES)
    rows = []
    for protocol in sorted(frame["protocol"].unique(), key=protocol_rank):
        own = frame[frame["protocol"] == protocol]
        overall = overall_table(own).set_index("scheme")
        for scheme in scheme_order(own["scheme"].unique()):
            cells = own[own["scheme"] == scheme]
            row: dict[str, object] = {"protocol": protocol, "scheme": scheme}
            volumes = cells.drop_duplicates([*RUN_KEYS, "modality", "subject_id"])
            row["volumes"] = len(volumes)
            for modality in ("mr", "ct"):
                for organ in organs:
                    row[f"{modality}_{organ}"] = _mean_std(
                        cells[(cells["modality"] == modality) & (cells["organ"] == organ)]
                        ["dice"])[0]
            row.update(mr_mean=overall.loc[scheme, "mr_mean"],
                       ct_mean=overall.loc[scheme, "ct_mean"],
                       both=overall.loc[scheme, "measured_mean"])
            row["seconds_per_volume"] = _mean_std(volumes["segment_s"])[0]
            rows.append(row)
    table = pd.DataFrame(rows, columns=[
        "protocol", "scheme", "volumes", *(f"{m}_{o}" for m in ("mr", "ct") for o in organs),
        "mr_mean", "ct_mean", "both", "seconds_per_volume"])
    paper = table[table["protocol"] == PAPER].set_index("scheme")["both"]
    table.insert(table.columns.get_loc("both") + 1, "difference",
                 table["both"] - table["scheme"].map(paper).astype(float))
    return table


# ---------------------------------------------------------------------------------------------
# Markdown


def _number(value: float, digits: int = 3) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _signed(value: float, digits: int = 3) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:+.{digits}f}"


def _mean_std_text(mean: float, std: float, digits: int = 3) -> str:
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if math.isfinite(std) else f"{mean:.{digits}f}"


def _markdown(headers: Sequence[str], rows: Sequence[Sequence[str]],
              align: Sequence[str] | None = None) -> str:
    align = align or ["l"] + ["r"] * (len(headers) - 1)
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def organ_table_markdown(table: pd.DataFrame, modality: str) -> str:
    """Markdown of :func:`organ_table`: the measured matrix (the paper's layout) then, per organ
    and scheme, measured / paper / difference."""
    number = TABLE_NUMBER.get(modality)
    name = MODALITY_TITLES.get(modality, modality.upper())
    heading = f"Table {number} ({name})" if number else f"Table ({name})"
    schemes = scheme_order(table["scheme"].unique())
    organs = [*organ_names(NUM_CLASSES), MEAN_ROW]

    def cell(organ: str, scheme: str) -> pd.Series:
        return table[(table["organ"] == organ) & (table["scheme"] == scheme)].iloc[0]

    matrix_rows = []
    for organ in organs:
        row = [ORGAN_TITLES.get(organ, "Mean")]
        for scheme in schemes:
            c = cell(organ, scheme)
            paper = "-" if not math.isfinite(c["paper"]) else f"{c['paper']:.3f}"
            row.append(f"{_number(c['measured_mean'])} ({paper})")
        matrix_rows.append(row)
    detail_rows = []
    for organ in organs:
        for scheme in schemes:
            c = cell(organ, scheme)
            detail_rows.append([ORGAN_TITLES.get(organ, "Mean"), _title(scheme), str(int(c["n"])),
                                _mean_std_text(c["measured_mean"], c["measured_std"]),
                                _number(c["paper"]), _signed(c["difference"])])
    return "\n".join([
        f"## {heading}: Dice per organ, {name} test subjects",
        "",
        "Measured mean Dice over all held-out subjects of all folds and seeds; the paper's value "
        "in parentheses (`-`: not in the paper).",
        "",
        _markdown(["Organ", *[_title(s) for s in schemes]], matrix_rows),
        "",
        "Measured (mean ± standard deviation over subjects x seeds), the paper's mean and the "
        "difference measured - paper (the paper reports means only). `n`: subject x seed values.",
        "",
        _markdown(["Organ", "Scheme", "n", "Measured", "Paper", "Difference"], detail_rows,
                  ["l", "l", "r", "r", "r", "r"]),
        "",
    ])


def overall_table_markdown(table: pd.DataFrame) -> str:
    """Markdown of :func:`overall_table`."""
    rows = [[_title(r["scheme"]), str(int(r["n"])), _mean_std_text(r["measured_mean"],
                                                                     r["measured_std"]),
             _number(r["mr_mean"]), _number(r["ct_mean"]), _number(r["paper"]),
             _signed(r["difference"])]
            for _, r in table.iterrows()]
    return "\n".join([
        "## Table 3: mean Dice over all organs, MR and CT averaged",
        "",
        "Measured: the mean of the eight (modality, organ) means ± the standard deviation of all "
        "subject x organ values; the paper gives only the mean (no standard deviation), so only "
        "the means are compared. `n`: subject x organ x seed values.",
        "",
        _markdown(["Scheme", "n", "Measured", "MR", "CT", "Paper", "Difference"], rows),
        "",
    ])


def surface_table_markdown(table: pd.DataFrame) -> str:
    """Markdown of :func:`surface_table`."""
    rows = [[MODALITY_TITLES.get(r["modality"], r["modality"]), ORGAN_TITLES[r["organ"]],
             _title(r["scheme"]), str(int(r["n"])),
             _mean_std_text(r["hd95_mean"], r["hd95_std"], 1),
             _mean_std_text(r["assd_mean"], r["assd_std"], 2), str(int(r["missed"]))]
            for _, r in table.iterrows()]
    return "\n".join([
        "## Surface distances (not in the paper)",
        "",
        "HD95 and ASSD in mm in the label's own geometry (its grid and spacing; mean ± standard "
        "deviation); `missed`: "
        "subjects where the organ was not predicted at all (infinite distance, left out of the "
        "means).",
        "",
        _markdown(["Modality", "Organ", "Scheme", "n", "HD95 (mm)", "ASSD (mm)", "Missed"], rows,
                  ["l", "l", "l", "r", "r", "r", "r"]),
        "",
    ])


def ablation_table_markdown(table: pd.DataFrame) -> str:
    """Markdown of :func:`ablation_table` (a scheme column only when there are several)."""
    organs = organ_names(NUM_CLASSES)
    several = table["scheme"].nunique() > 1
    headers = ["Protocol", *(["Scheme"] if several else []),
               *(f"{MODALITY_TITLES[m]} {ORGAN_TITLES.get(o, o)}" for m in ("mr", "ct")
                 for o in organs), "MR", "CT", "Both", "Change", "s / volume"]
    rows = []
    for _, r in table.iterrows():
        rows.append([f"`{r['protocol']}`", *([_title(r["scheme"])] if several else []),
                     *(_number(r[f"{m}_{o}"]) for m in ("mr", "ct") for o in organs),
                     _number(r["mr_mean"]), _number(r["ct_mean"]), _number(r["both"]),
                     _signed(r["difference"]), _number(r["seconds_per_volume"], 2)])
    align = ["l", *(["l"] if several else []), *["r"] * (len(headers) - 1 - several)]
    return "\n".join([
        "## Ablation: the paper's evaluation protocol plus one inference addition each",
        "",
        "Mean Dice over all held-out subjects, folds and seeds, scored in the label's own "
        "geometry. `paper`: the paper's protocol (uniform blending, no mirroring, no "
        "post-processing); `+gaussian`: Gaussian blending; `+mirror`: test-time mirroring of the "
        "three axes, right/left kidney channels swapped after left-right flips; "
        "`+mirror_no_swap`: the same without the swap; `+mirror_no_lr`: mirroring without the "
        "left-right flip; `+largest_component`: the largest connected component per organ; "
        "`all`: Gaussian blending, mirroring and the largest component; `improved`: the runs' "
        "own evaluation. Both: the mean of the eight (modality, organ) means (Table 3); Change: "
        "Both minus the `paper` protocol's; s / volume: mean segmentation time of a held-out "
        "volume.",
        "",
        _markdown(headers, rows, align),
        "",
    ])


def write_ablation(results: pd.DataFrame, out_dir: str | os.PathLike,
                   header: str = "") -> dict[str, Path]:
    """Writes :func:`ablation_table` as ``ablation.csv`` and ``ablation.md`` (after ``header``).

    Returns:
        Name -> path of the files written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = ablation_table(results)
    sections = [header] if header else []
    sections.append(ablation_table_markdown(table))
    return {"ablation": _write_csv(table, out_dir / "ablation.csv"),
            "ablation.md": atomic_write_text(out_dir / "ablation.md", "\n".join(sections))}


def write_tables(results: pd.DataFrame, out_dir: str | os.PathLike,
                 header: str = "") -> dict[str, Path]:
    """Writes Tables 1-3 and the surface-distance table of one protocol's results as CSV and
    Markdown.

    Files: ``table1_mr.csv``, ``table2_ct.csv``, ``table3_overall.csv``, ``table_surface.csv``
    and ``tables.md`` (all tables, after ``header``).

    Returns:
        Name -> path of every file written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = check_results(results)
    written: dict[str, Path] = {}
    sections = [header] if header else []
    for modality in ("mr", "ct"):
        table = organ_table(frame, modality)
        name = f"table{TABLE_NUMBER[modality]}_{modality}"
        written[name] = _write_csv(table, out_dir / f"{name}.csv")
        sections.append(organ_table_markdown(table, modality))
    overall = overall_table(frame)
    written["table3_overall"] = _write_csv(overall, out_dir / "table3_overall.csv")
    sections.append(overall_table_markdown(overall))
    surface = surface_table(frame)
    written["table_surface"] = _write_csv(surface, out_dir / "table_surface.csv")
    sections.append(surface_table_markdown(surface))
    written["tables.md"] = atomic_write_text(out_dir / "tables.md", "\n".join(sections))
    return written


def _write_csv(table: pd.DataFrame, path: Path) -> Path:
    return atomic_write(path, lambda target: table.to_csv(target, index=False,
                                                          float_format="%.6g"))
