"""Warnings about volumes that read without error but are probably not what the user meant.

Each warning names the file and says what to check. They never stop a run: a blank label or an
image in other units can be deliberate, but usually it is the wrong file, the wrong preset or a
conversion that lost the scanner's rescaling.
"""

from __future__ import annotations

import os

import numpy as np
from absl import logging

#: Warn when more than this fraction of a CT's voxels lie below the clip value (-1000 HU).
CLIPPED_FRACTION_WARNING = 0.5

#: Warn when a CT's median is above this (HU): a body scan's median is air or soft tissue.
CT_MEDIAN_WARNING_HU = 1000.0


def warn_if_implausible_image(array: np.ndarray, path: str | os.PathLike, ct: bool,
                              ct_clip_min: float | None) -> None:
    """Warns about a constant image, and about a CT that does not look like Hounsfield units.

    Args:
        array: the image's voxel values as read.
        path: the image file, named in the warning.
        ct: whether the volume is a CT (its values should be in HU).
        ct_clip_min: the CT clip value of the preprocessing (-1000 HU), or None.
    """
    low, high = float(np.min(array)), float(np.max(array))
    if low == high:
        logging.warning("%s: the image is constant (every voxel is %g): it holds no anatomy; "
                        "check that the manifest points to the right file", path, low)
        return
    if not ct:
        return
    clipped = float(np.mean(array < ct_clip_min)) if ct_clip_min is not None else 0.0
    median = float(np.median(array))
    if clipped > CLIPPED_FRACTION_WARNING or median > CT_MEDIAN_WARNING_HU:
        logging.warning(
            "%s: a CT whose values do not look like Hounsfield units (%.0f %% of the voxels below "
            "%g HU, median %.4g, range [%.4g, %.4g]); check that the file stores HU (the DICOM "
            "rescale slope and intercept applied) and that it is a CT, not an MR typed as CT",
            path, 100 * clipped, ct_clip_min if ct_clip_min is not None else -1000.0, median,
            low, high)


def warn_if_empty_label(array: np.ndarray, path: str | os.PathLike, preset: str) -> None:
    """Warns when a label map, after its preset, holds no organ voxel.

    Args:
        array: the label map in the project's label ids.
        path: the label file, named in the warning.
        preset: the label preset that mapped it.
    """
    if not np.any(array):
        logging.warning(
            "%s: the label map holds no organ voxel after the '%s' preset (all background): the "
            "volume teaches the network nothing about the organs; check the label file and the "
            "label preset", path, preset)
