"""Synthetic abdominal CT-like and MR-like phantoms (unpaired), written as NIfTI plus a manifest.

They let the whole pipeline run on a fresh machine with no downloads. Each subject is drawn from
its own random seed, and CT and MR subjects are different subjects (unpaired, as in Valindria et
al., WACV 2018, section 4).

Anatomy (world coordinates LPS: +x patient's left, +y posterior, +z superior; sizes of an adult
abdomen in mm, multiplied by ``anatomy_scale`` (default 0.5, a half-size body so that default
volumes stay small) and by a random per-subject scale):

* body: a super-ellipse cross-section (half-width ~165 mm, half-depth ~115 mm, flatter at the
  back, slightly wider caudally) with a subcutaneous fat layer (12-28 mm) and an abdominal-wall
  muscle layer (8-14 mm); inside, a visceral cavity of mixed fat and bowel (smooth random texture);
* spine: a vertebral body (cortical shell, cancellous core, intervertebral discs every ~35 mm) in
  the posterior midline, a spinal canal and a spinous process behind it, paraspinal muscles on both
  sides and psoas muscles caudally; aorta (left-anterior of the spine) and inferior vena cava
  (right);
* liver (label 1) in the patient's right upper quadrant (negative x) with a left lobe crossing the
  midline; spleen (label 2) left, posterior-lateral; right (3) and left (4) kidneys posterior, on
  either side of the spine, each with cortex and medulla, the right one lower.

Every organ is an ellipsoid (two for the liver) with random centre (+-6 mm), semi-axes (+-12 %),
rotation (+-6 degrees) and a smooth random deformation (sums of low-frequency sinusoidal
displacements). Boundaries get a one-voxel linear partial-volume ramp; the label is the
half-occupancy surface.

Intensity models:

* CT, Hounsfield units: air -1000, fat -100, muscle 50, visceral mix -90..30, liver 60, spleen 45,
  kidney cortex 150 (contrast-enhanced) / medulla 40, cortical bone 700, cancellous bone 300, disc
  90, spinal canal 15, aorta 170, IVC 120; a faint smooth soft-tissue texture (+-8 HU) and Gaussian
  noise (sigma ``ct_noise_hu``, 12 HU); stored as int16.
* MR, T2-weighted-like arbitrary units: air 0, fat 800 (bright), muscle 120 (dark), visceral mix
  450..800, liver 250 (darker than spleen), spleen 550, kidney cortex 600 / medulla 750, cortical
  bone 30 (dark), marrow 350, disc 500, spinal canal (CSF) 950, aorta 60 (flow void), IVC 200; a
  smooth multiplicative bias field (``exp(a * f)``, ``f`` a smooth random field in [-1, 1],
  ``a = mr_bias_amplitude``) and Rician noise (magnitude of a complex signal with Gaussian noise of
  sigma ``mr_noise``); stored as float32.

Grids mimic scans: a fixed in-plane matrix (96 x 96) over a field of view a bit larger than the
body (spacing ~1.7-2 mm at the default half-size anatomy), thick slices (CT 2-3 mm, MR 3.5-4.5 mm,
i.e. the anisotropy of CT 0.8 x 0.8 x 2.5-5 mm and MR 1.5 x 1.5 x 6-8 mm scans of a full-size
body), a random table position, and orientations written into the header that differ per modality
(CT ``RAS``, MR ``LAS`` by default) so that readers and reorientation are exercised.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
from absl import logging

import dltk_mm
from dltk_mm.core.label_map import LABEL_NAMES
from dltk_mm.errors import ConfigurationError, InputDataError
from dltk_mm.io.geometry import Geometry, direction_from_orientation
from dltk_mm.io.labels import get_preset
from dltk_mm.io.manifest import write_manifest
from dltk_mm.io.readers import write_volume

MARKER_FILE = "phantoms.json"
GENERATOR_NAME = "dltk_mm.io.phantoms"


def _ct_tissues() -> dict[str, float]:
    return {"air": -1000.0, "fat": -100.0, "muscle": 50.0, "visceral_low": -90.0,
            "visceral_high": 30.0, "liver": 60.0, "spleen": 45.0, "kidney_cortex": 150.0,
            "kidney_medulla": 40.0, "bone_cortex": 700.0, "bone_cancellous": 300.0,
            "disc": 90.0, "canal": 15.0, "aorta": 170.0, "ivc": 120.0, "texture": 8.0}


def _mr_tissues() -> dict[str, float]:
    return {"air": 0.0, "fat": 800.0, "muscle": 120.0, "visceral_low": 450.0,
            "visceral_high": 800.0, "liver": 250.0, "spleen": 550.0, "kidney_cortex": 600.0,
            "kidney_medulla": 750.0, "bone_cortex": 30.0, "bone_cancellous": 350.0,
            "disc": 500.0, "canal": 950.0, "aorta": 60.0, "ivc": 200.0, "texture": 30.0}


@dataclasses.dataclass(frozen=True)
class PhantomConfig:
    """Options of the phantom generator (see the module docstring for the models).

    Attributes:
        anatomy_scale: size of the body relative to an adult (0.5 = half size).
        matrix: in-plane voxels (x and y) per modality.
        slice_mm: (min, max) slice thickness in mm per modality, drawn per subject.
        fov_margin: in-plane field of view as a multiple of the body width.
        z_range_mm: (inferior, superior) limits of the scanned range, adult mm around the kidneys.
        orientation: orientation code written into the header, per modality.
        ct_noise_hu: CT Gaussian noise sigma in HU.
        mr_noise: MR Rician noise sigma (MR units).
        mr_bias_amplitude: amplitude ``a`` of the MR bias field ``exp(a * f)``.
        label_preset: write labels in this preset's ids (``identity``: the project map).
        ct_tissues: CT tissue values (HU).
        mr_tissues: MR tissue values.
    """

    anatomy_scale: float = 0.5
    matrix: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: {"ct": 96, "mr": 96})
    slice_mm: Mapping[str, tuple[float, float]] = dataclasses.field(
        default_factory=lambda: {"ct": (2.0, 3.0), "mr": (3.5, 4.5)})
    fov_margin: float = 1.12
    z_range_mm: tuple[float, float] = (-95.0, 150.0)
    orientation: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: {"ct": "RAS", "mr": "LAS"})
    ct_noise_hu: float = 12.0
    mr_noise: float = 20.0
    mr_bias_amplitude: float = 0.25
    label_preset: str = "identity"
    ct_tissues: Mapping[str, float] = dataclasses.field(default_factory=_ct_tissues)
    mr_tissues: Mapping[str, float] = dataclasses.field(default_factory=_mr_tissues)

    def __post_init__(self) -> None:
        if self.anatomy_scale <= 0:
            raise ConfigurationError(f"anatomy_scale must be > 0, got {self.anatomy_scale}")
        for modality in ("ct", "mr"):
            if modality not in self.matrix or modality not in self.slice_mm \
                    or modality not in self.orientation:
                raise ConfigurationError(f"phantom matrix, slice_mm and orientation need an "
                                         f"entry for '{modality}'")
            direction_from_orientation(self.orientation[modality])
        get_preset(self.label_preset)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict."""
        data = dataclasses.asdict(self)
        return json.loads(json.dumps(data))


@dataclasses.dataclass
class Phantom:
    """One synthetic subject.

    Attributes:
        subject_id: id.
        modality: ``"ct"`` or ``"mr"``.
        image: SimpleITK image in the header orientation of ``config.orientation[modality]``.
        label: uint8 label image on the same grid (project map unless another preset was asked).
        body_centre: world (LPS) position of the body axis at the kidney level.
        organ_centres: world (LPS) centres of the drawn organ ellipsoids, by label name.
    """

    subject_id: str
    modality: str
    image: sitk.Image
    label: sitk.Image
    body_centre: tuple[float, float, float]
    organ_centres: dict[str, tuple[float, float, float]]


class _Grid:
    """An identity-direction (LPS) grid with broadcastable world coordinates (body-centred)."""

    def __init__(self, size_xyz: tuple[int, int, int], spacing: tuple[float, float, float],
                 first_voxel: np.ndarray) -> None:
        self.size = size_xyz
        self.spacing = np.asarray(spacing, dtype=float)
        self.first = np.asarray(first_voxel, dtype=float)  # anatomical coords of voxel 0
        nx, ny, nz = size_xyz
        self.x = (self.first[0] + np.arange(nx) * spacing[0]).astype(np.float32)
        self.y = (self.first[1] + np.arange(ny) * spacing[1]).astype(np.float32)
        self.z = (self.first[2] + np.arange(nz) * spacing[2]).astype(np.float32)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.size[::-1]

    def region(self, centre: np.ndarray, radius: float) -> tuple[tuple[slice, ...], tuple]:
        """Slices (z, y, x) of the box centre +- radius and its coordinates (broadcastable)."""
        slices = []
        for axis, coords in ((2, self.z), (1, self.y), (0, self.x)):
            low = np.searchsorted(coords, centre[axis] - radius)
            high = np.searchsorted(coords, centre[axis] + radius, side="right")
            slices.append(slice(int(low), int(max(high, low))))
        sz, sy, sx = slices
        coords = (self.x[sx][None, None, :], self.y[sy][None, :, None], self.z[sz][:, None, None])
        return (sz, sy, sx), coords


def _rotation(rng: np.random.Generator, base_deg: tuple[float, float, float],
              jitter_deg: float) -> np.ndarray:
    angles = np.radians(np.asarray(base_deg) + rng.normal(0.0, jitter_deg, 3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rot_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rot_z @ rot_y @ rot_x


@dataclasses.dataclass
class _Ellipsoid:
    centre: np.ndarray
    semi: np.ndarray
    rotation: np.ndarray
    warp: list[tuple[int, int, float, float, float]]  # axis, along, amplitude, wavenumber, phase

    @classmethod
    def random(cls, rng: np.random.Generator, centre: tuple[float, float, float],
               semi: tuple[float, float, float], scale: float,
               angles_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> _Ellipsoid:
        centre_mm = (np.asarray(centre) + rng.normal(0.0, 6.0, 3)) * scale
        semi_mm = np.asarray(semi) * rng.uniform(0.88, 1.12, 3) * scale
        warp = []
        for axis in range(3):
            for along in rng.choice(3, size=2, replace=False):
                wavelength = rng.uniform(60.0, 140.0) * scale
                amplitude = rng.uniform(0.04, 0.1) * float(semi_mm.min())
                warp.append((axis, int(along), amplitude, 2 * np.pi / wavelength,
                             rng.uniform(0, 2 * np.pi)))
        return cls(centre_mm, semi_mm, _rotation(rng, angles_deg, 6.0), warp)

    def scaled(self, factor: float) -> _Ellipsoid:
        return _Ellipsoid(self.centre, self.semi * factor, self.rotation, self.warp)

    def signed_distance(self, coords: tuple) -> np.ndarray:
        """Approximate signed distance (mm, negative inside) on broadcast coordinates."""
        x, y, z = coords
        point = [x - self.centre[0], y - self.centre[1], z - self.centre[2]]
        shape = np.broadcast_shapes(x.shape, y.shape, z.shape)
        displaced = [np.broadcast_to(p, shape).astype(np.float32) for p in point]
        for axis, along, amplitude, wavenumber, phase in self.warp:
            # separable warp: a 1D sinusoid of one world coordinate, broadcast over the others
            displaced[axis] = displaced[axis] + amplitude * np.sin(
                wavenumber * coords[along] + phase).astype(np.float32)
        quadratic = np.zeros(shape, dtype=np.float32)
        for k in range(3):
            local = (self.rotation[0, k] * displaced[0] + self.rotation[1, k] * displaced[1]
                     + self.rotation[2, k] * displaced[2])
            quadratic += (local / self.semi[k]) ** 2
        return (np.sqrt(quadratic) - 1.0) * float(self.semi.min())

    @property
    def radius(self) -> float:
        return float(self.semi.max()) * 1.25 + 2.0


def _interpolation_matrix(fine: int, coarse: int) -> np.ndarray:
    """(fine, coarse) weights of a C1 (smoothstep-eased linear) interpolation."""
    weights = np.zeros((fine, coarse), dtype=np.float32)
    if coarse == 1:
        weights[:, 0] = 1.0
        return weights
    position = np.linspace(0.0, coarse - 1.0, fine)
    low = np.minimum(np.floor(position).astype(int), coarse - 2)
    fraction = position - low
    eased = fraction * fraction * (3.0 - 2.0 * fraction)
    rows = np.arange(fine)
    weights[rows, low] = 1.0 - eased
    weights[rows, low + 1] = eased
    return weights


def _smooth_field(rng: np.random.Generator, shape_zyx: tuple[int, int, int],
                  coarse_zyx: tuple[int, int, int]) -> np.ndarray:
    """A smooth random field in about [-1, 1] (separable eased interpolation of coarse noise)."""
    coarse = rng.uniform(-1.0, 1.0, coarse_zyx).astype(np.float32)
    wz, wy, wx = (_interpolation_matrix(n, c) for n, c in zip(shape_zyx, coarse_zyx, strict=True))
    field = np.einsum("abc,za,yb,xc->zyx", coarse, wz, wy, wx, optimize=True)
    peak = float(np.abs(field).max()) or 1.0
    return (field / peak).astype(np.float32)


def _blend(target: np.ndarray, value: np.ndarray | float, occupancy: np.ndarray,
           where: tuple[slice, ...]) -> None:
    region = target[where]
    region += occupancy * (value - region)


def _occupancy(distance: np.ndarray, ramp_mm: float) -> np.ndarray:
    return np.clip(0.5 - distance / ramp_mm, 0.0, 1.0).astype(np.float32)


@dataclasses.dataclass
class _Canvas:
    """A phantom being painted: its grid, arrays and the random state shared by the steps."""

    rng: np.random.Generator
    grid: _Grid
    tissues: dict[str, float]
    scale: float
    image: np.ndarray
    label: np.ndarray
    texture: np.ndarray | float = 0.0
    cavity: np.ndarray | float = 1.0

    @property
    def ramp(self) -> float:
        """Width of the partial-volume edge of every shape: one in-plane voxel."""
        return float(self.grid.spacing[0])

    def coordinates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable world coordinates x, y, z of the voxels (body-centred)."""
        return (self.grid.x[None, None, :], self.grid.y[None, :, None],
                self.grid.z[:, None, None])


def _phantom_grid(rng: np.random.Generator, config: PhantomConfig, modality: str,
                  scale: float) -> tuple[_Grid, tuple[float, float, float, float]]:
    """The subject's scan grid and body size (half width, half depth, fat and wall thickness)."""
    half_width = 165.0 * rng.uniform(0.9, 1.1)
    half_depth = 115.0 * rng.uniform(0.9, 1.1)
    fat_mm = rng.uniform(12.0, 28.0)
    wall_mm = rng.uniform(8.0, 14.0)
    matrix = int(config.matrix[modality])
    fov = 2.0 * half_width * 1.1 * scale * config.fov_margin
    in_plane = fov / matrix
    thickness = rng.uniform(*config.slice_mm[modality])
    z_low, z_high = (v * scale for v in config.z_range_mm)
    z_low += rng.normal(0.0, 8.0) * scale
    z_high += rng.normal(0.0, 8.0) * scale
    num_slices = max(4, int(round((z_high - z_low) / thickness)))
    shift_xy = rng.normal(0.0, 5.0, 2) * scale
    first = np.array([-(matrix - 1) / 2 * in_plane + shift_xy[0],
                      -(matrix - 1) / 2 * in_plane + shift_xy[1], z_low + thickness / 2])
    grid = _Grid((matrix, matrix, num_slices), (in_plane, in_plane, thickness), first)
    return grid, (half_width, half_depth, fat_mm, wall_mm)


def _paint_trunk(canvas: _Canvas, half_width: float, half_depth: float, fat_mm: float,
                 wall_mm: float) -> None:
    """Fat, muscle wall and the visceral cavity (a super-ellipse, flatter posteriorly)."""
    x2, y2, z2 = canvas.coordinates()
    scale, tissues, shape = canvas.scale, canvas.tissues, canvas.grid.shape
    widen = 1.0 + 0.06 * np.clip(-z2 / (150.0 * scale), -1.0, 1.0)
    a = (half_width * scale * widen).astype(np.float32)
    b = (np.where(y2 > 0, 0.9, 1.0) * half_depth * scale).astype(np.float32)
    exponent = 2.4

    def body_distance(inset_mm: float) -> np.ndarray:
        aa, bb = np.maximum(a - inset_mm * scale, 1.0), np.maximum(b - inset_mm * scale, 1.0)
        level = (np.abs(x2) / aa) ** exponent + (np.abs(y2) / bb) ** exponent
        return (level ** (1.0 / exponent) - 1.0) * np.minimum(aa, bb)

    everywhere = (slice(None),) * 3
    canvas.texture = _smooth_field(canvas.rng, shape, (4, 8, 8)) * tissues["texture"]
    _blend(canvas.image, tissues["fat"], _occupancy(body_distance(0.0), canvas.ramp), everywhere)
    _blend(canvas.image, tissues["muscle"] + canvas.texture,
           _occupancy(body_distance(fat_mm), canvas.ramp), everywhere)
    canvas.cavity = _occupancy(body_distance(fat_mm + wall_mm), canvas.ramp)
    mix = 0.5 + 0.5 * _smooth_field(canvas.rng, shape, (8, 12, 12))
    visceral = tissues["visceral_low"] + mix * (tissues["visceral_high"] - tissues["visceral_low"])
    _blend(canvas.image, visceral, canvas.cavity, everywhere)


def _paint_spine(canvas: _Canvas, half_depth: float) -> float:
    """Spine, back muscles, psoas, aorta and IVC (2-D shapes extruded along z).

    Returns:
        The y coordinate of the vertebral bodies (the kidneys are placed from it).
    """
    x2, y2, z2 = canvas.coordinates()
    scale, tissues, shape, image = canvas.scale, canvas.tissues, canvas.grid.shape, canvas.image
    back = 0.9 * half_depth
    y_vb = back - 62.0 + canvas.rng.normal(0.0, 3.0)

    def column(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        level = ((x2 - cx * scale) / (rx * scale)) ** 2 + ((y2 - cy * scale) / (ry * scale)) ** 2
        distance = (np.sqrt(level) - 1.0) * min(rx, ry) * scale
        return np.broadcast_to(_occupancy(distance, canvas.ramp), shape)

    everywhere = (slice(None),) * 3
    muscle = tissues["muscle"] + canvas.texture
    for side in (-1.0, 1.0):
        _blend(image, muscle, column(side * 40.0, y_vb + 38.0, 30.0, 20.0), everywhere)
        psoas = column(side * 34.0, y_vb - 4.0, 15.0, 15.0) * np.clip(
            (20.0 * scale - z2) / (40.0 * scale), 0.0, 1.0)
        _blend(image, muscle, psoas, everywhere)
    level_period = 35.0 * scale
    disc = (np.mod(z2 - canvas.rng.uniform(0, level_period), level_period) < 0.25 * level_period)
    marrow = np.where(disc, tissues["disc"], tissues["bone_cancellous"]).astype(np.float32)
    for value, (cx, cy, rx, ry) in (
            (tissues["bone_cortex"], (0.0, y_vb, 22.0, 18.0)), (marrow, (0.0, y_vb, 17.0, 13.0)),
            (tissues["bone_cortex"], (0.0, y_vb + 36.0, 7.0, 13.0)),
            (tissues["canal"], (0.0, y_vb + 25.0, 8.0, 7.0)),
            (tissues["aorta"], (16.0, y_vb - 30.0, 11.0, 11.0)),
            (tissues["ivc"], (-22.0, y_vb - 28.0, 14.0, 10.0))):
        _blend(image, value, column(cx, cy, rx, ry), everywhere)
    return y_vb


def _draw_organ(canvas: _Canvas, shapes: list[_Ellipsoid], value: float | np.ndarray,
                organ: int) -> None:
    """Paints the union of ``shapes`` inside the cavity and labels it ``organ``."""
    centre = np.mean([s.centre for s in shapes], axis=0)
    radius = max(np.linalg.norm(s.centre - centre) + s.radius for s in shapes)
    where, coords = canvas.grid.region(centre, radius)
    if any(s.stop <= s.start for s in where):
        return
    distance = np.minimum.reduce([s.signed_distance(coords) for s in shapes])
    occupancy = _occupancy(distance, canvas.ramp) * canvas.cavity[where]
    local_value = value[where] if isinstance(value, np.ndarray) else value
    _blend(canvas.image, local_value, occupancy, where)
    label_region = canvas.label[where]
    label_region[occupancy >= 0.5] = organ


def _paint_organs(canvas: _Canvas, y_vb: float) -> dict[str, np.ndarray]:
    """Liver, spleen and kidneys (later ones win where they touch); returns their centres."""
    rng, scale, tissues, texture = canvas.rng, canvas.scale, canvas.tissues, canvas.texture
    right_kidney_z = rng.uniform(-25.0, -5.0)
    liver_main = _Ellipsoid.random(rng, (-50.0, -15.0, 55.0), (80.0, 75.0, 75.0), scale,
                                   (0.0, 0.0, 10.0))
    liver_left = _Ellipsoid.random(rng, (15.0, -45.0, 75.0), (55.0, 35.0, 38.0), scale,
                                   (0.0, 0.0, -15.0))
    spleen = _Ellipsoid.random(rng, (85.0, 22.0, 55.0), (30.0, 52.0, 52.0), scale,
                               (0.0, 0.0, 40.0))
    kidneys = {
        3: _Ellipsoid.random(rng, (-66.0, y_vb + 8.0, right_kidney_z), (26.0, 22.0, 52.0),
                             scale, (0.0, 12.0, 25.0)),
        4: _Ellipsoid.random(rng, (66.0, y_vb + 8.0, right_kidney_z + rng.uniform(10.0, 25.0)),
                             (26.0, 22.0, 52.0), scale, (0.0, -12.0, -25.0)),
    }
    _draw_organ(canvas, [liver_main, liver_left], tissues["liver"] + texture, 1)
    _draw_organ(canvas, [spleen], tissues["spleen"] + texture, 2)
    for organ, kidney in kidneys.items():
        _draw_organ(canvas, [kidney], tissues["kidney_cortex"] + texture, organ)
        medulla = kidney.scaled(0.62)
        where, coords = canvas.grid.region(medulla.centre, medulla.radius)
        occupancy = _occupancy(medulla.signed_distance(coords), canvas.ramp) * canvas.cavity[where]
        _blend(canvas.image, tissues["kidney_medulla"] + texture[where], occupancy, where)
    return {"liver": liver_main.centre, "spleen": spleen.centre,
            "right_kidney": kidneys[3].centre, "left_kidney": kidneys[4].centre}


def _scanner_pixels(canvas: _Canvas, modality: str, config: PhantomConfig) -> np.ndarray:
    """Stored voxel values: CT with noise as int16 HU, MR magnitude with bias and Rician noise."""
    rng, image, shape = canvas.rng, canvas.image, canvas.grid.shape
    if modality == "ct":
        image += rng.normal(0.0, config.ct_noise_hu, shape).astype(np.float32)
        return np.clip(np.round(image), -1024, 3071).astype(np.int16)
    bias = np.exp(config.mr_bias_amplitude * _smooth_field(rng, shape, (3, 3, 3)))
    signal = image * bias.astype(np.float32)
    real = signal + rng.normal(0.0, config.mr_noise, shape).astype(np.float32)
    imaginary = rng.normal(0.0, config.mr_noise, shape).astype(np.float32)
    return np.sqrt(real * real + imaginary * imaginary).astype(np.float32)


def _in_preset(label: np.ndarray, preset_name: str) -> np.ndarray:
    """Project label ids -> the ids of a data set's preset (the identity for ``identity``)."""
    preset = get_preset(preset_name)
    if preset.name == "identity":
        return label
    lookup = np.zeros(len(LABEL_NAMES), dtype=np.uint8)
    for project_id, source_id in preset.inverse().items():
        lookup[project_id] = source_id
    return lookup[label]


def make_phantom(modality: str, seed: int | np.random.SeedSequence, subject_id: str | None = None,
                 config: PhantomConfig | None = None) -> Phantom:
    """Draws one synthetic subject.

    Args:
        modality: ``"ct"`` or ``"mr"``.
        seed: random seed (an int or a ``np.random.SeedSequence``) of this subject's anatomy,
            grid and noise.
        subject_id: id (default ``phantom_<modality>``).
        config: generator options (defaults when None).

    Returns:
        The :class:`Phantom` (image and label as SimpleITK images).
    """
    config = config or PhantomConfig()
    modality = modality.lower()
    if modality not in ("ct", "mr"):
        raise ConfigurationError(f"phantom modality must be 'ct' or 'mr', got {modality!r}")
    tissues = config.ct_tissues if modality == "ct" else config.mr_tissues
    rng = np.random.default_rng(seed)
    scale = config.anatomy_scale * rng.normal(1.0, 0.05)
    grid, (half_width, half_depth, fat_mm, wall_mm) = _phantom_grid(rng, config, modality, scale)
    canvas = _Canvas(rng, grid, tissues, scale,
                     image=np.full(grid.shape, tissues["air"], dtype=np.float32),
                     label=np.zeros(grid.shape, dtype=np.uint8))
    _paint_trunk(canvas, half_width, half_depth, fat_mm, wall_mm)
    y_vb = _paint_spine(canvas, half_depth)
    centres = _paint_organs(canvas, y_vb)
    pixels = _scanner_pixels(canvas, modality, config)

    # world placement (random table position) and header orientation
    table = rng.uniform(-80.0, 80.0, 3) + np.array([0.0, 0.0, rng.uniform(-400.0, 200.0)])
    lps = Geometry(tuple(grid.spacing), tuple(grid.first + table), (1, 0, 0, 0, 1, 0, 0, 0, 1),
                   grid.size)
    label = _in_preset(canvas.label, config.label_preset)
    orientation = config.orientation[modality]
    return Phantom(
        subject_id=subject_id or f"phantom_{modality}", modality=modality,
        image=sitk.DICOMOrient(lps.image_from_array(pixels), orientation),
        label=sitk.DICOMOrient(lps.image_from_array(label), orientation),
        body_centre=tuple(float(v) for v in table),
        organ_centres={k: tuple(float(v) for v in c + table) for k, c in centres.items()})


@dataclasses.dataclass
class PhantomDatasetSummary:
    """What :func:`generate_phantom_dataset` wrote.

    Attributes:
        out_dir: the data set folder.
        manifest_path: its manifest CSV.
        rows: one dict per subject (subject_id, modality, size, spacing, orientation, organ
            volumes in ml).
    """

    out_dir: Path
    manifest_path: Path
    rows: list[dict[str, Any]]

    def format(self) -> str:
        """A short text table."""
        lines = [f"{len(self.rows)} phantom volumes in {self.out_dir} (manifest "
                 f"{self.manifest_path.name})",
                 f"{'subject':<18} {'mod':<4} {'size':<12} {'spacing mm':<16} {'orient':<6} "
                 "liver/spleen/rk/lk ml"]
        for row in self.rows:
            volumes = "/".join(f"{v:.0f}" for v in row["organ_ml"])
            lines.append(f"{row['subject_id']:<18} {row['modality']:<4} "
                         f"{'x'.join(map(str, row['size'])):<12} "
                         f"{'x'.join(f'{s:.2f}' for s in row['spacing']):<16} "
                         f"{row['orientation']:<6} {volumes}")
        return "\n".join(lines)


def _prepare_output(out_dir: Path, overwrite: bool) -> None:
    if not out_dir.exists():
        out_dir.mkdir(parents=True)
        return
    if not out_dir.is_dir():
        raise InputDataError(f"{out_dir}: exists and is not a folder; choose another output "
                             "folder")
    entries = list(out_dir.iterdir())
    if not entries:
        return
    marker = out_dir / MARKER_FILE
    previous = None
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text())
        except (OSError, ValueError):
            previous = None
    if previous is not None and previous.get("generator") == GENERATOR_NAME:
        for relative in previous.get("files", []):
            target = (out_dir / relative).resolve()
            if out_dir.resolve() in target.parents and target.is_file():
                target.unlink()
        logging.info("replacing the previous phantom set in %s", out_dir)
        return
    if not overwrite:
        raise InputDataError(
            f"{out_dir}: is not empty and does not hold a previous phantom set ({len(entries)} "
            "entries); choose an empty or new folder, or pass overwrite (--overwrite) to write "
            "into it anyway")
    logging.warning("writing phantoms into the non-empty folder %s (overwrite)", out_dir)


def generate_phantom_dataset(out_dir: str | os.PathLike, num_ct: int = 4, num_mr: int = 4,
                             seed: int = 0, config: PhantomConfig | None = None,
                             overwrite: bool = False,
                             progress: Callable[[int, int, str], None] | None = None,
                             ) -> PhantomDatasetSummary:
    """Writes an unpaired CT/MR phantom data set: NIfTI images and labels plus a manifest.

    Layout: ``images/<subject>.nii.gz``, ``labels/<subject>.nii.gz``, ``manifest.csv``
    (``subject_id,modality,image,label``) and ``phantoms.json`` (generator options, seed, files).

    Args:
        out_dir: output folder (created; must be empty, a previous phantom set, or
            ``overwrite=True``).
        num_ct: number of CT subjects.
        num_mr: number of MR subjects (different subjects from the CT ones).
        seed: master seed; subject ``i`` uses the ``i``-th child of ``SeedSequence(seed)``.
        config: generator options.
        overwrite: allow writing into a non-empty folder that is not a phantom set.
        progress: called as ``progress(done, total, subject_id)`` after each subject.

    Returns:
        A :class:`PhantomDatasetSummary`.
    """
    if num_ct < 0 or num_mr < 0 or num_ct + num_mr == 0:
        raise ConfigurationError(f"need at least one phantom (num_ct={num_ct}, num_mr={num_mr})")
    config = config or PhantomConfig()
    out_dir = Path(out_dir)
    _prepare_output(out_dir, overwrite)
    children = np.random.SeedSequence(seed).spawn(num_ct + num_mr)
    plan = [("ct", i) for i in range(num_ct)] + [("mr", i) for i in range(num_mr)]
    rows, records, files = [], [], []
    for (modality, index), child in zip(plan, children, strict=True):
        subject_id = f"phantom_{modality}_{index:03d}"
        phantom = make_phantom(modality, child, subject_id, config)
        image_rel = f"images/{subject_id}.nii.gz"
        label_rel = f"labels/{subject_id}.nii.gz"
        write_volume(phantom.image, out_dir / image_rel)
        write_volume(phantom.label, out_dir / label_rel)
        files += [image_rel, label_rel]
        records.append({"subject_id": subject_id, "modality": modality, "image": image_rel,
                        "label": label_rel})
        geometry = Geometry.from_image(phantom.image)
        counts = np.bincount(sitk.GetArrayViewFromImage(phantom.label).ravel(),
                             minlength=256)
        preset = get_preset(config.label_preset).inverse()  # organs it lacks are not written
        organ_ml = [float(counts[preset[c]] * geometry.voxel_volume_mm3 / 1000.0)
                    if c in preset else 0.0 for c in range(1, len(LABEL_NAMES))]
        rows.append({"subject_id": subject_id, "modality": modality, "size": geometry.size,
                     "spacing": geometry.spacing, "orientation": geometry.orientation,
                     "organ_ml": organ_ml})
        if progress is not None:
            progress(len(rows), len(plan), subject_id)
    manifest_path = write_manifest(pd.DataFrame.from_records(records), out_dir / "manifest.csv",
                                   relative=False)
    files.append("manifest.csv")
    marker = {"generator": GENERATOR_NAME, "dltk_mm_version": dltk_mm.__version__, "seed": seed,
              "num_ct": num_ct, "num_mr": num_mr, "config": config.to_dict(), "files": files}
    temporary = out_dir / f".{MARKER_FILE}.tmp"
    temporary.write_text(json.dumps(marker, indent=1))
    os.replace(temporary, out_dir / MARKER_FILE)
    summary = PhantomDatasetSummary(out_dir=out_dir, manifest_path=manifest_path, rows=rows)
    logging.info("%s", summary.format())
    return summary


def organ_centroid_world(label: sitk.Image, value: int) -> np.ndarray:
    """World (LPS) centroid of the voxels equal to ``value`` (NaNs if there are none)."""
    array = sitk.GetArrayViewFromImage(label)
    indices = np.argwhere(array == value)
    if indices.size == 0:
        return np.full(3, np.nan)
    mean_xyz = indices.mean(axis=0)[::-1]
    return Geometry.from_image(label).index_to_physical(mean_xyz)


__all__ = ["Phantom", "PhantomConfig", "PhantomDatasetSummary", "generate_phantom_dataset",
           "make_phantom", "organ_centroid_world"]
