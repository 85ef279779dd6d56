"""``dltk-mm-manifest``: from a downloaded data set to a checked manifest CSV in one command.

Finds the cases of a layout, writes ``subject_id, modality, image, label, label_preset,
label_organs`` with paths relative to the manifest, validates every case (readable headers, one
image/label grid, label values known to the preset) and prints a summary table. Nothing is written
into the data set's own folder. Layouts (docs/datasets.md):

- ``btcv``: ``--root`` holds ``RawData/Training/{img,label}`` (CT, preset btcv) and
  ``RawData/Testing/img`` (unlabelled rows).
- ``amos``: ``--root`` holds ``dataset.json`` or ``imagesTr/labelsTr/imagesVa/labelsVa``; CT and
  MR share the folders: case ids from ``--amos_first_mr_id`` (default 501) are MR, the ones below
  CT (source: nnU-Net v2's AMOS 2022 conversion keeps ids up to 500 as the CT images); preset amos.
- ``chaos``: ``--root`` holds the CHAOS ``Train_Sets`` (and ``Test_Sets``); DICOM slices and PNG
  masks are converted to NIfTI in ``--converted_dir``; ``--chaos_sequences`` picks
  ``t2spir`` (modality mr), ``t1in`` / ``t1out`` (mr_t1in / mr_t1out) and ``ct`` (liver only).
- ``nnunet`` / ``decathlon``: ``--root`` holds ``dataset.json``; the modality comes from the
  channel name (CT -> ct, any MR name -> mr; ``--modality`` overrides), the label map from the
  label names, written as a preset file next to the manifest.
- ``folders``: ``--images`` and ``--labels`` matched by file stem, with ``--modality``.

Examples::

    dltk-mm-manifest --layout=btcv --root=~/data/btcv --output=~/data/manifest.csv
    dltk-mm-manifest --layout=chaos --root=~/data/CHAOS --converted_dir=~/data/chaos_nifti \\
        --output=~/data/manifest.csv --append
"""

from __future__ import annotations

from pathlib import Path

from absl import app, flags

from dltk_mm.cli._common import ProgressBar, fail, format_table, handle_errors, require_flags
from dltk_mm.errors import InputDataError
from dltk_mm.io.chaos import SEQUENCES, scan_chaos
from dltk_mm.io.dataset_json import scan_decathlon, scan_nnunet
from dltk_mm.io.dataset_manifest import check_scan, summary_rows, write_checked_manifest
from dltk_mm.io.labels import PRESETS, preset_problem
from dltk_mm.io.layouts import AMOS_FIRST_MR_ID, LayoutScan, scan_amos, scan_btcv, scan_folders

FLAGS = flags.FLAGS

LAYOUTS = ("btcv", "amos", "chaos", "nnunet", "decathlon", "folders")

flags.DEFINE_enum("layout", None, list(LAYOUTS), "How the data set lies on disk (see above).")
flags.DEFINE_string("root", None, "The data set's folder (every layout but folders).")
flags.DEFINE_string("output", None, "The manifest CSV to write (never inside --root).")
flags.DEFINE_bool("append", False, "Add the rows to an existing manifest (e.g. CHAOS MR rows to "
                  "a BTCV CT manifest).")
flags.DEFINE_bool("unlabelled", True, "List the layout's unlabelled cases (test sets) as rows "
                  "without label; --nounlabelled for a training / benchmark manifest.")
flags.DEFINE_list("modalities", [], "Keep only rows of these modalities (e.g. mr: the AMOS MR "
                  "cases only); default: all.")
flags.DEFINE_bool("skip_invalid", False, "Leave broken cases out (listed) instead of failing.")
flags.DEFINE_string("images", None, "folders: the image folder.")
flags.DEFINE_string("labels", None, "folders: the label folder (matched by file stem).")
flags.DEFINE_list("image_glob", [], "folders: only images whose file name matches one of these "
                  "globs, e.g. 'chaos_*,ts_mr_*'.")
flags.DEFINE_string("modality", None, "folders: the modality of every row; nnunet/decathlon: "
                    "overrides the modality taken from the channel name.")
flags.DEFINE_string("label_preset", None,
                    "Label preset of every row, replacing the layout's: a name ("
                    + ", ".join(sorted(PRESETS)) + ") or a .json/.csv preset file "
                    "(docs/datasets.md). folders default: identity.")
flags.DEFINE_string("converted_dir", None, "chaos: folder for the converted NIfTI files (never "
                    "inside --root); files already converted are kept.")
flags.DEFINE_list("chaos_sequences", ["t2spir"], "chaos: sequences to list, from "
                  + ", ".join(sorted(SEQUENCES)) + " (t1in/t1out: T1-DUAL in/opposed phase).")
flags.DEFINE_integer("amos_first_mr_id", AMOS_FIRST_MR_ID,
                     "amos: the first case id that is MR (ids below are CT).")
flags.DEFINE_integer("channel", 0, "nnunet/decathlon: the channel used as image (_0000 = 0).",
                     lower_bound=0)
require_flags("layout", "output")


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser().resolve() if value else None


def _check_destinations(root: Path | None) -> None:
    """Refuses to write the manifest or converted files into the data set's folder."""
    if root is None:
        return
    for name in ("output", "converted_dir"):
        target = _path(FLAGS[name].value)
        if target is not None and target.is_relative_to(root):
            raise InputDataError(f"--{name}={target} lies inside the data set folder {root}; "
                                 "nothing is written there: choose a folder outside it")


def _scan(root: Path | None) -> LayoutScan:
    layout = FLAGS.layout
    if layout == "folders":
        if not FLAGS.images or not FLAGS.modality:
            raise InputDataError("--layout=folders needs --images and --modality (and --labels "
                                 "for labelled rows)")
        return scan_folders(_path(FLAGS.images), _path(FLAGS.labels), FLAGS.modality.lower(),
                            FLAGS.label_preset or "identity", FLAGS.image_glob)
    if root is None:
        raise InputDataError(f"--layout={layout} needs --root (the data set's folder)")
    if layout == "btcv":
        return scan_btcv(root)
    if layout == "amos":
        return scan_amos(root, FLAGS.amos_first_mr_id)
    if layout == "chaos":
        if not FLAGS.converted_dir:
            raise InputDataError("--layout=chaos needs --converted_dir (where the NIfTI files go)")
        return scan_chaos(root, _path(FLAGS.converted_dir), FLAGS.chaos_sequences)
    modality = FLAGS.modality.lower() if FLAGS.modality else None
    scan = scan_nnunet if layout == "nnunet" else scan_decathlon
    return scan(root, modality=modality, channel=FLAGS.channel)


@handle_errors
def main(argv: list[str]) -> None:
    """Scans, checks, writes and summarises."""
    del argv
    root = _path(FLAGS.root) if FLAGS.layout != "folders" else _path(FLAGS.images)
    _check_destinations(root)
    if FLAGS.layout == "folders":
        _check_destinations(_path(FLAGS.labels))
    output = _path(FLAGS.output)
    if output.exists() and not FLAGS.append:
        raise InputDataError(f"{output}: exists; pass --append to add cases to it, or choose "
                             "another --output (it is never overwritten)")
    if FLAGS.label_preset and (problem := preset_problem(FLAGS.label_preset)):
        raise InputDataError(f"--label_preset: {problem}")
    scan = _scan(root)
    if not FLAGS.unlabelled:
        scan.candidates = [c for c in scan.candidates if c.labelled]
    if FLAGS.modalities:
        keep = {m.strip().lower() for m in FLAGS.modalities}
        scan.candidates = [c for c in scan.candidates if c.modality in keep]
    print(f"{FLAGS.layout}: {len(scan.candidates)} case(s) found under {root}")
    bar = ProgressBar(len(scan.candidates))
    checked, problems = check_scan(scan, FLAGS.label_preset if FLAGS.layout != "folders" else None,
                                   progress=lambda done, total, subject: bar.update(done, subject))
    for problem in problems:
        print(f"invalid case {problem.subject_id} ({problem.modality}): {problem.message}")
    if problems and not FLAGS.skip_invalid:
        fail(f"{len(problems)} invalid case(s) (listed above); fix them, or pass --skip_invalid "
             "to write the manifest without them; nothing was written")
    path = write_checked_manifest(checked, scan, output, append=FLAGS.append)
    rows, headers = summary_rows(checked)
    print(format_table(rows, headers))
    for note in scan.notes:
        print(f"note: {note}")
    if problems:
        print(f"skipped {len(problems)} invalid case(s): "
              + ", ".join(f"{p.subject_id} ({p.modality})" for p in problems))
    print(f"manifest: {path} ({len(checked)} row(s) {'added' if FLAGS.append else 'written'})")


def run() -> None:
    """Console entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
