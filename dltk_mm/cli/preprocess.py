"""``dltk-mm-preprocess``: preprocess every volume of a manifest into the on-disk cache.

Reorientation to LPS, resampling to ``--spacing_mm`` isotropic, organ crop and intensity
normalisation as in Valindria et al., WACV 2018 (see :mod:`dltk_mm.io.preprocessing`). A second
run with the same inputs and options reads the cache.

Example::

    dltk-mm-preprocess --manifest=data/manifest.csv --cache_dir=/tmp/cache --spacing_mm=2

Exit status (the convention of every dltk-mm command, :mod:`dltk_mm.cli._common`): 0 done; 2 bad
options or input data (one line naming the file and the fix, nothing written); 130 / 143 stopped
by SIGINT / SIGTERM. The command never imports TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from dltk_mm import flag_fields
from dltk_mm.cli._common import (
    ProgressBar,
    format_table,
    handle_errors,
    require_flags,
    run_command,
)
from dltk_mm.io.labels import is_preset_file
from dltk_mm.io.manifest import load_manifest
from dltk_mm.io.preprocessing import PreprocessingConfig, default_cache_dir, preprocess_manifest

FLAGS = flags.FLAGS

#: One flag per PreprocessingConfig field, derived from the field (default, type, help) exactly as
#: dltk-mm-train's (dltk_mm.training.config_flags): the same names, the same defaults.
PREPROCESSING_FLAGS = flag_fields.derive_specs(PreprocessingConfig)

flags.DEFINE_string("manifest", None, "Manifest CSV (subject_id, modality, image[, label]).")
flags.DEFINE_string("cache_dir", None, "Folder of the preprocessing cache (.npz + .json); "
                    "default: <manifest folder>/.dltk_mm_cache, the folder dltk-mm-train reads.")
flag_fields.define_flags(FLAGS, PreprocessingConfig, PREPROCESSING_FLAGS)
flags.adopt_module_key_flags(flag_fields)  # --help lists them with this command's own flags
flags.DEFINE_list("modalities", None, "Allowed modalities (default: any), e.g. ct,mr.")
flags.DEFINE_bool("require_labels", False, "Fail if a row has no label file.")
require_flags("manifest")


def preprocessing_config(fv: flags.FlagValues = FLAGS) -> PreprocessingConfig:
    """The :class:`PreprocessingConfig` of the parsed flags (a preset file made absolute)."""
    values = flag_fields.flag_values(fv, PREPROCESSING_FLAGS)
    if is_preset_file(values["label_preset"]):
        values["label_preset"] = str(Path(values["label_preset"]).expanduser().resolve())
    return flag_fields.build(PreprocessingConfig, values)


@handle_errors
def main(argv: list[str]) -> None:
    """Validates the manifest, preprocesses every row and prints a summary table."""
    del argv
    config = preprocessing_config(FLAGS)
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
    """Console entry point (``dltk-mm-preprocess``)."""
    run_command(main)


if __name__ == "__main__":
    run()
