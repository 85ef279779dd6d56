"""dltk_mm.networks."""
