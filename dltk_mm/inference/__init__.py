"""dltk_mm.inference: whole-volume prediction from a patch-trained network."""

from dltk_mm.inference.sliding_window import (
    count_windows,
    gaussian_weights,
    sliding_window_inference,
    window_starts,
)

__all__ = ["count_windows", "gaussian_weights", "sliding_window_inference", "window_starts"]
