"""dltk_mm.inference."""
