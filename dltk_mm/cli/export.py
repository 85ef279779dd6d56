"""``dltk-mm-export``: write a trained model as a TensorFlow SavedModel for serving.

Usage::

    dltk-mm-export --model_dir runs/v4 --export_dir export/v4 [--mirror] [--largest_component]
    dltk-mm-export --model_dir runs/joint/seed0 --model_dir runs/joint/seed1 \\
        --export_dir export/joint

The SavedModel has two signatures per modality: ``serve_<modality>`` (``serve_mr``,
``serve_ct``; ``serving_default`` is the first one): input ``images`` float32
``(batch, z, y, x, 1)`` of preprocessed patches, output ``{"probabilities": (batch, z, y, x, C)}``;
and ``segment_<modality>``: a raw volume ``(z, y, x)`` with its ``spacing``, ``origin`` and
``direction`` (and the ``mirror``, ``largest_component``, ``min_component_voxels`` options) in,
the label map on the same grid out (see :mod:`dltk_mm.export.whole_volume`). It runs under
``tf.saved_model.load``, ``saved_model_cli run`` and TF Serving. Repeating ``--model_dir``
exports the ensemble of those runs: every signature averages their probabilities (runs of one
architecture and preprocessing; the first run's settings). The training preprocessing
settings, modalities, number of classes, patch size, dltk_mm version and the segmentation
settings (``--overlap``, ``--weighting``, ``--batch_size``: fixed in ``segment_<modality>``;
``--mirror``, ``--largest_component``, ``--min_component_voxels``: defaults of
``dltk-mm-predict``; default: the run's validation settings) are stored in
``<export_dir>/assets/dltk_mm_export.json``; ``dltk-mm-predict --saved_model <export_dir>`` uses
them. The export is reloaded and checked against the Keras model before it is moved into place
(``--noverify`` skips that). ``--overwrite`` replaces only an earlier dltk_mm export, never another
folder, and nothing is ever written inside a training run's folder. See
:mod:`dltk_mm.export.saved_model`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from absl import flags

from dltk_mm.cli._common import (
    check_distinct_runs,
    handle_errors,
    require_flags,
    run_command,
)
from dltk_mm.errors import ConfigurationError
from dltk_mm.inference.config_flags import define_inference_flags, inference_from_flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FLAGS = flags.FLAGS

flags.DEFINE_multi_string("model_dir", None,
                          "The training run's folder; repeat it to export the ensemble of the "
                          "runs (one SavedModel averaging their probabilities; runs of one "
                          "architecture and preprocessing, e.g. the seeds of one configuration).")
flags.DEFINE_string("export_dir", None,
                    "Where to write the SavedModel (a new or empty folder, outside any run's "
                    "folder).")
flags.DEFINE_enum("weights", "auto", ["auto", "best", "last"],
                  "Which weights: best (validation Dice), last (newest checkpoint) or auto (best "
                  "if the run validated, else last).")
flags.DEFINE_bool("overwrite", False,
                  "Replace an earlier dltk_mm export at --export_dir (never any other folder).")
flags.DEFINE_bool("verify", True,
                  "Reload the export and check its probabilities against the Keras model.")
define_inference_flags(FLAGS)
require_flags("model_dir", "export_dir")


def check_paths() -> None:
    """Refuses a bad ``--export_dir`` or a ``--model_dir`` that is no training run, before
    TensorFlow is imported (nothing is written).

    Raises:
        ConfigurationError: naming the folder and the fix.
    """
    from dltk_mm.export.destination import CONFIG_FILE, check_export_destination, is_model_folder

    check_export_destination(FLAGS.export_dir, FLAGS.overwrite)
    for model_dir in FLAGS.model_dir:
        if not is_model_folder(os.path.expanduser(model_dir)):
            raise ConfigurationError(
                f"{model_dir}: no training {CONFIG_FILE} there; give the --model_dir of a "
                "dltk-mm-train run"
            )
    check_distinct_runs(FLAGS.model_dir)


@handle_errors
def main(argv: Sequence[str]) -> int:
    """absl entry point."""
    del argv
    check_paths()
    from dltk_mm.export import export_model_dir, read_export_metadata
    from dltk_mm.training.loading import load_config

    inference = inference_from_flags(FLAGS, load_config(FLAGS.model_dir[0]).inference)
    what = (FLAGS.model_dir[0] if len(FLAGS.model_dir) == 1
            else f"the ensemble of {' + '.join(FLAGS.model_dir)}")
    print(f"exporting {what} to {FLAGS.export_dir}", flush=True)
    export_dir = export_model_dir(FLAGS.model_dir, FLAGS.export_dir, overwrite=FLAGS.overwrite,
                                  verify=FLAGS.verify, weights=FLAGS.weights,
                                  inference=inference)
    metadata = read_export_metadata(export_dir)
    print(f"wrote SavedModel {export_dir}: signatures "
          f"{', '.join(metadata.signatures[m] for m in metadata.modalities)}, "
          f"{', '.join(metadata.segment_signatures[m] for m in metadata.modalities)}; patch "
          f"{'x'.join(str(p) for p in metadata.patch_size)}; metadata in "
          f"assets/dltk_mm_export.json{' (verified)' if FLAGS.verify else ''}", flush=True)
    return 0


def run() -> None:
    """Console-script entry point (``dltk-mm-export``)."""
    run_command(main)


if __name__ == "__main__":
    run()
