"""The description an export carries besides its graph: ``assets/dltk_mm_export.json``.

It holds ``format`` (``"dltk_mm.saved_model"``), ``format_version``, ``dltk_mm_version``,
``modalities`` (the model's ordered tuple), ``signatures`` (modality -> patch signature name),
``num_classes``, ``patch_size`` (z, y, x) and ``size_factor`` (the stride product per axis),
``preprocessing`` (:class:`~dltk_mm.io.preprocessing.PreprocessingConfig` as a dict: the exact
settings used in training), ``inference`` (:class:`~dltk_mm.inference.segment.InferenceConfig` as
a dict: overlap, blending, mirroring (its axes and kidney swap) and post-processing the export was
made for, the defaults of ``dltk-mm-predict --saved_model`` and the settings of its
``segment_<modality>`` signatures; keys an older export lacks take their defaults), ``scheme``
and ``build_config`` (the :func:`~dltk_mm.networks.build_multistream` arguments), and any
``extra`` information given.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dltk_mm.errors import InputDataError
from dltk_mm.inference.segment import InferenceConfig
from dltk_mm.io.preprocessing import PreprocessingConfig

EXPORT_METADATA_FILE = "dltk_mm_export.json"
EXPORT_FORMAT = "dltk_mm.saved_model"
#: 2: built on keras.export.ExportArchive, with ``inference``; 1 (readable): without it.
EXPORT_FORMAT_VERSION = 2


def signature_name(modality: str) -> str:
    """The patch serving signature of ``modality`` (``"serve_ct"`` for ``"ct"``)."""
    return f"serve_{modality}"


def segment_signature_name(modality: str) -> str:
    """The whole-volume serving signature of ``modality`` (``"segment_ct"`` for ``"ct"``)."""
    return f"segment_{modality}"


def metadata_path(export_dir: str | os.PathLike) -> Path:
    """The dltk_mm metadata file of an export: ``<export_dir>/assets/dltk_mm_export.json``."""
    return Path(export_dir) / "assets" / EXPORT_METADATA_FILE


def is_saved_model_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory holding a TensorFlow SavedModel (``saved_model.pb``)."""
    path = Path(path)
    return path.is_dir() and (
        (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file()
    )


def triple(values: int | Sequence[int]) -> tuple[int, int, int]:
    """Three sizes ``(z, y, x)`` from one size or three.

    Raises:
        ValueError: when ``values`` has neither one nor three entries.
    """
    if isinstance(values, (int, np.integer)):
        return (int(values),) * 3
    sizes = tuple(int(v) for v in values)
    if len(sizes) == 1:
        sizes = sizes * 3
    if len(sizes) != 3:
        raise ValueError(f"expected 3 sizes (z, y, x), got {values!r}")
    return sizes


def size_factor_of(build_config: Mapping[str, Any]) -> tuple[int, int, int]:
    """Product of the network's strides per axis (z, y, x) from its build config."""
    factor = [1, 1, 1]
    for stride in build_config.get("strides", (1, 2, 2, 2, 1)):
        for axis, value in enumerate(triple(stride)):
            factor[axis] *= value
    return (factor[0], factor[1], factor[2])


@dataclasses.dataclass(frozen=True)
class ExportMetadata:
    """What a predictor needs besides the SavedModel graph (``assets/dltk_mm_export.json``).

    Attributes:
        modalities: the model's ordered modalities.
        num_classes: number of classes (background included).
        patch_size: training patch size ``(z, y, x)``, the default sliding window.
        size_factor: product of the network's strides per axis; window sizes must be multiples.
        preprocessing: the preprocessing used in training.
        scheme: the training scheme (``"individual"``, ``"v4"``, ...).
        build_config: the :func:`~dltk_mm.networks.build_multistream` arguments.
        dltk_mm_version: the dltk_mm version that wrote the export.
        signatures: modality -> patch serving signature name.
        segment_signatures: modality -> whole-volume serving signature name (none in exports
            of format 1).
        inference: how whole volumes are segmented with this export by default.
        extra: free-form additional information (e.g. the training run's model_dir).
    """

    modalities: tuple[str, ...]
    num_classes: int
    patch_size: tuple[int, int, int]
    size_factor: tuple[int, int, int]
    preprocessing: PreprocessingConfig
    scheme: str
    build_config: dict[str, Any]
    dltk_mm_version: str
    signatures: dict[str, str]
    segment_signatures: dict[str, str] = dataclasses.field(default_factory=dict)
    inference: InferenceConfig = dataclasses.field(default_factory=InferenceConfig)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-serialisable content of ``dltk_mm_export.json``."""
        return {
            "format": EXPORT_FORMAT,
            "format_version": EXPORT_FORMAT_VERSION,
            "dltk_mm_version": self.dltk_mm_version,
            "modalities": list(self.modalities),
            "signatures": dict(self.signatures),
            "segment_signatures": dict(self.segment_signatures),
            "num_classes": self.num_classes,
            "patch_size": list(self.patch_size),
            "size_factor": list(self.size_factor),
            "preprocessing": self.preprocessing.to_dict(),
            "inference": self.inference.to_dict(),
            "scheme": self.scheme,
            "build_config": self.build_config,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> ExportMetadata:
        """Parses ``dltk_mm_export.json`` content; ``source`` names the file in errors.

        Raises:
            InputDataError: another format, a newer format version, or missing/invalid fields.
        """
        if data.get("format") != EXPORT_FORMAT:
            raise InputDataError(
                f"{source}: not a dltk_mm export description (format {data.get('format')!r}, "
                f"expected {EXPORT_FORMAT!r}); re-export the model with dltk-mm-export"
            )
        if int(data.get("format_version", -1)) > EXPORT_FORMAT_VERSION:
            raise InputDataError(
                f"{source}: export format version {data.get('format_version')} is newer than this "
                f"dltk_mm understands ({EXPORT_FORMAT_VERSION}); upgrade dltk_mm"
            )
        try:
            return cls(
                modalities=tuple(str(m) for m in data["modalities"]),
                num_classes=int(data["num_classes"]),
                patch_size=triple(data["patch_size"]),
                size_factor=triple(data["size_factor"]),
                preprocessing=PreprocessingConfig.from_dict(dict(data["preprocessing"])),
                scheme=str(data.get("scheme", "")),
                build_config=dict(data.get("build_config", {})),
                dltk_mm_version=str(data.get("dltk_mm_version", "unknown")),
                signatures={str(k): str(v) for k, v in dict(data["signatures"]).items()},
                segment_signatures={str(k): str(v) for k, v in
                                    dict(data.get("segment_signatures", {})).items()},
                inference=InferenceConfig.from_dict(dict(data.get("inference", {}))),
                extra=dict(data.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InputDataError(
                f"{source}: incomplete or invalid dltk_mm export description ({error!r}); "
                "re-export the model with dltk-mm-export"
            ) from error


def read_export_metadata(export_dir: str | os.PathLike) -> ExportMetadata:
    """Reads ``<export_dir>/assets/dltk_mm_export.json``.

    Raises:
        InputDataError: if ``export_dir`` is not a SavedModel, or has no (valid) dltk_mm metadata.
    """
    export_dir = Path(export_dir)
    if not export_dir.exists():
        raise InputDataError(f"{export_dir}: SavedModel directory not found; check the path")
    if not is_saved_model_dir(export_dir):
        raise InputDataError(
            f"{export_dir}: is not a TensorFlow SavedModel (no saved_model.pb); give the folder "
            "written by dltk-mm-export"
        )
    path = metadata_path(export_dir)
    if not path.is_file():
        raise InputDataError(
            f"{export_dir}: SavedModel without dltk_mm metadata ({path} is missing), so its "
            "preprocessing and modalities are unknown; export the model with dltk-mm-export"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputDataError(
            f"{path}: cannot be read as JSON ({error}); re-export the model with dltk-mm-export"
        ) from error
    if not isinstance(data, dict):
        raise InputDataError(f"{path}: expected a JSON object; re-export with dltk-mm-export")
    return ExportMetadata.from_dict(data, source=str(path))
