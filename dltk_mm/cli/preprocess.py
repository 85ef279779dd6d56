"""``dltk-mm-preprocess``: preprocess every volume of a manifest into the on-disk cache.

Reorientation to LPS, resampling to ``--spacing_mm`` isotropic, organ crop and intensity
normalisation as in Valindria et al., WACV 2018 (see :mod:`dltk_mm.io.preprocessing`). A second
run with the same inputs and options reads the cache.

Example::

    dltk-mm-preprocess --manifest=data/manifest.csv --cache_dir=/tmp/cache --spacing_mm=2
"""

from __future__ import annotations

from absl import app, flags

from dltk_mm.cli._common import (
    ProgressBar,
    format_table,
    handle_errors,
    require_flags,
    validate_positive,
)
from dltk_mm.io.labels import PRESETS
from dltk_mm.io.manifest import load_manifest
from dltk_mm.io.preprocessing import (
    NORMALISATIONS,
    PreprocessingConfig,
    default_cache_dir,
    preprocess_manifest,
)

FLAGS = flags.FLAGS

flags.DEFINE_string("manifest", None, "Manifest CSV (subject_id, modality, image[, label]).")
flags.DEFINE_string("cache_dir", None, "Folder of the preprocessing cache (.npz + .json); "
                    "default: <manifest folder>/.dltk_mm_cache, the folder dltk-mm-train reads.")
flags.DEFINE_float("spacing_mm", 2.0, "Isotropic voxel size in mm (paper: 2).")
flags.DEFINE_enum("normalisation", "per_volume", list(NORMALISATIONS),
                  "Z-score per volume (paper) or per axial slice (authors' code).")
flags.DEFINE_enum("label_preset", "identity", sorted(PRESETS),
                  "How the label files' ids map to 0 bg, 1 liver, 2 spleen, 3/4 right/left "
                  "kidney.")
flags.DEFINE_bool("allow_unknown_labels", False,
                  "Map label ids unknown to the preset to background instead of failing.")
flags.DEFINE_bool("crop_to_organs", True, "Crop to the box covering the four organs.")
flags.DEFINE_float("crop_margin_mm", 10.0, "Margin around the organ box, mm.")
flags.DEFINE_float("ct_clip_min", -1000.0, "CT values below this (HU) are clipped.")
flags.DEFINE_list("modalities", None, "Allowed modalities (default: any), e.g. ct,mr.")
flags.DEFINE_bool("require_labels", False, "Fail if a row has no label file.")
require_flags("manifest")
validate_positive("spacing_mm")
validate_positive("crop_margin_mm", allow_zero=True)


@handle_errors
def main(argv: list[str]) -> None:
    """Validates the manifest, preprocesses every row and prints a summary table."""
    del argv
    config = PreprocessingConfig(
        spacing_mm=FLAGS.spacing_mm, crop_to_organs=FLAGS.crop_to_organs,
        crop_margin_mm=FLAGS.crop_margin_mm, ct_clip_min=FLAGS.ct_clip_min,
        normalisation=FLAGS.normalisation, label_preset=FLAGS.label_preset,
        allow_unknown_labels=FLAGS.allow_unknown_labels)
    manifest = load_manifest(FLAGS.manifest, modalities=FLAGS.modalities,
                             require_labels=FLAGS.require_labels)
    cache_dir = FLAGS.cache_dir or default_cache_dir(FLAGS.manifest)
    print(f"preprocessing {len(manifest)} volume(s) from {FLAGS.manifest} into {cache_dir}")
    bar = ProgressBar(len(manifest))

    def progress(done: int, total: int, volume) -> None:  # noqa: ANN001
        del total
        state = "cache hit" if volume.from_cache else "done"
        bar.update(done, f"{volume.subject_id} ({volume.modality}) {state}")

    volumes = preprocess_manifest(manifest, config, cache_dir, progress=progress)
    rows = [(v.subject_id, v.modality, "x".join(map(str, v.image.shape)),
             "x".join(f"{s:g}" for s in v.geometry.spacing),
             v.source_geometry.orientation,
             "-" if v.label is None else int((v.label > 0).sum()),
             "hit" if v.from_cache else "miss") for v in volumes]
    print(format_table(rows, ("subject", "modality", "shape zyx", "spacing mm", "source orient",
                              "organ voxels", "cache")))
    hits = sum(v.from_cache for v in volumes)
    print(f"{len(volumes)} volume(s): {hits} cache hit(s), {len(volumes) - hits} computed")


def run() -> None:
    """Console entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
