"""dltk_mm.inference: whole-volume segmentation from a patch-trained network."""

from dltk_mm.inference.segment import (
    InferenceConfig,
    Segmentation,
    StreamProbabilities,
    segment_volume,
)
from dltk_mm.inference.sliding_window import (
    count_windows,
    gaussian_weights,
    sliding_window_inference,
    window_starts,
)

__all__ = [
    "InferenceConfig",
    "Segmentation",
    "StreamProbabilities",
    "count_windows",
    "gaussian_weights",
    "segment_volume",
    "sliding_window_inference",
    "window_starts",
]
