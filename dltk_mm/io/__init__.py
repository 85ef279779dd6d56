"""dltk_mm.io."""
