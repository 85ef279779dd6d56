"""``dltk-mm-evaluate``: Dice, HD95 and ASSD per organ of predicted label maps.

Usage (a manifest; predictions named ``<subject_id>.nii.gz`` in the predictions folder)::

    dltk-mm-evaluate --manifest data/manifest.csv --predictions out/predictions \\
        --output_csv out/evaluation.csv

or two folders matched by file name (the label of subject S is ``S.nii.gz`` or another
supported format in --labels, its prediction ``S.nii.gz`` in --predictions)::

    dltk-mm-evaluate --predictions out/predictions --labels data/labels --modality ct \\
        --output_csv out/evaluation.csv

Without --predictions, a manifest must have a ``prediction`` column. Writes one CSV row per
subject and organ and prints the mean +/- std per modality and organ (the paper's Tables 1-3
report the mean Dice per organ: docs/paper.md, section 7). No output path may be one of the
inputs (the manifest, an image, a label or a prediction), even with --overwrite. Exit statuses:
0 done, 2 bad options or input (nothing written), 130/143 interrupted (see
:mod:`dltk_mm.cli._common`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from absl import flags

from dltk_mm.cli._common import handle_errors, run_command
from dltk_mm.errors import ConfigurationError
from dltk_mm.io.labels import PRESETS

if TYPE_CHECKING:
    import pandas as pd

    from dltk_mm.evaluation.evaluate import EvaluationPair

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
                    "Where to write the per-subject, per-organ metrics (CSV). Optional; never "
                    "one of the inputs.")
flags.DEFINE_string("summary_csv", None,
                    "Where to write the per-modality, per-organ summary (CSV). Optional; never "
                    "one of the inputs.")
flags.DEFINE_integer("num_classes", 5, "Number of labels, background included.", lower_bound=2)
flags.DEFINE_bool("overwrite", False,
                  "Replace existing output files (never an input: the manifest, an image, a label "
                  "or a prediction).")
flags.DEFINE_string("label_preset", "identity",
                    f"How the reference labels' ids map to the project map (0 background, 1 "
                    f"liver, 2 spleen, 3 right kidney, 4 left kidney): one of {sorted(PRESETS)} or "
                    "a .json/.csv preset file (docs/datasets.md); a manifest's label_preset column "
                    "overrides it per row. Predictions are always in the project map.")
flags.DEFINE_bool("allow_unknown_labels", False,
                  "Count reference label ids the preset does not know (with the identity preset: "
                  "ids from --num_classes up) as background, with a warning, instead of failing.")


def _same_file(path: Path, inputs: set[Path]) -> bool:
    if path.resolve() in inputs:
        return True
    if not path.exists():
        return False
    stat = path.stat()
    return any(i.exists() and (i.stat().st_dev, i.stat().st_ino) == (stat.st_dev, stat.st_ino)
               for i in inputs)  # hard links


def _check_outputs(paths: dict[str, str | None], inputs: set[Path],
                   overwrite: bool) -> list[Path | None]:
    """The output paths, refused (before anything is read or written) when one is an input,
    both are the same file, one exists without ``overwrite``, or one is a folder."""
    outputs: list[Path | None] = []
    for flag, text in paths.items():
        if text is None:
            outputs.append(None)
            continue
        output = Path(text).expanduser()
        if _same_file(output, inputs):
            raise ConfigurationError(
                f"--{flag}={output} is one of the evaluation's inputs (the manifest, an image, a "
                "label or a prediction); inputs are never overwritten, even with --overwrite: "
                "choose another path")
        if output.is_dir():
            raise ConfigurationError(f"--{flag}={output} is a folder; give a CSV file path")
        if output.exists() and not overwrite:
            raise ConfigurationError(
                f"{output} already exists; pass --overwrite to replace it or choose another path")
        if any(o is not None and o.resolve() == output.resolve() for o in outputs):
            raise ConfigurationError(
                f"--output_csv and --summary_csv are both {output}; give two paths")
        outputs.append(output)
    return outputs


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    from dltk_mm.io.files import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda temporary: frame.to_csv(temporary, index=False))


def _print_progress(done: int, total: int, rows: pd.DataFrame) -> None:
    first = rows.iloc[0]
    dice = ", ".join(f"{row.organ} {row.dice:.3f}" for row in rows.itertuples(index=False))
    print(f"[{done}/{total}] {first.subject_id} ({first.modality}): Dice {dice}", flush=True)


def _pairs(predictions: str | None, labels: str | None, manifest: str | None,
           modality: str | None, label_preset: str) -> list[EvaluationPair]:
    from dltk_mm.evaluation.evaluate import pairs_from_folders, pairs_from_manifest

    if manifest is not None and labels is not None:
        raise ConfigurationError("give either --manifest or --labels, not both")
    if manifest is None and labels is None:
        raise ConfigurationError(
            "give the reference labels: --manifest CSV, or --labels folder with --predictions "
            "and --modality"
        )
    if manifest is not None:
        return pairs_from_manifest(manifest, predictions_dir=predictions, modality=modality,
                                   label_preset=label_preset)
    if predictions is None:
        raise ConfigurationError("--labels needs --predictions (the predictions folder)")
    if not modality:
        raise ConfigurationError(
            "--labels needs --modality (the modality of these subjects, e.g. ct or mr)"
        )
    return pairs_from_folders(predictions, labels, modality)


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
        overwrite: Replace existing output files (never an input file).
        label_preset: Label preset of the reference labels (a manifest row's column wins).
        allow_unknown_labels: Count unknown reference ids as background instead of failing.

    Returns:
        The per-subject, per-organ metrics.

    Raises:
        DltkMmError: On bad options or input data (with a message naming the fix), before any
            output is written; an output path that is an input is refused whatever ``overwrite``.
    """
    from dltk_mm.evaluation.evaluate import (
        evaluate_pairs,
        format_summary_table,
        input_files,
        summarise,
    )

    pairs = _pairs(predictions, labels, manifest, modality, label_preset)
    inputs = input_files(pairs)
    if manifest is not None:
        inputs.add(Path(manifest).expanduser().resolve())
    outputs = _check_outputs({"output_csv": output_csv, "summary_csv": summary_csv}, inputs,
                             overwrite)
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


@handle_errors
def main(argv: Sequence[str]) -> int:
    """absl entry point (exit statuses: see :mod:`dltk_mm.cli._common`)."""
    del argv
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
    return 0


def run() -> None:
    """Console-script entry point (``dltk-mm-evaluate``)."""
    run_command(main)


if __name__ == "__main__":
    run()
