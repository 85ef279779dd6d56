"""Image grid geometry: spacing, origin, direction and size in SimpleITK's (x, y, z) convention.

Coordinates follow ITK/DICOM: world space is LPS (+x towards the patient's left, +y towards the
posterior, +z towards the superior side). An orientation code such as ``"LPS"``, ``"RAS"`` or
``"LAS"`` names, for each image index axis (i, j, k), the anatomical direction in which that index
increases (SimpleITK's ``DICOMOrientImageFilter`` convention): an identity direction matrix is
``"LPS"``; NIfTI's usual "RAS+" storage reads as ``"RAS"`` or ``"LAS"`` here.

The preprocessed volumes of dltk_mm live on an identity-direction (``"LPS"``) grid, see
:mod:`dltk_mm.io.preprocessing` and Valindria et al., WACV 2018, section 4 (2 mm isotropic data).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk

from dltk_mm.errors import InputDataError

_AXIS_LETTERS = {"L": (0, 1.0), "R": (0, -1.0), "P": (1, 1.0), "A": (1, -1.0), "S": (2, 1.0),
                 "I": (2, -1.0)}


def direction_from_orientation(code: str) -> tuple[float, ...]:
    """Direction cosines (row-major 3x3, SimpleITK order) of an orientation code.

    Args:
        code: three letters from {L, R}, {P, A}, {S, I}, one per index axis, e.g. ``"RAS"``.

    Returns:
        The 9 direction cosines; column ``a`` is the world direction of index axis ``a``.

    Raises:
        InputDataError: if the code is not a valid orientation.
    """
    letters = code.strip().upper()
    if len(letters) != 3 or any(c not in _AXIS_LETTERS for c in letters):
        raise InputDataError(
            f"invalid orientation code {code!r}: use three letters, one of L/R, one of P/A and one "
            "of S/I (e.g. 'LPS', 'RAS', 'LAS')"
        )
    matrix = np.zeros((3, 3))
    used = set()
    for column, letter in enumerate(letters):
        world_axis, sign = _AXIS_LETTERS[letter]
        used.add(world_axis)
        matrix[world_axis, column] = sign
    if len(used) != 3:
        raise InputDataError(
            f"invalid orientation code {code!r}: each of the L/R, P/A and S/I axes must appear once"
        )
    return tuple(float(v) for v in matrix.ravel())


def orientation_from_direction(direction: Sequence[float]) -> str:
    """The closest orientation code (e.g. ``"LAS"``) of a 3x3 direction matrix (row-major)."""
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    letters = []
    for column in range(3):
        world_axis = int(np.argmax(np.abs(matrix[:, column])))
        positive = matrix[world_axis, column] > 0
        letters.append(("L", "P", "S")[world_axis] if positive else ("R", "A", "I")[world_axis])
    return "".join(letters)


@dataclasses.dataclass(frozen=True)
class Geometry:
    """The grid of a 3D image in SimpleITK's convention.

    Attributes:
        spacing: voxel size in mm along the index axes (x, y, z).
        origin: world (LPS, mm) position of the centre of voxel (0, 0, 0).
        direction: row-major 3x3 direction cosines; column ``a`` is index axis ``a``'s direction.
        size: number of voxels along (x, y, z); a NumPy array of the image is ``size[::-1]``.
    """

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    size: tuple[int, int, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing", tuple(float(v) for v in self.spacing))
        object.__setattr__(self, "origin", tuple(float(v) for v in self.origin))
        object.__setattr__(self, "direction", tuple(float(v) for v in np.ravel(self.direction)))
        object.__setattr__(self, "size", tuple(int(v) for v in self.size))
        if len(self.spacing) != 3 or len(self.origin) != 3 or len(self.size) != 3:
            raise InputDataError(f"a 3D geometry needs 3 spacings, origins and sizes: {self}")
        if len(self.direction) != 9:
            raise InputDataError(f"a 3D geometry needs 9 direction cosines: {self.direction}")
        if any(s <= 0 for s in self.spacing):
            raise InputDataError(f"voxel spacing must be positive, got {self.spacing}")

    # ------------------------------------------------------------------ constructors / export
    @classmethod
    def from_image(cls, image: sitk.Image) -> Geometry:
        """The geometry of a 3D SimpleITK image."""
        if image.GetDimension() != 3:
            raise InputDataError(f"expected a 3D image, got {image.GetDimension()}D")
        return cls(image.GetSpacing(), image.GetOrigin(), image.GetDirection(), image.GetSize())

    @classmethod
    def from_reader(cls, reader: sitk.ImageFileReader) -> Geometry:
        """The geometry from a reader after ``ReadImageInformation()`` (header only)."""
        return cls(reader.GetSpacing()[:3], reader.GetOrigin()[:3],
                   np.asarray(reader.GetDirection()).reshape(reader.GetDimension(), -1)[:3, :3],
                   reader.GetSize()[:3])

    @classmethod
    def from_orientation(cls, orientation: str, spacing: Sequence[float],
                         origin: Sequence[float], size: Sequence[int]) -> Geometry:
        """A geometry whose direction is given by an orientation code (e.g. ``"RAS"``)."""
        return cls(tuple(spacing), tuple(origin), direction_from_orientation(orientation),
                   tuple(size))

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        """Sets spacing, origin and direction on ``image`` (in place; sizes must agree).

        Returns:
            The same image, for chaining.
        """
        if tuple(image.GetSize()) != self.size:
            raise InputDataError(
                f"cannot apply geometry of size {self.size} to an image of size {image.GetSize()}"
            )
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def image_from_array(self, array_zyx: np.ndarray, is_vector: bool = False) -> sitk.Image:
        """A SimpleITK image of a (z, y, x) array on this grid."""
        image = sitk.GetImageFromArray(array_zyx, isVector=is_vector)
        return self.apply_to(image)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return {"spacing": list(self.spacing), "origin": list(self.origin),
                "direction": list(self.direction), "size": list(self.size)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Geometry:
        """The inverse of :meth:`to_dict`."""
        return cls(tuple(data["spacing"]), tuple(data["origin"]), tuple(data["direction"]),
                   tuple(data["size"]))

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Geometry:
        """The inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    # ------------------------------------------------------------------ properties
    @property
    def shape(self) -> tuple[int, int, int]:
        """NumPy (z, y, x) shape of an array on this grid."""
        return self.size[::-1]

    @property
    def direction_matrix(self) -> np.ndarray:
        """The 3x3 direction matrix."""
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def orientation(self) -> str:
        """The orientation code, e.g. ``"LPS"`` for an identity direction."""
        return orientation_from_direction(self.direction)

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm^3."""
        return float(np.prod(self.spacing))

    @property
    def physical_extent_mm(self) -> tuple[float, float, float]:
        """Edge-to-edge extent along the index axes (size times spacing)."""
        return tuple(float(n * s) for n, s in zip(self.size, self.spacing, strict=True))

    def index_to_physical(self, index_xyz: np.ndarray | Sequence[float]) -> np.ndarray:
        """World (LPS) points of continuous indices (x, y, z); accepts shape (3,) or (N, 3)."""
        index = np.asarray(index_xyz, dtype=float)
        scaled = index * np.asarray(self.spacing)
        return np.asarray(self.origin) + scaled @ self.direction_matrix.T

    def physical_to_index(self, points: np.ndarray | Sequence[float]) -> np.ndarray:
        """Continuous indices (x, y, z) of world points; accepts shape (3,) or (N, 3)."""
        points = np.asarray(points, dtype=float)
        local = (points - np.asarray(self.origin)) @ self.direction_matrix
        return local / np.asarray(self.spacing)

    def world_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned world bounding box (min, max) of the voxel edges (indices -0.5, n-0.5)."""
        corners = np.array([[i, j, k] for i in (-0.5, self.size[0] - 0.5)
                            for j in (-0.5, self.size[1] - 0.5)
                            for k in (-0.5, self.size[2] - 0.5)])
        world = self.index_to_physical(corners)
        return world.min(axis=0), world.max(axis=0)

    # ------------------------------------------------------------------ comparison
    def grid_differences(self, other: Geometry, tol: float = 1e-3) -> list[str]:
        """Human-readable list of the ways two grids differ (empty when they agree).

        Args:
            other: the grid to compare with.
            tol: relative tolerance: spacings may differ by ``tol`` times the spacing, origins by
                ``tol`` times the largest spacing, direction cosines by ``tol``.
        """
        problems = []
        if self.size != other.size:
            problems.append(f"size {self.size} vs {other.size}")
        spacing_a, spacing_b = np.asarray(self.spacing), np.asarray(other.spacing)
        if np.any(np.abs(spacing_a - spacing_b) > tol * np.maximum(spacing_a, spacing_b)):
            problems.append(f"spacing {_fmt(self.spacing)} vs {_fmt(other.spacing)}")
        scale = max(max(self.spacing), max(other.spacing))
        if np.any(np.abs(np.asarray(self.origin) - np.asarray(other.origin)) > tol * scale):
            problems.append(f"origin {_fmt(self.origin)} vs {_fmt(other.origin)}")
        if np.any(np.abs(self.direction_matrix - other.direction_matrix) > tol):
            problems.append(f"direction {self.orientation} {_fmt(self.direction)} vs "
                            f"{other.orientation} {_fmt(other.direction)}")
        return problems

    def same_grid(self, other: Geometry, tol: float = 1e-3) -> bool:
        """Whether two grids agree within ``tol`` (see :meth:`grid_differences`)."""
        return not self.grid_differences(other, tol)

    def describe(self) -> str:
        """A one-line summary: size, spacing, orientation."""
        return (f"{'x'.join(str(n) for n in self.size)} voxels, "
                f"{'x'.join(f'{s:.3g}' for s in self.spacing)} mm, {self.orientation}")


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
