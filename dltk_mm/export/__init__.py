"""dltk_mm.export: trained models as TensorFlow SavedModels with one signature per modality."""

from dltk_mm.export.saved_model import (
    ExportMetadata,
    export_model_dir,
    export_saved_model,
    is_saved_model_dir,
    read_export_metadata,
    signature_name,
)

__all__ = [
    "ExportMetadata",
    "export_model_dir",
    "export_saved_model",
    "is_saved_model_dir",
    "read_export_metadata",
    "signature_name",
]
