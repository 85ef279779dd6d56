"""dltk_mm.cli."""
