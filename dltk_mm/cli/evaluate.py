"""``dltk-mm-evaluate``: Dice, HD95 and ASSD per organ of predicted label maps.

Usage (a manifest; predictions named ``<subject_id>.nii.gz`` in the predictions folder)::

    dltk-mm-evaluate --manifest data/manifest.csv --predictions out/predictions \\
        --output_csv out/evaluation.csv

or two folders matched by file name (the label of subject S is ``S.nii.gz`` or another
supported format in --labels, its prediction ``S.nii.gz`` in --predictions)::

    dltk-mm-evaluate --predictions out/predictions --labels data/labels --modality ct \\
        --output_csv out/evaluation.csv

Without --predictions, a manifest must have a ``prediction`` column. Writes one CSV row per
subject and organ and prints the mean +/- std per modality and organ (Valindria et al., WACV 2018,
Tables 1-3 report the mean Dice per organ).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from absl import app, flags

from dltk_mm.errors import ConfigurationError, DltkMmError
from dltk_mm.evaluation.evaluate import (
    evaluate_pairs,
    format_summary_table,
    pairs_from_folders,
    pairs_from_manifest,
    summarise,
)
from dltk_mm.io.labels import PRESETS

FLAGS = flags.FLAGS

flags.DEFINE_string("predictions", None,
                    "Folder of the predictions, named <subject_id>.nii.gz.")
flags.DEFINE_string("labels", None,
                    "Folder of the reference labels, named <subject_id>.nii.gz (or .nii, .mha, "
                    ".mhd, .nrrd); needs --predictions and --modality. Exclusive with --manifest.")
flags.DEFINE_string("manifest", None,
                    "Manifest CSV (subject_id, modality, image, label[, prediction]); "
                    "exclusive with --labels.")
flags.DEFINE_string("modality", None,
                    "With --labels: the modality of all subjects (e.g. ct, mr). With --manifest: "
                    "evaluate only this modality.")
flags.DEFINE_string("output_csv", None,
                    "Where to write the per-subject, per-organ metrics (CSV). Optional.")
flags.DEFINE_string("summary_csv", None,
                    "Where to write the per-modality, per-organ summary (CSV). Optional.")
flags.DEFINE_integer("num_classes", 5, "Number of labels, background included.", lower_bound=2)
flags.DEFINE_bool("overwrite", False, "Overwrite existing output files.")
flags.DEFINE_enum("label_preset", "identity", sorted(PRESETS),
                  "How the reference labels' ids map to the project map (0 background, 1 liver, "
                  "2 spleen, 3 right kidney, 4 left kidney); a manifest's label_preset column "
                  "overrides it per row. Predictions are always in the project map.")
flags.DEFINE_bool("allow_unknown_labels", False,
                  "Map reference label ids the preset does not know to background instead of "
                  "failing.")


def _check_output(path: str | None, overwrite: bool) -> Path | None:
    if path is None:
        return None
    output = Path(path).expanduser()
    if output.exists() and not overwrite:
        raise ConfigurationError(
            f"{output} already exists; pass --overwrite to replace it or choose another path"
        )
    if output.is_dir():
        raise ConfigurationError(f"{output} is a folder; give a CSV file path")
    return output


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    frame.to_csv(temporary, index=False)
    os.replace(temporary, path)


def _print_progress(done: int, total: int, rows: pd.DataFrame) -> None:
    first = rows.iloc[0]
    dice = ", ".join(f"{row.organ} {row.dice:.3f}" for row in rows.itertuples(index=False))
    print(f"[{done}/{total}] {first.subject_id} ({first.modality}): Dice {dice}", flush=True)


def evaluate_command(
    predictions: str | None,
    labels: str | None,
    manifest: str | None,
    modality: str | None,
    output_csv: str | None,
    summary_csv: str | None = None,
    num_classes: int = 5,
    overwrite: bool = False,
    label_preset: str = "identity",
    allow_unknown_labels: bool = False,
) -> pd.DataFrame:
    """Runs the evaluation as the command line does (printing progress and the summary).

    Args:
        predictions: Predictions folder (``<subject_id>.nii.gz``), or None to use the manifest's
            ``prediction`` column.
        labels: Labels folder (folder mode), exclusive with ``manifest``.
        manifest: Manifest CSV (manifest mode).
        modality: Modality of the folder's subjects, or the manifest rows to keep.
        output_csv: Per-subject CSV to write, or None.
        summary_csv: Summary CSV to write, or None.
        num_classes: Number of labels, background included.
        overwrite: Replace existing output files.
        label_preset: Label preset of the reference labels (a manifest row's column wins).
        allow_unknown_labels: Map unknown reference ids to background instead of failing.

    Returns:
        The per-subject, per-organ metrics.

    Raises:
        DltkMmError: On bad options or input data (with a message naming the fix).
    """
    if manifest is not None and labels is not None:
        raise ConfigurationError("give either --manifest or --labels, not both")
    if manifest is None and labels is None:
        raise ConfigurationError(
            "give the reference labels: --manifest CSV, or --labels folder with --predictions "
            "and --modality"
        )
    outputs = [_check_output(path, overwrite) for path in (output_csv, summary_csv)]
    if manifest is not None:
        pairs = pairs_from_manifest(manifest, predictions_dir=predictions, modality=modality,
                                    label_preset=label_preset)
    else:
        if predictions is None:
            raise ConfigurationError("--labels needs --predictions (the predictions folder)")
        if not modality:
            raise ConfigurationError(
                "--labels needs --modality (the modality of these subjects, e.g. ct or mr)"
            )
        pairs = pairs_from_folders(predictions, labels, modality)
    print(f"evaluating {len(pairs)} prediction(s)", flush=True)
    results = evaluate_pairs(pairs, num_classes=num_classes, progress=_print_progress,
                             label_preset=label_preset, allow_unknown_labels=allow_unknown_labels)
    summary = summarise(results)
    for frame, path in zip((results, summary), outputs, strict=True):
        if path is not None:
            _write_csv(frame, path)
            print(f"wrote {path}", flush=True)
    print(format_summary_table(summary), flush=True)
    return results


def main(argv: Sequence[str]) -> int:
    """absl entry point."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        evaluate_command(
            predictions=FLAGS.predictions,
            labels=FLAGS.labels,
            manifest=FLAGS.manifest,
            modality=FLAGS.modality,
            output_csv=FLAGS.output_csv,
            summary_csv=FLAGS.summary_csv,
            num_classes=FLAGS.num_classes,
            overwrite=FLAGS.overwrite,
            label_preset=FLAGS.label_preset,
            allow_unknown_labels=FLAGS.allow_unknown_labels,
        )
    except DltkMmError as error:
        print(f"dltk-mm-evaluate: error: {error}", file=sys.stderr, flush=True)
        return 1
    return 0


def run() -> None:
    """Console-script entry point (``dltk-mm-evaluate``)."""
    app.run(main)


if __name__ == "__main__":
    run()
