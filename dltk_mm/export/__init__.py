"""dltk_mm.export: trained models as TensorFlow SavedModels (patch and whole-volume signatures).

Names are loaded on first use, so that :mod:`dltk_mm.export.destination` and
:mod:`dltk_mm.export.metadata` can be used without importing TensorFlow (fast refusals of
``dltk-mm-export``).
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "check_export_destination": "destination",
    "is_model_folder": "destination",
    "ExportMetadata": "metadata",
    "is_saved_model_dir": "metadata",
    "metadata_path": "metadata",
    "read_export_metadata": "metadata",
    "segment_signature_name": "metadata",
    "signature_name": "metadata",
    "SavedModelPredictor": "predictor",
    "export_model_dir": "saved_model",
    "export_saved_model": "saved_model",
    "verify_export": "saved_model",
}

__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module 'dltk_mm.export' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"dltk_mm.export.{_MODULES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULES))
