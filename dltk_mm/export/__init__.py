"""dltk_mm.export."""
