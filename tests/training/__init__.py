"""Tests of dltk_mm.training."""
