"""Evaluation of predicted label maps against reference labels: Dice, HD95 and ASSD per organ.

The paper's Tables 1-3 (docs/paper.md, section 7) report the Dice coefficient per organ, averaged
over all test cases; :func:`summarise` gives that mean (and the standard deviation) per modality
and organ, plus the surface distances of :mod:`dltk_mm.core.metrics`.

Prediction file naming (shared with the predict command): the prediction of subject ``S`` is
``<predictions folder>/S.nii.gz`` (:func:`prediction_path`), written on the grid of the subject's
input image, which is also the grid of its label. Subject ids must therefore be unique within one
predictions folder (the manifests of dltk_mm use distinct ids for CT and MR subjects).

Pairs of (prediction, label) come from a manifest CSV (:func:`pairs_from_manifest`) or from two
folders matched by file name (:func:`pairs_from_folders`). Reference labels in a data set's own
ids (BTCV, AMOS, CHAOS, TotalSegmentator) are mapped to the project map with a label preset
(:mod:`dltk_mm.io.labels`): one for all pairs, or a manifest row's ``label_preset`` column.
Predictions are always in the project map (the predict command writes it).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from absl import logging

from dltk_mm.core.label_map import organ_names
from dltk_mm.core.metrics import organ_metrics
from dltk_mm.errors import ConfigurationError, InputDataError
from dltk_mm.io.labels import NUM_CLASSES, get_preset, resolve_preset_reference
from dltk_mm.io.manifest import load_manifest, row_label_preset
from dltk_mm.io.readers import read_volume

#: File name ending of a prediction (``<subject_id>.nii.gz``).
PREDICTION_SUFFIX = ".nii.gz"
#: Label file endings recognised by :func:`pairs_from_folders` (longest first).
LABEL_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")
#: Name of the summary row that pools all organs of one modality.
ALL_ORGANS = "all organs"
#: Columns of the per-subject table returned by :func:`evaluate_pairs`.
RESULT_COLUMNS = (
    "subject_id", "modality", "organ", "dice", "hd95_mm", "assd_mm", "prediction", "label",
)

ProgressFn = Callable[[int, int, pd.DataFrame], None]


class EvaluationPair(NamedTuple):
    """One volume to evaluate: subject, modality, prediction file, reference label file, the
    label preset of the reference file (``None``: the one given to :func:`evaluate_pairs`) and
    the subject's image (from a manifest; ``None`` otherwise), which is never written to."""

    subject_id: str
    modality: str
    prediction: Path
    label: Path
    label_preset: str | None = None
    image: Path | None = None


def prediction_path(predictions_dir: str | os.PathLike, subject_id: str) -> Path:
    """Where the prediction of ``subject_id`` lives: ``<predictions_dir>/<subject_id>.nii.gz``.

    Args:
        predictions_dir: The predictions folder.
        subject_id: The subject id (as in the manifest).

    Returns:
        The prediction's path (not checked for existence).
    """
    return Path(predictions_dir) / f"{subject_id}{PREDICTION_SUFFIX}"


def input_files(pairs: Iterable[EvaluationPair]) -> set[Path]:
    """Every file an evaluation reads (predictions, labels and the manifest's images), resolved.

    The command line refuses an output path among them (nothing a user gave is overwritten).
    """
    files = set()
    for pair in pairs:
        for path in (pair.prediction, pair.label, pair.image):
            if path is not None:
                files.add(Path(path).expanduser().resolve())
    return files


def _refuse_shared_predictions(pairs: Sequence[EvaluationPair], lines: Sequence[int],
                               csv_path: Path) -> None:
    """Two manifest rows that would read one prediction file (a subject id in CT and MR)."""
    first: dict[Path, int] = {}
    problems = []
    for index, pair in enumerate(pairs):
        key = pair.prediction.expanduser().resolve()
        if key in first:
            other = pairs[first[key]]
            problems.append(
                f"line {lines[first[key]]} (subject {other.subject_id}, {other.modality}) and "
                f"line {lines[index]} (subject {pair.subject_id}, {pair.modality}) both read "
                f"prediction {pair.prediction}")
        else:
            first[key] = index
    if problems:
        raise InputDataError(
            f"manifest {csv_path}: " + "; ".join(problems) + "; each row needs its own "
            f"prediction: in a predictions folder they are named <subject_id>{PREDICTION_SUFFIX},"
            " so give each row a unique subject id (as dltk-mm-predict requires), or evaluate "
            "one modality at a time (--modality) with its own predictions folder")


def pairs_from_manifest(
    manifest_csv: str | os.PathLike,
    predictions_dir: str | os.PathLike | None = None,
    modality: str | None = None,
    label_preset: str = "identity",
) -> list[EvaluationPair]:
    """Evaluation pairs from a manifest CSV.

    The manifest is the one of :func:`dltk_mm.io.manifest.load_manifest` (columns subject_id,
    modality, image, label; paths relative to the CSV's folder). The prediction of each row is
    ``<predictions_dir>/<subject_id>.nii.gz`` when ``predictions_dir`` is given, else the row's
    ``prediction`` column. Rows without a label are skipped (with a warning).

    Args:
        manifest_csv: The manifest file.
        predictions_dir: Folder of the predictions; None to use the ``prediction`` column.
        modality: Keep only the rows of this modality (lower-case); None keeps all.
        label_preset: The label preset of rows whose ``label_preset`` column is empty or absent.

    Returns:
        The pairs, in manifest order.

    Raises:
        InputDataError: If the manifest is invalid, lacks a ``prediction`` column when no folder
            is given, has no labelled row (of the requested modality), or two rows would read
            one prediction file (the same subject id in a CT and an MR row), naming the lines.
    """
    frame = load_manifest(manifest_csv, check_files=False, check_grids=False)
    csv_path = Path(frame.attrs["manifest_path"])
    if predictions_dir is None and "prediction" not in frame.columns:
        raise InputDataError(
            f"manifest {csv_path}: has no 'prediction' column; add one (paths relative to the "
            "CSV's folder) or give the predictions folder (--predictions), where the prediction "
            f"of subject S is S{PREDICTION_SUFFIX}"
        )
    if modality is not None:
        modality = modality.strip().lower()
        present = sorted(set(frame["modality"]))
        frame = frame[frame["modality"] == modality]
        if frame.empty:
            raise InputDataError(
                f"manifest {csv_path}: no row has modality '{modality}' (it lists {present}); "
                "choose one of those modalities"
            )
    pairs: list[EvaluationPair] = []
    lines: list[int] = []
    problems: list[str] = []
    for position, record in zip(frame.index, frame.to_dict("records"), strict=True):
        line = int(position) + 2
        subject = record["subject_id"]
        if record["label"] is None:
            logging.warning("manifest %s line %d (subject %s): no label, not evaluated",
                            csv_path, line, subject)
            continue
        if predictions_dir is not None:
            prediction = prediction_path(predictions_dir, subject)
        else:
            text = str(record["prediction"]).strip()
            if not text:
                problems.append(
                    f"line {line} (subject {subject}): empty prediction path; fill the "
                    "'prediction' column or give the predictions folder"
                )
                continue
            prediction = Path(os.path.expanduser(text))
            if not prediction.is_absolute():
                prediction = csv_path.parent / prediction
        image = Path(record["image"]) if str(record["image"]).strip() else None
        pairs.append(EvaluationPair(subject, record["modality"], prediction, Path(record["label"]),
                                    row_label_preset(record, label_preset), image))
        lines.append(line)
    if problems:
        raise InputDataError(f"manifest {csv_path}: " + "; ".join(problems))
    _refuse_shared_predictions(pairs, lines, csv_path)
    if not pairs:
        raise InputDataError(
            f"manifest {csv_path}: no row with a label"
            + (f" and modality '{modality}'" if modality else "")
            + "; evaluation needs the reference label file of every subject (label column)"
        )
    return pairs


def _split_suffix(name: str) -> tuple[str, str] | None:
    for suffix in LABEL_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], suffix
    return None


def pairs_from_folders(
    predictions_dir: str | os.PathLike, labels_dir: str | os.PathLike, modality: str
) -> list[EvaluationPair]:
    """Evaluation pairs from a predictions folder and a labels folder matched by subject id.

    Every label file ``<labels_dir>/S.<ext>`` (``ext`` one of :data:`LABEL_SUFFIXES`) is paired
    with ``<predictions_dir>/S.nii.gz``. Predictions without a label are ignored (with a warning);
    a missing prediction is reported by :func:`evaluate_pairs`.

    Args:
        predictions_dir: Folder of the predictions.
        labels_dir: Folder of the reference labels.
        modality: Modality of all these subjects (lower-case, e.g. ``"ct"``).

    Returns:
        The pairs, sorted by subject id.

    Raises:
        InputDataError: If a folder does not exist or the labels folder holds no label file.
    """
    labels_dir = Path(labels_dir)
    predictions_dir = Path(predictions_dir)
    for kind, folder in (("labels", labels_dir), ("predictions", predictions_dir)):
        if not folder.is_dir():
            raise InputDataError(f"{kind} folder {folder} not found; check the path")
    modality = modality.strip().lower()
    if not modality:
        raise ConfigurationError("the modality of the subjects is empty; use e.g. 'ct' or 'mr'")
    pairs: list[EvaluationPair] = []
    for label in sorted(labels_dir.iterdir()):
        split = _split_suffix(label.name) if label.is_file() else None
        if split is None or label.name.startswith("."):
            continue
        subject = split[0]
        pairs.append(
            EvaluationPair(subject, modality, prediction_path(predictions_dir, subject), label)
        )
    if not pairs:
        raise InputDataError(
            f"labels folder {labels_dir}: holds no label file ({', '.join(LABEL_SUFFIXES)}); "
            "put one label file per subject there, named <subject_id>.nii.gz"
        )
    subjects = {pair.subject_id for pair in pairs}
    extra = sorted(
        p.name for p in predictions_dir.glob(f"*{PREDICTION_SUFFIX}")
        if p.name[: -len(PREDICTION_SUFFIX)] not in subjects
    )
    if extra:
        logging.warning("predictions without a label in %s, not evaluated: %s",
                        labels_dir, ", ".join(extra))
    return pairs


def _as_label_map(array: np.ndarray, path: Path, num_classes: int, what: str,
                  allow_unknown: bool = False) -> np.ndarray:
    """Checks that a volume holds integer labels in [0, num_classes) and returns it as int16.

    With ``allow_unknown`` values outside the range become background (with a warning naming the
    file and the values) instead of failing.
    """
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(array == np.round(array)):
            raise InputDataError(
                f"{path}: the {what} holds non-integer values (or NaN); it must be a label map "
                "(integers 0 background, 1 liver, 2 spleen, 3 right kidney, 4 left kidney)"
            )
    elif not np.issubdtype(array.dtype, np.integer) and array.dtype != bool:
        raise InputDataError(f"{path}: the {what} has voxel type {array.dtype}; write integers")
    values = np.unique(array)
    bad = values[(values < 0) | (values >= num_classes)]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:10])
        if not allow_unknown:
            raise InputDataError(
                f"{path}: the {what} holds label value(s) {shown} outside 0..{num_classes - 1}; "
                "map the labels to 0 background, 1 liver, 2 spleen, 3 right kidney, 4 left "
                "kidney (see dltk_mm.io.labels), set --num_classes, or allow unknown labels "
                "(--allow_unknown_labels) to count them as background"
            )
        logging.warning("%s: the %s holds label value(s) %s outside 0..%d; counted as background",
                        path, what, shown, num_classes - 1)
        array = np.where((array < 0) | (array >= num_classes), 0, array)
    return array.astype(np.int16, copy=False)


def _as_pairs(pairs: Iterable[Sequence], label_preset: str) -> list[EvaluationPair]:
    """:class:`EvaluationPair` of every tuple, with its label preset filled in (a name in lower
    case, a preset file as an absolute path)."""
    result = []
    for pair in pairs:
        preset = pair[4] if len(pair) > 4 and pair[4] is not None else label_preset
        image = Path(pair[5]) if len(pair) > 5 and pair[5] is not None else None
        result.append(EvaluationPair(str(pair[0]), str(pair[1]).lower(), Path(pair[2]),
                                     Path(pair[3]), resolve_preset_reference(preset, Path.cwd()),
                                     image))
    return result


def _check_presets(pairs: Sequence[EvaluationPair], num_classes: int) -> None:
    for preset in sorted({pair.label_preset for pair in pairs}):
        get_preset(preset)  # unknown names fail before any file is read
        if preset != "identity" and num_classes != NUM_CLASSES:
            raise ConfigurationError(
                f"label preset '{preset}' maps to the {NUM_CLASSES}-label project map; "
                f"num_classes={num_classes} fits only the 'identity' preset"
            )


def _check_files_exist(pairs: Sequence[EvaluationPair]) -> None:
    missing = []
    for pair in pairs:
        for kind, path in (("prediction", pair.prediction), ("label", pair.label)):
            if not path.is_file():
                missing.append(f"subject {pair.subject_id} ({pair.modality}): {kind} {path} "
                               "not found")
    if missing:
        raise InputDataError(
            f"{len(missing)} missing file(s):\n  " + "\n  ".join(missing[:50])
            + f"\nrun the predict command for these subjects (it writes <subject_id>"
            f"{PREDICTION_SUFFIX} into the predictions folder) or fix the paths"
        )


def _evaluate_pair(pair: EvaluationPair, num_classes: int, names: Sequence[str],
                   grid_tolerance: float, allow_unknown_labels: bool) -> pd.DataFrame:
    """The rows of one subject (one per organ)."""
    label = read_volume(pair.label)
    prediction = read_volume(pair.prediction)
    differences = prediction.geometry.grid_differences(label.geometry, grid_tolerance)
    if differences:
        raise InputDataError(
            f"subject {pair.subject_id} ({pair.modality}): prediction {pair.prediction} and "
            f"label {pair.label} lie on different grids (prediction vs label: "
            f"{'; '.join(differences)}); write the prediction on the grid of the subject's "
            "input image (the predict command does) or resample it onto the label's grid "
            "with nearest-neighbour interpolation"
        )
    reference = label.array
    if pair.label_preset != "identity":
        reference = get_preset(pair.label_preset).apply(
            reference, source=str(pair.label), allow_unknown=allow_unknown_labels)
    truth = _as_label_map(reference, pair.label, num_classes, "label",
                          allow_unknown=allow_unknown_labels)
    predicted = _as_label_map(prediction.array, pair.prediction, num_classes, "prediction")
    results = organ_metrics(predicted, truth, label.geometry.spacing, names)
    logging.debug("evaluated %s (%s): %s", pair.subject_id, pair.modality,
                  ", ".join(f"{o} {v['dice']:.3f}" for o, v in results.items()))
    return pd.DataFrame(
        [{"subject_id": pair.subject_id, "modality": pair.modality, "organ": organ, **values,
          "prediction": str(pair.prediction), "label": str(pair.label)}
         for organ, values in results.items()],
        columns=list(RESULT_COLUMNS),
    )


def evaluate_pairs(
    pairs: Iterable[Sequence],
    num_classes: int = 5,
    class_names: Sequence[str] | None = None,
    grid_tolerance: float = 1e-3,
    progress: ProgressFn | None = None,
    label_preset: str = "identity",
    allow_unknown_labels: bool = False,
) -> pd.DataFrame:
    """Dice, HD95 and ASSD of every organ of every (prediction, label) pair.

    Each prediction must lie on its label's grid (size, spacing, origin and direction equal within
    ``grid_tolerance``, see :meth:`dltk_mm.io.geometry.Geometry.grid_differences`): metrics are
    computed voxel-wise in the label's own geometry, with its spacing for the distances in mm.
    All files are checked for existence before any is read.

    Args:
        pairs: ``(subject_id, modality, prediction_path, label_path[, label_preset[, image]])``
            tuples (e.g. :class:`EvaluationPair`); a pair's own label preset (not None) overrides
            ``label_preset``.
        num_classes: Number of labels (0 is the background), 5 in the paper.
        class_names: Names of labels ``0 .. num_classes - 1``; defaults to the project's
            (:mod:`dltk_mm.core.label_map`).
        grid_tolerance: Relative tolerance of the grid comparison.
        progress: Called as ``progress(done, total, rows)`` after each subject, ``rows`` being that
            subject's rows of the result.
        label_preset: How the reference labels' ids map to the project map: a preset name or a
            ``.json``/``.csv`` preset file (see :mod:`dltk_mm.io.labels`; ``"identity"``: already
            in it). Any other preset needs ``num_classes`` = 5.
        allow_unknown_labels: Count reference ids the preset does not know (with ``"identity"``:
            ids outside ``0 .. num_classes - 1``) as background, with a warning, instead of
            failing. Predictions are always checked.

    Returns:
        One row per subject and organ (label order), columns :data:`RESULT_COLUMNS`; NaN Dice and
        distances where an organ is in neither map, Dice 0 and infinite distances where it is in
        exactly one.

    Raises:
        InputDataError: Naming the subject and file(s) for a missing or unreadable file, a
            prediction on another grid than its label, or label values outside the label map.
    """
    if num_classes < 2:
        raise ConfigurationError(f"num_classes must be at least 2, got {num_classes}")
    names = (tuple(class_names) if class_names is not None
             else ("background", *organ_names(num_classes)))
    if len(names) != num_classes:
        raise ConfigurationError(
            f"{len(names)} class names {names} given for num_classes={num_classes}"
        )
    pair_list = _as_pairs(pairs, label_preset)
    _check_presets(pair_list, num_classes)
    if not pair_list:
        raise InputDataError("nothing to evaluate: no (prediction, label) pair was given")
    _check_files_exist(pair_list)
    frames: list[pd.DataFrame] = []
    for done, pair in enumerate(pair_list, start=1):
        rows = _evaluate_pair(pair, num_classes, names, grid_tolerance, allow_unknown_labels)
        frames.append(rows)
        if progress is not None:
            progress(done, len(pair_list), rows)
    return pd.concat(frames, ignore_index=True)


def _stats(values: pd.Series) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1) of the finite values (NaN if there are none)."""
    finite = values[np.isfinite(values.to_numpy(dtype=np.float64))]
    if finite.empty:
        return math.nan, math.nan
    std = float(finite.std(ddof=1)) if len(finite) > 1 else math.nan
    return float(finite.mean()), std


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation of every metric per modality and organ.

    For each modality, one row per organ (in the order of ``results``) and an ``"all organs"``
    row pooling every (subject, organ) value of the modality; with every organ present in every
    subject its mean Dice is the mean of the organ means (the papers' "mean Dice"). Statistics use
    the finite values only: NaN (organ in neither map) and infinite distances (organ in one map
    only) are left out; ``n`` counts the values behind the Dice statistics and ``n_inf`` the
    infinite distances left out of the HD95/ASSD statistics. Standard deviations are sample
    standard deviations (ddof 1; NaN for a single value).

    Args:
        results: The output of :func:`evaluate_pairs`.

    Returns:
        Columns modality, organ, n, dice_mean, dice_std, hd95_mm_mean, hd95_mm_std, assd_mm_mean,
        assd_mm_std, n_inf.
    """
    rows = []
    for modality in dict.fromkeys(results["modality"]):
        subset = results[results["modality"] == modality]
        groups = [(organ, subset[subset["organ"] == organ])
                  for organ in dict.fromkeys(subset["organ"])]
        groups.append((ALL_ORGANS, subset))
        for organ, group in groups:
            row: dict[str, object] = {
                "modality": modality,
                "organ": organ,
                "n": int(np.isfinite(group["dice"].to_numpy(dtype=np.float64)).sum()),
            }
            for metric in ("dice", "hd95_mm", "assd_mm"):
                row[f"{metric}_mean"], row[f"{metric}_std"] = _stats(group[metric])
            row["n_inf"] = int(np.isinf(group["hd95_mm"].to_numpy(dtype=np.float64)).sum())
            rows.append(row)
    return pd.DataFrame(rows, columns=[
        "modality", "organ", "n", "dice_mean", "dice_std", "hd95_mm_mean", "hd95_mm_std",
        "assd_mm_mean", "assd_mm_std", "n_inf",
    ])


def _mean_std(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "-"
    text = f"{mean:.{digits}f}"
    return text + (f" +/- {std:.{digits}f}" if not math.isnan(std) else "")


def format_summary_table(summary: pd.DataFrame) -> str:
    """A plain-text table of :func:`summarise`'s output (mean +/- std), one block per modality.

    Args:
        summary: The output of :func:`summarise`.

    Returns:
        The table, lines joined by newlines (no trailing newline).
    """
    header = ("modality", "organ", "n", "Dice", "HD95 (mm)", "ASSD (mm)", "n_inf")
    body = [
        (
            str(row.modality),
            str(row.organ),
            str(row.n),
            _mean_std(row.dice_mean, row.dice_std, 3),
            _mean_std(row.hd95_mm_mean, row.hd95_mm_std, 2),
            _mean_std(row.assd_mm_mean, row.assd_mm_std, 2),
            str(row.n_inf),
        )
        for row in summary.itertuples(index=False)
    ]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    lines = [line(header), "  ".join("-" * w for w in widths)]
    previous = None
    for cells in body:
        if previous is not None and cells[0] != previous:
            lines.append("")
        lines.append(line(cells))
        previous = cells[0]
    return "\n".join(lines)
