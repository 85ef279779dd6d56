"""``dltk-mm-export``: write a trained model as a TensorFlow SavedModel for serving.

Usage::

    dltk-mm-export --model_dir runs/v4 --export_dir export/v4

The SavedModel has one signature per modality, ``serve_<modality>`` (``serve_mr``, ``serve_ct``):
input ``images`` float32 ``(batch, z, y, x, 1)`` of preprocessed patches, output
``{"probabilities": (batch, z, y, x, C)}``. The training preprocessing settings, modalities,
number of classes, patch size and dltk_mm version are stored in
``<export_dir>/assets/dltk_mm_export.json``; ``dltk-mm-predict --saved_model <export_dir>`` uses
them. The export is reloaded and checked against the Keras model before it is moved into place
(``--noverify`` skips that). An existing non-empty ``--export_dir`` is only replaced with
``--overwrite``. See :mod:`dltk_mm.export.saved_model`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from absl import app, flags

from dltk_mm.cli._common import handle_errors
from dltk_mm.errors import ConfigurationError
from dltk_mm.export.saved_model import export_model_dir, read_export_metadata

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "The training run's folder.")
flags.DEFINE_string("export_dir", None, "Where to write the SavedModel.")
flags.DEFINE_enum("weights", "auto", ["auto", "best", "last"],
                  "Which weights: best (validation Dice), last (newest checkpoint) or auto (best "
                  "if the run validated, else last).")
flags.DEFINE_bool("overwrite", False, "Replace an existing non-empty --export_dir.")
flags.DEFINE_bool("verify", True,
                  "Reload the export and check its probabilities against the Keras model.")


@handle_errors
def main(argv: Sequence[str]) -> int:
    """absl entry point."""
    del argv
    if not FLAGS.model_dir or not FLAGS.export_dir:
        raise ConfigurationError("give --model_dir (the training run) and --export_dir")
    print(f"exporting {FLAGS.model_dir} to {FLAGS.export_dir}", flush=True)
    export_dir = export_model_dir(FLAGS.model_dir, FLAGS.export_dir, overwrite=FLAGS.overwrite,
                                  verify=FLAGS.verify, weights=FLAGS.weights)
    metadata = read_export_metadata(export_dir)
    print(f"wrote SavedModel {export_dir}: signatures "
          f"{', '.join(metadata.signatures[m] for m in metadata.modalities)}; patch "
          f"{'x'.join(str(p) for p in metadata.patch_size)}; metadata in "
          f"assets/dltk_mm_export.json{' (verified)' if FLAGS.verify else ''}", flush=True)
    return 0


def run() -> None:
    """Console-script entry point (``dltk-mm-export``)."""
    app.run(main)


if __name__ == "__main__":
    run()
