"""Exceptions raised by dltk_mm.

Every error caused by the user's input derives from :class:`InputDataError`, whose message names the
offending file (or manifest row) and says how to fix it.
"""

from __future__ import annotations


class DltkMmError(Exception):
    """Base class of every dltk_mm error."""


class InputDataError(DltkMmError, ValueError):
    """Bad input data: a missing or unreadable file, mismatched grids, unknown labels, NaNs, ..."""


class ConfigurationError(DltkMmError, ValueError):
    """An invalid combination of options (an unknown scheme, modality, preset, ...)."""
