"""The grid a volume's header really describes: the NIfTI transform rule and orthonormal axes.

Two things ITK gets wrong or refuses, fixed here for every volume dltk_mm reads:

* **NIfTI qform and sform.** A NIfTI header holds two transforms. The NIfTI standard, nibabel and
  FSL use the sform when ``sform_code > 0``, else the qform when ``qform_code > 0``. ITK prefers
  the qform in several cases (e.g. ``sform_code`` 2-4 with a qform, or a sheared sform with a
  qform), so a file whose two transforms disagree was placed elsewhere in space than other tools
  place it. :func:`nifti_geometry` applies the standard's rule; the reader then uses that grid.
* **Direction cosines off orthonormal.** Rounding in the tools that wrote a header leaves the axes
  slightly non-orthogonal (ITK even refuses a NIfTI sform off by 1e-4). Within
  :data:`ORTHONORMAL_TOLERANCE` the axes are orthonormalised (the nearest rotation, with a warning
  giving the size of the change); beyond it the grid is sheared, which dltk_mm cannot represent,
  and the file is refused with the fix.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from absl import logging

from dltk_mm.errors import InputDataError
from dltk_mm.io.geometry import Geometry

#: Largest deviation of ``D^T D`` from the identity (D: the direction cosines) that is corrected
#: silently but for a warning: an angle error of about 0.06 degrees, under 0.5 mm across 500 mm.
ORTHONORMAL_TOLERANCE = 1e-3

#: Deviations up to this are the rounding of a header's float32 numbers: left as they are.
ROUNDING_DEVIATION = 1e-6

#: A qform and an sform that place the grid within this distance (mm, at any corner) agree.
SAME_GRID_MM = 0.01

_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def is_nifti(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a NIfTI file (``.nii`` or ``.nii.gz``)."""
    return Path(path).name.lower().endswith((".nii", ".nii.gz"))


def nifti_geometry(path: str | os.PathLike) -> Geometry | None:
    """The grid of a NIfTI file by the standard's rule, axes not yet checked for orthogonality.

    Warns, naming the file, when the header's qform and sform both apply and place the grid
    differently (by more than :data:`SAME_GRID_MM` at a corner).

    Args:
        path: a NIfTI file (only its header is read).

    Returns:
        The grid of the sform when ``sform_code > 0``, else of the qform when ``qform_code > 0``;
        None when both codes are 0 (the header then has no transform to follow).
    """
    import nibabel

    header = nibabel.load(str(path)).header
    size = tuple(int(n) for n in (tuple(header.get_data_shape()) + (1, 1, 1))[:3])
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    sform = geometry_from_affine(header.get_sform(), size) if sform_code > 0 else None
    qform = geometry_from_affine(header.get_qform(), size) if qform_code > 0 else None
    if sform is not None and qform is not None:
        distance = grid_distance_mm(sform, qform)
        if distance > SAME_GRID_MM:
            logging.warning(
                "%s: the NIfTI qform and sform disagree (by up to %.3g mm); using the sform "
                "(code %d), as the NIfTI standard, nibabel and FSL do", path, distance, sform_code)
    return sform if sform is not None else qform


def geometry_from_affine(affine_ras: np.ndarray, size: tuple[int, int, int]) -> Geometry:
    """The ITK-convention geometry (LPS) of a NIfTI affine, axes not yet checked for orthogonality.

    Raises:
        InputDataError: when a voxel axis has zero length.
    """
    matrix = _LPS_FROM_RAS @ np.asarray(affine_ras, float)
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise InputDataError(f"the header's affine has a zero-length voxel axis: {affine_ras}")
    direction = matrix[:3, :3] / spacing
    return Geometry(tuple(spacing), tuple(matrix[:3, 3]), tuple(direction.ravel()), size)


def orthonormal_deviation(direction: tuple[float, ...]) -> float:
    """``max |D^T D - I|`` of row-major 3x3 direction cosines ``D``."""
    matrix = np.asarray(direction, float).reshape(3, 3)
    return float(np.abs(matrix.T @ matrix - np.eye(3)).max())


def orthonormalised(geometry: Geometry, path: str | os.PathLike,
                    tolerance: float = ORTHONORMAL_TOLERANCE) -> Geometry:
    """``geometry`` with orthonormal direction cosines (itself when they already are).

    Args:
        geometry: the grid read from ``path``'s header.
        path: the file, named in the warning and the error.
        tolerance: largest :func:`orthonormal_deviation` that is corrected.

    Returns:
        The geometry with the nearest rotation as its direction (a warning gives the change);
        ``geometry`` itself when it deviates by no more than :data:`ROUNDING_DEVIATION`.

    Raises:
        InputDataError: when the axes deviate by more than ``tolerance`` (a sheared grid).
    """
    deviation = orthonormal_deviation(geometry.direction)
    if deviation <= ROUNDING_DEVIATION:
        return geometry
    if deviation > tolerance:
        raise InputDataError(
            f"{path}: the voxel axes in the header are not orthogonal (direction cosines off "
            f"orthonormal by {deviation:.3g}, above the tolerance {tolerance:g}): the file "
            "describes a sheared or skewed grid, which dltk_mm cannot represent; re-save it with "
            "an orthonormal affine, e.g. by resampling it onto an orthogonal grid (3D Slicer, "
            "ANTs or nibabel.processing.resample_from_to)")
    matrix = np.asarray(geometry.direction, float).reshape(3, 3)
    left, _, right = np.linalg.svd(matrix)
    rotation = left @ right
    corrected = Geometry(geometry.spacing, geometry.origin, tuple(rotation.ravel()), geometry.size)
    logging.warning(
        "%s: direction cosines off orthonormal by %.2g (within the tolerance %g); using the "
        "nearest orthonormal axes (largest cosine change %.2g, at most %.3g mm at the far corner)",
        path, deviation, tolerance, float(np.abs(rotation - matrix).max()),
        grid_distance_mm(geometry, corrected))
    return corrected


def grid_distance_mm(first: Geometry, second: Geometry) -> float:
    """Largest distance (mm) between the world positions of the 8 corner voxels of two grids."""
    corners = np.array([[i, j, k] for i in (0, first.size[0] - 1) for j in (0, first.size[1] - 1)
                        for k in (0, first.size[2] - 1)], float)
    return float(np.linalg.norm(first.index_to_physical(corners)
                                - second.index_to_physical(corners), axis=-1).max())


def header_geometry(path: str | os.PathLike, itk_geometry: Geometry | None) -> Geometry:
    """The grid to use for a volume: the NIfTI rule's where it applies, axes orthonormal.

    Args:
        path: the volume file (or DICOM folder).
        itk_geometry: the grid ITK read, or None when ITK refused the header.

    Returns:
        The geometry of the file.

    Raises:
        InputDataError: for sheared axes (see :func:`orthonormalised`), or when neither ITK nor
            the NIfTI rule gives a grid.
    """
    geometry = nifti_geometry(path) if is_nifti(path) else None
    if geometry is None or (itk_geometry is not None
                            and grid_distance_mm(geometry, itk_geometry) <= SAME_GRID_MM):
        geometry = itk_geometry  # ITK read the grid the rule gives: keep its exact numbers
    if geometry is None:
        raise InputDataError(f"{path}: the header holds no usable voxel-to-world transform; "
                             "re-save the volume with a valid orientation")
    return orthonormalised(geometry, path)
