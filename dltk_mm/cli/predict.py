"""``dltk-mm-predict``: segment volumes and write the label maps in each input's own geometry.

Usage, from a training run's folder or from an export of ``dltk-mm-export``::

    dltk-mm-predict --model_dir runs/v4 --input ct_01.nii.gz --input ct_02.nii.gz \\
        --modality ct --output_dir out/predictions
    dltk-mm-predict --model_dir runs/joint/seed0 --model_dir runs/joint/seed1 \\
        --manifest data/test.csv --output_dir out/ensemble
    dltk-mm-predict --saved_model export/v4 --input dicom/series_7 --modality mr \\
        --subject_id patient7 --output_dir out/predictions
    dltk-mm-predict --saved_model export/v4 --manifest data/test.csv --modality ct \\
        --output_dir out/predictions --save_probabilities

Inputs are volume files (NIfTI, MetaImage, NRRD) or DICOM series folders, each with its modality
(``--modality`` once for all ``--input`` or once per input, in order), or the rows of a manifest
CSV (``subject_id, modality, image``; ``--modality`` then keeps only that modality's rows).
Each volume is preprocessed as in training (without the organ crop), segmented with a sliding
window (training patch size, 64^3 in the paper; ``--overlap`` 0.5; ``--weighting`` uniform or
gaussian; optional ``--mirror``, ``--largest_component``, ``--min_component_voxels``: the flags
given override the model's own settings, its training run's validation settings or those recorded
in the export, which are the paper's protocol unless the run chose otherwise), and its argmax
label map is resampled (nearest neighbour) back onto the input's grid and written as
``<output_dir>/<subject_id>.nii.gz`` (uint8; the name ``dltk-mm-evaluate`` expects).
Repeating ``--model_dir`` segments with the ensemble of those runs
(:class:`~dltk_mm.inference.ensemble.EnsemblePredictor`: their probabilities averaged window by
window; the first run's segmentation settings). ``--save_probabilities`` also writes
``<output_dir>/probabilities/<subject_id>.nii.gz``, a 4-D float32 NIfTI (x, y, z, class).

Nothing a user gave is written over, whatever the flags: no input, and no file the manifest names
(its images and labels, e.g. ``labels/<subject_id>.nii.gz``). Existing outputs are replaced only
with ``--overwrite``; ``--skip_existing`` keeps them and predicts the rest (an interrupted run
continues). Every input is read in full (truncated files, NaN/Inf voxels) before the first output
is written. See :mod:`dltk_mm.inference.predict`.

Exit status (the convention of every dltk-mm command, :mod:`dltk_mm.cli._common`): 0 done; 2 bad
options, inputs or outputs (one line naming the file and the fix; flags, inputs and outputs are
checked before TensorFlow is imported and before anything is written); 130 / 143 stopped by
SIGINT / SIGTERM (``--skip_existing`` then continues).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from absl import flags

from dltk_mm.cli._common import check_distinct_runs, handle_errors, run_command
from dltk_mm.errors import ConfigurationError, InputDataError
from dltk_mm.inference.config_flags import (
    define_inference_flags,
    inference_flag_specs,
    inference_from_flags,
)
from dltk_mm.inference.inputs import (
    PredictionInput,
    check_inputs,
    inputs_from_manifest,
    inputs_from_paths,
    manifest_files,
)
from dltk_mm.inference.outputs import plan_outputs
from dltk_mm.inference.segment import InferenceConfig

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FLAGS = flags.FLAGS

flags.DEFINE_multi_string("model_dir", [],
                          "A training run's folder (exclusive with --saved_model); repeat it to "
                          "segment with the ensemble of the runs (their probabilities averaged; "
                          "the same modalities and preprocessing).")
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
flags.DEFINE_bool("overwrite", False, "Replace existing predictions (inputs and the manifest's "
                  "files are never replaced).")
flags.DEFINE_bool("skip_existing", False, "Keep the subjects whose predictions exist and predict "
                  "the others (continue an interrupted run).")
flags.DEFINE_bool("save_probabilities", False,
                  "Also write probabilities/<subject_id>.nii.gz (4-D float32 NIfTI, x, y, z, C).")
define_inference_flags(FLAGS)
for _spec in inference_flag_specs():  # listed by --helpshort as this command's own flags
    flags.declare_key_flag(_spec.name)
flags.DEFINE_list("patch_size", None,
                  "Window size z,y,x (or one value for all axes); default: the training patch.")


def _inputs() -> tuple[list[PredictionInput], frozenset[Path]]:
    """The inputs and the files no output may replace (the manifest's)."""
    if FLAGS.manifest and FLAGS.input:
        raise ConfigurationError("give either --manifest or --input, not both")
    if FLAGS.manifest:
        if FLAGS.subject_id:
            raise ConfigurationError("--subject_id goes with --input; a manifest names subjects")
        if len(FLAGS.modality) > 1:
            raise ConfigurationError("with --manifest, give at most one --modality (a filter)")
        from dltk_mm.io.manifest import load_manifest

        manifest = load_manifest(FLAGS.manifest, check_grids=False)
        inputs = inputs_from_manifest(manifest,
                                      modality=FLAGS.modality[0] if FLAGS.modality else None)
        return inputs, manifest_files(manifest)
    if not FLAGS.input:
        raise ConfigurationError("give the volumes to segment: --input FILE (with --modality) or "
                                 "--manifest CSV")
    if not FLAGS.modality:
        raise ConfigurationError("--input needs --modality (e.g. --modality ct), once for all "
                                 "inputs or once per input")
    return inputs_from_paths(FLAGS.input, FLAGS.modality, FLAGS.subject_id or None), frozenset()


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
        raise ConfigurationError("give exactly one model: --model_dir (a training run, repeated "
                                 "for an ensemble) or --saved_model (an export of dltk-mm-export)")
    if FLAGS.saved_model and FLAGS.weights != "auto":
        raise ConfigurationError("--weights goes with --model_dir; an export holds one set")
    check_distinct_runs(FLAGS.model_dir)
    return " + ".join(FLAGS.model_dir) or FLAGS.saved_model


def _load_predictor() -> tuple[Any, InferenceConfig]:
    """The model (an ensemble for repeated --model_dir) and its own segmentation settings (the
    first run's; imports TensorFlow)."""
    from dltk_mm.export import SavedModelPredictor, is_saved_model_dir
    from dltk_mm.inference.ensemble import EnsemblePredictor
    from dltk_mm.inference.predictor import KerasPredictor

    if FLAGS.saved_model:
        predictor = SavedModelPredictor(FLAGS.saved_model)
        return predictor, predictor.inference
    for name in FLAGS.model_dir:
        model_dir = Path(name).expanduser()
        if not model_dir.is_dir():
            raise InputDataError(f"{model_dir}: model_dir not found; give the training run's "
                                 "folder")
        if is_saved_model_dir(model_dir):
            raise ConfigurationError(f"{name} is a SavedModel export; pass it as --saved_model")
    from dltk_mm.training import load_trained_model

    loaded = [load_trained_model(Path(name).expanduser(), weights=FLAGS.weights)
              for name in FLAGS.model_dir]
    members = [KerasPredictor.from_loaded(run) for run in loaded]
    predictor = members[0] if len(members) == 1 else EnsemblePredictor(members)
    return predictor, loaded[0].config.inference


def _callbacks() -> Any:
    from dltk_mm.inference.predict import PredictionRecord, ProgressCallbacks

    started: dict[str, float] = {}

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
        if record.skipped:
            print(f"[{index}/{total}] {record.subject_id}: {record.labels} exists, skipped",
                  flush=True)
            return
        elapsed = time.monotonic() - started.get("time", time.monotonic())
        extra = f" and {record.probabilities}" if record.probabilities else ""
        print(f"[{index}/{total}] {record.subject_id}: wrote {record.labels}{extra} "
              f"({record.num_windows} windows, {elapsed:.1f} s)", flush=True)

    return ProgressCallbacks(subject_start=subject_start, windows=windows,
                             subject_done=subject_done)


@handle_errors
def main(argv: Sequence[str]) -> int:
    """absl entry point."""
    del argv
    if not FLAGS.output_dir:
        raise ConfigurationError("give --output_dir, the folder of the predictions")
    inputs, protected = _inputs()
    patch_size = _patch_size()
    inference_from_flags(FLAGS, InferenceConfig())  # a bad value is refused before anything else
    path = _model_path()
    # Outputs and inputs are checked before the model is loaded: a refusal comes at once, and
    # nothing is written before every input has been read.
    planned = plan_outputs(inputs, FLAGS.output_dir, overwrite=FLAGS.overwrite,
                           save_probabilities=FLAGS.save_probabilities,
                           skip_existing=FLAGS.skip_existing, protected=protected)
    pending = [plan.input for plan in planned if not plan.skip]
    print(f"checking {len(pending)} input(s)"
          + (f" ({len(planned) - len(pending)} already predicted, skipped)"
             if len(pending) < len(planned) else ""), flush=True)
    check_inputs(pending)
    print(f"loading model {path}", flush=True)
    predictor, model_settings = _load_predictor()
    config = inference_from_flags(FLAGS, model_settings)
    print(f"model: modalities {', '.join(predictor.modalities)}, window "
          f"{'x'.join(str(p) for p in (patch_size or predictor.patch_size))}, overlap "
          f"{config.overlap}, {config.weighting} weighting"
          + (", mirroring" if config.mirror else "")
          + (", largest component" if config.largest_component else "")
          + (f", components >= {config.min_component_voxels} voxels"
             if config.min_component_voxels else ""), flush=True)
    from dltk_mm.inference.predict import predict_files

    records = predict_files(
        predictor, inputs, FLAGS.output_dir, config=config, overwrite=FLAGS.overwrite,
        skip_existing=FLAGS.skip_existing, save_probabilities=FLAGS.save_probabilities,
        patch_size=patch_size, protected=protected, check=False, callbacks=_callbacks(),
    )
    done = sum(not record.skipped for record in records)
    print(f"done: {done} prediction(s) in {FLAGS.output_dir}"
          + (f" ({len(records) - done} skipped)" if done < len(records) else ""), flush=True)
    return 0


def run() -> None:
    """Console-script entry point (``dltk-mm-predict``)."""
    run_command(main)


if __name__ == "__main__":
    run()
