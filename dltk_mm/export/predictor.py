"""Prediction with a dltk_mm SavedModel export: the :class:`SavedModelPredictor`.

It is a :class:`~dltk_mm.inference.predictor.Predictor` like the Keras one, so ``dltk-mm-predict
--saved_model`` segments through the same path (:func:`~dltk_mm.inference.segment.segment_volume`)
with the export's ``serve_<modality>`` signatures as the stream -> probabilities function. The
preprocessing, window size and default segmentation settings (:attr:`SavedModelPredictor.inference`)
come from the export's metadata (:mod:`dltk_mm.export.metadata`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from dltk_mm.errors import InputDataError
from dltk_mm.export.metadata import read_export_metadata, signature_name
from dltk_mm.inference.predictor import Predictor


class SavedModelPredictor(Predictor):
    """Prediction with the ``serve_<modality>`` signatures of a dltk_mm SavedModel export.

    Attributes:
        metadata: the export's :class:`~dltk_mm.export.metadata.ExportMetadata`.
        inference: the segmentation settings the export was made with (its defaults).
    """

    def __init__(self, export_dir: str | os.PathLike) -> None:
        """Loads ``export_dir`` with ``tf.saved_model.load`` and reads its dltk_mm metadata.

        Raises:
            InputDataError: not a SavedModel, no dltk_mm metadata, or a missing signature.
        """
        export_dir = Path(export_dir).expanduser()
        metadata = read_export_metadata(export_dir)
        super().__init__(metadata.modalities, metadata.num_classes, metadata.preprocessing,
                         metadata.patch_size, metadata.size_factor, str(export_dir))
        self.metadata = metadata
        self.inference = metadata.inference
        self._loaded = tf.saved_model.load(str(export_dir))
        self._signatures = {}
        for modality in self.modalities:
            name = metadata.signatures.get(modality, signature_name(modality))
            if name not in self._loaded.signatures:
                raise InputDataError(
                    f"{export_dir}: the SavedModel has no signature {name!r} for modality "
                    f"{modality!r} (it has {sorted(self._loaded.signatures)}); re-export it with "
                    "dltk-mm-export"
                )
            self._signatures[modality] = self._loaded.signatures[name]

    def _probabilities(self, batch: np.ndarray, modality: str) -> Any:
        return self._signatures[modality](images=tf.constant(batch))["probabilities"]
