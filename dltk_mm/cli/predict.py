"""``dltk-mm-predict``: segment volumes and write the label maps in each input's own geometry.

Usage, from a training run's folder or from an export of ``dltk-mm-export``::

    dltk-mm-predict --model_dir runs/v4 --input ct_01.nii.gz --input ct_02.nii.gz \\
        --modality ct --output_dir out/predictions
    dltk-mm-predict --saved_model export/v4 --input dicom/series_7 --modality mr \\
        --subject_id patient7 --output_dir out/predictions
    dltk-mm-predict --saved_model export/v4 --manifest data/test.csv --modality ct \\
        --output_dir out/predictions --save_probabilities

Inputs are volume files (NIfTI, MetaImage, NRRD) or DICOM series folders, each with its modality
(``--modality`` once for all ``--input`` or once per input, in order), or the rows of a manifest
CSV (``subject_id, modality, image``; ``--modality`` then keeps only that modality's rows).
Each volume is preprocessed as in training (without the organ crop), segmented with a sliding
window (training patch size, 64^3 in the paper; ``--overlap`` 0.5; ``--weighting`` uniform or
gaussian), and its argmax label map is resampled (nearest neighbour) back onto the input's grid
and written as ``<output_dir>/<subject_id>.nii.gz`` (uint8; the name ``dltk-mm-evaluate``
expects). ``--save_probabilities`` also writes ``<output_dir>/probabilities/<subject_id>.nii.gz``,
a 4-D float32 NIfTI (x, y, z, class). Inputs are never overwritten; existing outputs only with
``--overwrite``. See :mod:`dltk_mm.inference.predict`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from absl import app, flags

from dltk_mm.cli._common import handle_errors
from dltk_mm.errors import ConfigurationError
from dltk_mm.export.saved_model import is_saved_model_dir
from dltk_mm.inference.predict import (
    WEIGHTINGS,
    KerasPredictor,
    PredictionInput,
    PredictionRecord,
    SavedModelPredictor,
    inputs_from_manifest,
    inputs_from_paths,
    plan_outputs,
    predict_files,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "A training run's folder (exclusive with --saved_model).")
flags.DEFINE_string("saved_model", None,
                    "A SavedModel folder written by dltk-mm-export (exclusive with --model_dir).")
flags.DEFINE_enum("weights", "auto", ["auto", "best", "last"],
                  "With --model_dir: best (validation Dice), last (newest checkpoint) or auto "
                  "(best if the run validated, else last).")
flags.DEFINE_multi_string("input", [], "A volume file or DICOM series folder; repeat for more.")
flags.DEFINE_multi_string("modality", [],
                          "Modality of the inputs (e.g. ct, mr): once for all --input, or once "
                          "per --input in order. With --manifest: keep only this modality.")
flags.DEFINE_multi_string("subject_id", [],
                          "Output names, one per --input (default: the file name without "
                          "extension, or the DICOM folder's name).")
flags.DEFINE_string("manifest", None, "Manifest CSV (subject_id, modality, image[, label]).")
flags.DEFINE_string("output_dir", None, "Folder of the predictions (<subject_id>.nii.gz).")
flags.DEFINE_bool("overwrite", False, "Replace existing predictions (inputs are never replaced).")
flags.DEFINE_bool("save_probabilities", False,
                  "Also write probabilities/<subject_id>.nii.gz (4-D float32 NIfTI, x, y, z, C).")
flags.DEFINE_float("overlap", 0.5, "Sliding-window overlap fraction in [0, 1) (paper code: 0.5 "
                   "in validation, 0.0 at test time).", lower_bound=0.0, upper_bound=0.99)
flags.DEFINE_integer("batch_size", 4, "Windows per network call.", lower_bound=1)
flags.DEFINE_enum("weighting", "uniform", list(WEIGHTINGS),
                  "How overlapping windows are averaged: uniform (paper) or gaussian.")
flags.DEFINE_list("patch_size", None,
                  "Window size z,y,x (or one value for all axes); default: the training patch.")


def _inputs() -> list[PredictionInput]:
    if FLAGS.manifest and FLAGS.input:
        raise ConfigurationError("give either --manifest or --input, not both")
    if FLAGS.manifest:
        if FLAGS.subject_id:
            raise ConfigurationError("--subject_id goes with --input; a manifest names subjects")
        if len(FLAGS.modality) > 1:
            raise ConfigurationError("with --manifest, give at most one --modality (a filter)")
        return inputs_from_manifest(FLAGS.manifest,
                                    modality=FLAGS.modality[0] if FLAGS.modality else None)
    if not FLAGS.input:
        raise ConfigurationError("give the volumes to segment: --input FILE (with --modality) or "
                                 "--manifest CSV")
    if not FLAGS.modality:
        raise ConfigurationError("--input needs --modality (e.g. --modality ct), once for all "
                                 "inputs or once per input")
    return inputs_from_paths(FLAGS.input, FLAGS.modality, FLAGS.subject_id or None)


def _patch_size() -> tuple[int, ...] | None:
    if not FLAGS.patch_size:
        return None
    try:
        return tuple(int(v) for v in FLAGS.patch_size)
    except ValueError as error:
        raise ConfigurationError(f"--patch_size must be integers z,y,x, got "
                                 f"{FLAGS.patch_size}") from error


def _model_path() -> str:
    if bool(FLAGS.model_dir) == bool(FLAGS.saved_model):
        raise ConfigurationError("give exactly one model: --model_dir (a training run) or "
                                 "--saved_model (an export of dltk-mm-export)")
    return FLAGS.model_dir or FLAGS.saved_model


@handle_errors
def main(argv: Sequence[str]) -> int:
    """absl entry point."""
    del argv
    if not FLAGS.output_dir:
        raise ConfigurationError("give --output_dir, the folder of the predictions")
    inputs = _inputs()
    patch_size = _patch_size()
    path = _model_path()
    # Check the outputs before loading the model: a refusal should come at once.
    plan_outputs(inputs, FLAGS.output_dir, overwrite=FLAGS.overwrite,
                 save_probabilities=FLAGS.save_probabilities)
    print(f"loading model {path}", flush=True)
    if FLAGS.saved_model:
        if FLAGS.weights != "auto":
            raise ConfigurationError("--weights goes with --model_dir; an export holds one set")
        predictor = SavedModelPredictor(FLAGS.saved_model)
    else:
        if is_saved_model_dir(FLAGS.model_dir):
            raise ConfigurationError(f"{FLAGS.model_dir} is a SavedModel export; pass it as "
                                     "--saved_model")
        predictor = KerasPredictor.from_model_dir(FLAGS.model_dir, weights=FLAGS.weights)
    print(f"model: modalities {', '.join(predictor.modalities)}, window "
          f"{'x'.join(str(p) for p in (patch_size or predictor.patch_size))}, overlap "
          f"{FLAGS.overlap}, {FLAGS.weighting} weighting", flush=True)
    started = {}

    def subject_start(index: int, total: int, item: PredictionInput) -> None:
        started["time"] = time.monotonic()
        started["last"] = 0.0
        print(f"[{index}/{total}] {item.subject_id} ({item.modality}): {item.image}", flush=True)

    def windows(done: int, total: int) -> None:
        now = time.monotonic()
        # One line per batch would flood the log for large volumes: at most every 5 s, and the end.
        if done == total or now - started.get("last", 0.0) >= 5.0:
            started["last"] = now
            print(f"    windows {done}/{total}", flush=True)

    def subject_done(index: int, total: int, record: PredictionRecord) -> None:
        elapsed = time.monotonic() - started.get("time", time.monotonic())
        extra = f" and {record.probabilities}" if record.probabilities else ""
        print(f"[{index}/{total}] {record.subject_id}: wrote {record.labels}{extra} "
              f"({record.num_windows} windows, {elapsed:.1f} s)", flush=True)

    records = predict_files(
        predictor, inputs, FLAGS.output_dir, overwrite=FLAGS.overwrite,
        save_probabilities=FLAGS.save_probabilities, patch_size=patch_size,
        overlap=FLAGS.overlap, batch_size=FLAGS.batch_size, weighting=FLAGS.weighting,
        on_subject_start=subject_start, on_windows=windows, on_subject_done=subject_done,
    )
    print(f"done: {len(records)} prediction(s) in {FLAGS.output_dir}", flush=True)
    return 0


def run() -> None:
    """Console-script entry point (``dltk-mm-predict``)."""
    app.run(main)


if __name__ == "__main__":
    run()
