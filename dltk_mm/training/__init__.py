"""dltk_mm.training."""
