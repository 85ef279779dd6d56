"""dltk_mm.core."""
