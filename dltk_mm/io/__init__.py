"""dltk_mm.io: reading, validating and preprocessing CT/MR volumes, and synthetic phantoms.

The label map itself (``LABEL_NAMES``, ``NUM_CLASSES``) is :mod:`dltk_mm.core.label_map`.
"""

from dltk_mm.io.geometry import Geometry, direction_from_orientation, orientation_from_direction
from dltk_mm.io.labels import PRESETS, LabelPreset, get_preset, map_labels
from dltk_mm.io.manifest import load_manifest, write_manifest
from dltk_mm.io.phantoms import PhantomConfig, generate_phantom_dataset, make_phantom
from dltk_mm.io.preprocessing import (
    CropBox,
    PreprocessedVolume,
    PreprocessingConfig,
    preprocess_manifest,
    preprocess_volume,
    restore_probabilities_to_source,
    restore_to_source,
)
from dltk_mm.io.readers import Volume, read_geometry, read_image, read_volume, write_volume

__all__ = [
    "PRESETS",
    "CropBox",
    "Geometry",
    "LabelPreset",
    "PhantomConfig",
    "PreprocessedVolume",
    "PreprocessingConfig",
    "Volume",
    "direction_from_orientation",
    "generate_phantom_dataset",
    "get_preset",
    "load_manifest",
    "make_phantom",
    "map_labels",
    "orientation_from_direction",
    "preprocess_manifest",
    "preprocess_volume",
    "read_geometry",
    "read_image",
    "read_volume",
    "restore_probabilities_to_source",
    "restore_to_source",
    "write_manifest",
    "write_volume",
]
