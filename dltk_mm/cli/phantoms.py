"""``dltk-mm-phantoms``: write an unpaired CT/MR synthetic phantom data set with a manifest.

Example::

    dltk-mm-phantoms --output_dir=/tmp/phantoms --num_ct=4 --num_mr=4 --seed=0
"""

from __future__ import annotations

from absl import flags

from dltk_mm.cli._common import (
    ProgressBar,
    handle_errors,
    require_flags,
    run_command,
    validate_positive,
)

FLAGS = flags.FLAGS

flags.DEFINE_string("output_dir", None, "Folder to write images/, labels/, manifest.csv into.")
flags.DEFINE_integer("num_ct", 4, "Number of CT-like subjects.", lower_bound=0)
flags.DEFINE_integer("num_mr", 4, "Number of MR-like subjects (different subjects).",
                     lower_bound=0)
flags.DEFINE_integer("seed", 0, "Master random seed.")
flags.DEFINE_bool("overwrite", False,
                  "Write into a non-empty folder that is not a previous phantom set.")
flags.DEFINE_float("anatomy_scale", 0.5, "Body size relative to an adult.")
flags.DEFINE_integer("matrix", 96, "In-plane voxels per axis (both modalities).", lower_bound=8)
flags.DEFINE_string("ct_orientation", "RAS", "Orientation code written into CT headers.")
flags.DEFINE_string("mr_orientation", "LAS", "Orientation code written into MR headers.")
flags.DEFINE_string("label_preset", "identity",
                    "Write labels in this preset's ids (identity: the project map).")
require_flags("output_dir")
validate_positive("anatomy_scale")


@handle_errors
def main(argv: list[str]) -> None:
    """Generates the data set and prints a summary."""
    del argv
    from dltk_mm.io.phantoms import PhantomConfig, generate_phantom_dataset

    config = PhantomConfig(
        anatomy_scale=FLAGS.anatomy_scale,
        matrix={"ct": FLAGS.matrix, "mr": FLAGS.matrix},
        orientation={"ct": FLAGS.ct_orientation.upper(), "mr": FLAGS.mr_orientation.upper()},
        label_preset=FLAGS.label_preset)
    print(f"writing {FLAGS.num_ct} CT + {FLAGS.num_mr} MR phantoms to {FLAGS.output_dir}")
    progress = ProgressBar(FLAGS.num_ct + FLAGS.num_mr)
    summary = generate_phantom_dataset(
        FLAGS.output_dir, num_ct=FLAGS.num_ct, num_mr=FLAGS.num_mr, seed=FLAGS.seed,
        config=config, overwrite=FLAGS.overwrite,
        progress=lambda done, total, subject: progress.update(done, subject))
    print(summary.format())
    print(f"manifest: {summary.manifest_path}")


def run() -> None:
    """Console entry point (exit statuses: see :mod:`dltk_mm.cli._common`)."""
    run_command(main)


if __name__ == "__main__":
    run()
