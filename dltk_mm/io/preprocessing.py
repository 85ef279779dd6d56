"""Preprocessing of CT and MR volumes as in Valindria et al., WACV 2018 (docs/paper.md, section 5).

Steps (paper defaults, every one configurable through :class:`PreprocessingConfig`):

1. Read image and label (SimpleITK), map label ids to the project map with a label preset (the
   manifest row's ``label_preset`` column where given, else ``PreprocessingConfig.label_preset``).
2. Reorient to the canonical LPS orientation (``sitk.DICOMOrient``; an exact axis permutation /
   flip), then resample onto an identity-direction grid of ``spacing_mm`` isotropic voxels (2 mm in
   the paper) that covers the same physical extent, centred on the original volume: linear
   interpolation for images, nearest neighbour for labels.
3. Crop to the box covering the four organs plus ``crop_margin_mm`` (paper: "same field of view";
   only where a label is given).
4. Intensities: CT values below ``ct_clip_min`` (-1000 HU) are clipped (before interpolation, so
   that padding values such as -2048 do not bleed into the body), then each volume is z-scored
   (zero mean, unit variance). ``normalisation="per_slice"`` z-scores each axial slice instead,
   as the authors' code did.

:func:`restore_to_source` maps a prediction on the preprocessed grid back onto the original file's
grid (undoing crop, resampling and orientation); :func:`read_source_label` reads a volume's label
file on that grid, in the project map (the reference a restored prediction is scored against).
:func:`preprocess_manifest` runs a whole manifest with an on-disk cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
from absl import logging

import dltk_mm
from dltk_mm.errors import ConfigurationError, InputDataError
from dltk_mm.io.files import atomic_write
from dltk_mm.io.geometry import Geometry
from dltk_mm.io.labels import get_preset
from dltk_mm.io.manifest import row_label_preset
from dltk_mm.io.plausibility import warn_if_empty_label, warn_if_implausible_image
from dltk_mm.io.readers import read_image

CANONICAL_ORIENTATION = "LPS"
NORMALISATIONS = ("per_volume", "per_slice")
NORMALISATION_REGIONS = ("field_of_view", "organ_crop")
DEFAULT_CACHE_NAME = ".dltk_mm_cache"
"""Name of the default cache folder, beside the manifest (preprocess and train commands)."""
#: Bumped whenever reading or preprocessing gives other arrays for the same files (3: the NIfTI
#: sform/qform rule, orthonormalised axes and NaN-refusing labels), so old cache entries miss.
CACHE_FORMAT_VERSION = 3


def is_ct(modality: str) -> bool:
    """Whether a modality string names CT (``"ct"`` or ``"ct_*"``): these get the HU clip."""
    modality = modality.lower()
    return modality == "ct" or modality.startswith("ct_")


@dataclasses.dataclass(frozen=True)
class PreprocessingConfig:
    """Preprocessing options; defaults follow the paper (docs/paper.md, section 5).

    Attributes:
        spacing_mm: Isotropic voxel size in mm after resampling (paper: 2).
        crop_to_organs: Crop each labelled volume to the box around the four organs.
        crop_margin_mm: Margin in mm added on every side of that organ box.
        ct_clip_min: CT values below this (HU) are raised to it (paper: -1000; None: no clip).
        normalisation: Z-score "per_volume" (paper) or "per_slice" (the authors' code).
        normalisation_region: Z-score statistics from the whole "field_of_view" (default, as at
            prediction time) or from the "organ_crop".
        label_preset: A preset name (identity, btcv, amos, chaos, ...) or a .json/.csv preset
            file (see docs/datasets.md).
        allow_unknown_labels: Map label ids the preset does not know to background instead of
            failing.
        std_epsilon: Smallest standard deviation the z-score divides by.
    """

    spacing_mm: float = 2.0
    crop_to_organs: bool = True
    crop_margin_mm: float = 10.0
    ct_clip_min: float | None = -1000.0
    normalisation: str = "per_volume"
    normalisation_region: str = "field_of_view"
    label_preset: str = "identity"
    allow_unknown_labels: bool = False
    std_epsilon: float = 1e-6

    def __post_init__(self) -> None:
        if not (isinstance(self.spacing_mm, (int, float)) and self.spacing_mm > 0):
            raise ConfigurationError(f"spacing_mm must be > 0, got {self.spacing_mm!r}")
        if self.crop_margin_mm < 0:
            raise ConfigurationError(f"crop_margin_mm must be >= 0, got {self.crop_margin_mm!r}")
        if self.normalisation not in NORMALISATIONS:
            raise ConfigurationError(
                f"unknown normalisation {self.normalisation!r}; choose one of {NORMALISATIONS}")
        if self.normalisation_region not in NORMALISATION_REGIONS:
            raise ConfigurationError(
                f"unknown normalisation_region {self.normalisation_region!r}; choose one of "
                f"{NORMALISATION_REGIONS}")
        get_preset(self.label_preset)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of the fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessingConfig:
        """The inverse of :meth:`to_dict` (unknown keys are an error)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigurationError(f"unknown preprocessing option(s) {unknown}; known: "
                                     f"{sorted(names)}")
        return cls(**data)

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PreprocessingConfig:
        """The inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))


@dataclasses.dataclass(frozen=True)
class CropBox:
    """A box in the canonical resampled grid, in NumPy (z, y, x) index order: ``[start, stop)``."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", tuple(int(v) for v in self.start))
        object.__setattr__(self, "stop", tuple(int(v) for v in self.stop))

    @property
    def shape(self) -> tuple[int, int, int]:
        """(z, y, x) size of the box."""
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))

    def slices(self) -> tuple[slice, slice, slice]:
        """Slices that cut the box out of a (z, y, x) array."""
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop, strict=True))

    def to_dict(self) -> dict[str, list[int]]:
        """JSON-serialisable dict."""
        return {"start_zyx": list(self.start), "stop_zyx": list(self.stop)}

    @classmethod
    def from_dict(cls, data: dict[str, Sequence[int]]) -> CropBox:
        """The inverse of :meth:`to_dict`."""
        return cls(tuple(data["start_zyx"]), tuple(data["stop_zyx"]))


@dataclasses.dataclass
class PreprocessedVolume:
    """A preprocessed volume in memory (canonical LPS, isotropic, cropped, normalised).

    Attributes:
        subject_id: subject id from the manifest.
        modality: lower-case modality.
        image: float32 (z, y, x) normalised intensities.
        label: uint8 (z, y, x) project labels, or None.
        geometry: grid of ``image`` (identity direction, ``spacing_mm`` isotropic).
        source_geometry: grid of the original image file.
        resampled_geometry: the canonical resampled grid before cropping.
        crop: the crop box inside ``resampled_geometry`` (z, y, x).
        image_path: original image file.
        label_path: original label file or None.
        config: the preprocessing options used.
        intensity_stats: mean/std used by the z-score (per volume) and the clip value.
        from_cache: whether this volume was read from the cache.
    """

    subject_id: str
    modality: str
    image: np.ndarray
    label: np.ndarray | None
    geometry: Geometry
    source_geometry: Geometry
    resampled_geometry: Geometry
    crop: CropBox
    image_path: str
    label_path: str | None
    config: PreprocessingConfig
    intensity_stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    from_cache: bool = dataclasses.field(default=False, compare=False)

    def metadata(self) -> dict[str, Any]:
        """JSON-serialisable description of everything except the arrays."""
        return {
            "subject_id": self.subject_id,
            "modality": self.modality,
            "geometry": self.geometry.to_dict(),
            "source_geometry": self.source_geometry.to_dict(),
            "resampled_geometry": self.resampled_geometry.to_dict(),
            "crop": self.crop.to_dict(),
            "image_path": self.image_path,
            "label_path": self.label_path,
            "config": self.config.to_dict(),
            "intensity_stats": self.intensity_stats,
            "has_label": self.label is not None,
        }


# ---------------------------------------------------------------------------------------------
# grid helpers


def canonical_grid(source: Geometry, spacing_mm: float) -> Geometry:
    """The identity-direction grid of ``spacing_mm`` voxels covering ``source``'s physical extent.

    The new grid is centred on the source volume's centre and has ``ceil(extent / spacing_mm)``
    voxels per axis, so it covers the source's edge-to-edge world bounding box (an oblique source
    is covered by its axis-aligned bounding box).
    """
    low, high = source.world_bounds()
    extent = high - low
    size = np.maximum(1, np.ceil(extent / spacing_mm - 1e-3)).astype(int)
    centre = (low + high) / 2.0
    origin = centre - (size - 1) / 2.0 * spacing_mm
    return Geometry((spacing_mm,) * 3, tuple(origin), (1, 0, 0, 0, 1, 0, 0, 0, 1), tuple(size))


def resample_to_grid(image: sitk.Image, grid: Geometry, interpolator: int,
                     default_value: float = 0.0, output_pixel_type: int | None = None,
                     nearest_extrapolation: bool = True) -> sitk.Image:
    """Resamples ``image`` onto ``grid`` (world coordinates, identity transform)."""
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize(grid.size)
    resampler.SetOutputSpacing(grid.spacing)
    resampler.SetOutputOrigin(grid.origin)
    resampler.SetOutputDirection(grid.direction)
    resampler.SetInterpolator(interpolator)
    resampler.SetDefaultPixelValue(default_value)
    resampler.SetUseNearestNeighborExtrapolator(nearest_extrapolation)
    if output_pixel_type is not None:
        resampler.SetOutputPixelType(output_pixel_type)
    resampler.SetTransform(sitk.Transform())
    return resampler.Execute(image)


def organ_crop_box(label_zyx: np.ndarray, margin_voxels: int | Sequence[int]) -> CropBox:
    """The box covering every non-zero label plus a margin, clamped to the array."""
    shape = np.asarray(label_zyx.shape)
    margin = np.broadcast_to(np.asarray(margin_voxels, dtype=int), (3,))
    nonzero = np.nonzero(label_zyx)
    if nonzero[0].size == 0:
        return CropBox((0, 0, 0), tuple(shape))
    low = np.array([axis.min() for axis in nonzero])
    high = np.array([axis.max() for axis in nonzero]) + 1
    start = np.maximum(low - margin, 0)
    stop = np.minimum(high + margin, shape)
    return CropBox(tuple(start), tuple(stop))


def cropped_geometry(grid: Geometry, crop: CropBox) -> Geometry:
    """Geometry of the crop box of ``grid``."""
    start_xyz = np.asarray(crop.start[::-1], dtype=float)
    origin = grid.index_to_physical(start_xyz)
    return Geometry(grid.spacing, tuple(origin), grid.direction, crop.shape[::-1])


def normalise_intensities(image_zyx: np.ndarray, mode: str = "per_volume",
                          epsilon: float = 1e-6) -> tuple[np.ndarray, dict[str, Any]]:
    """Z-scores a volume (paper) or each axial slice (authors' code).

    Args:
        image_zyx: intensities (z, y, x).
        mode: ``"per_volume"`` or ``"per_slice"``.
        epsilon: lower bound of the standard deviation.

    Returns:
        float32 normalised array and the statistics used.
    """
    data = image_zyx.astype(np.float64, copy=False)
    if mode == "per_volume":
        mean, std = float(data.mean()), float(data.std())
        out = (data - mean) / max(std, epsilon)
        stats = {"mean": mean, "std": std}
    elif mode == "per_slice":
        mean = data.mean(axis=(1, 2), keepdims=True)
        std = np.maximum(data.std(axis=(1, 2), keepdims=True), epsilon)
        out = (data - mean) / std
        stats = {"slice_mean": mean.ravel().tolist(), "slice_std": std.ravel().tolist()}
    else:
        raise ConfigurationError(f"unknown normalisation {mode!r}; choose one of {NORMALISATIONS}")
    return out.astype(np.float32), stats


# ---------------------------------------------------------------------------------------------
# one volume


def _read_label(label_path: Path, image_path: Path, image_geometry: Geometry,
                config: PreprocessingConfig) -> sitk.Image:
    """The label in the project map, on the image's grid (NaN refused, no organ warned about)."""
    raw_label = read_image(label_path, check_values=True)
    differences = image_geometry.grid_differences(Geometry.from_image(raw_label))
    if differences:
        raise InputDataError(
            f"image {image_path} and label {label_path} are on different grids "
            f"({'; '.join(differences)}); resample the label onto the image grid (nearest "
            "neighbour) or pair the right files")
    mapped = get_preset(config.label_preset).apply(
        sitk.GetArrayViewFromImage(raw_label), source=str(label_path),
        allow_unknown=config.allow_unknown_labels)
    warn_if_empty_label(mapped, label_path, config.label_preset)
    return image_geometry.image_from_array(mapped)


def preprocess_volume(image_path: str | os.PathLike, label_path: str | os.PathLike | None,
                      modality: str, config: PreprocessingConfig | None = None,
                      subject_id: str | None = None) -> PreprocessedVolume:
    """Preprocesses one volume (and its label) as in the paper (see the module docstring).

    Args:
        image_path: image file or DICOM series folder.
        label_path: label file, or None (prediction).
        modality: lower-case modality; CT (``"ct"``, ``"ct_*"``) gets the HU clip.
        config: options (paper defaults when None).
        subject_id: id for bookkeeping (default: the image file name).

    Returns:
        The :class:`PreprocessedVolume`.

    Raises:
        InputDataError: unreadable files, NaN/Inf values, mismatched grids or unknown label ids.
    """
    config = config or PreprocessingConfig()
    modality = modality.lower()
    image_path = Path(image_path)
    subject_id = subject_id or image_path.name.split(".")[0]
    image = read_image(image_path, sitk.sitkFloat32, check_values=True)
    source_geometry = Geometry.from_image(image)
    warn_if_implausible_image(sitk.GetArrayViewFromImage(image), image_path, is_ct(modality),
                              config.ct_clip_min)
    stats: dict[str, Any] = {}
    if is_ct(modality) and config.ct_clip_min is not None:
        image = sitk.Maximum(image, float(config.ct_clip_min))
        stats["ct_clip_min"] = float(config.ct_clip_min)

    label_image = None
    if label_path is not None:
        label_path = Path(label_path)
        label_image = _read_label(label_path, image_path, source_geometry, config)

    # 1. canonical orientation (exact permutation / flip of the voxel grid)
    image = sitk.DICOMOrient(image, CANONICAL_ORIENTATION)
    if label_image is not None:
        label_image = sitk.DICOMOrient(label_image, CANONICAL_ORIENTATION)
    # 2. isotropic resampling covering the same physical extent
    grid = canonical_grid(Geometry.from_image(image), float(config.spacing_mm))
    image = resample_to_grid(image, grid, sitk.sitkLinear, output_pixel_type=sitk.sitkFloat32)
    image_array = sitk.GetArrayFromImage(image)
    label_array = None
    if label_image is not None:
        label_image = resample_to_grid(label_image, grid, sitk.sitkNearestNeighbor,
                                       output_pixel_type=sitk.sitkUInt8)
        label_array = sitk.GetArrayFromImage(label_image)
    # 3. organ crop
    if config.crop_to_organs and label_array is not None:
        margin = int(math.ceil(config.crop_margin_mm / config.spacing_mm - 1e-6))
        crop = organ_crop_box(label_array, margin)
        if not label_array.any():
            logging.info("%s: label %s holds no organ voxels; not cropping", subject_id,
                         label_path)
    else:
        crop = CropBox((0, 0, 0), grid.shape)
    # 4. intensities (z-score over the whole field of view or over the crop), then the crop
    if config.normalisation_region == "field_of_view":
        image_array, norm_stats = normalise_intensities(image_array, config.normalisation,
                                                        config.std_epsilon)
    image_array = image_array[crop.slices()]
    if config.normalisation_region == "organ_crop":
        image_array, norm_stats = normalise_intensities(image_array, config.normalisation,
                                                        config.std_epsilon)
    if label_array is not None:
        label_array = np.ascontiguousarray(label_array[crop.slices()])
    stats.update(norm_stats)
    volume = PreprocessedVolume(
        subject_id=str(subject_id), modality=modality, image=np.ascontiguousarray(image_array),
        label=label_array, geometry=cropped_geometry(grid, crop),
        source_geometry=source_geometry, resampled_geometry=grid, crop=crop,
        image_path=str(image_path), label_path=None if label_path is None else str(label_path),
        config=config, intensity_stats=stats)
    logging.info("preprocessed %s (%s): %s -> %s", subject_id, modality,
                 source_geometry.describe(), volume.geometry.describe())
    return volume


# ---------------------------------------------------------------------------------------------
# back to the source grid


def _uncrop(array: np.ndarray, volume: PreprocessedVolume, fill: float) -> np.ndarray:
    spatial = tuple(array.shape[:3])
    if spatial != volume.crop.shape:
        raise InputDataError(
            f"{volume.subject_id}: prediction of shape {spatial} does not match the preprocessed "
            f"volume's shape {volume.crop.shape}; predict on volume.image's grid")
    full = np.full(volume.resampled_geometry.shape + array.shape[3:], fill, dtype=array.dtype)
    full[volume.crop.slices()] = array
    return full


def restore_to_source(label_array_zyx: np.ndarray, volume: PreprocessedVolume) -> sitk.Image:
    """Maps a label map on the preprocessed grid back onto the original image file's grid.

    Undoes the crop (padding with background), then resamples with nearest-neighbour
    interpolation onto the source grid (world coordinates, so the reorientation is undone too).
    The result has the source file's size, spacing, origin and direction (Valindria et al. do not
    discuss this step; the authors' code lost the geometry).

    Args:
        label_array_zyx: integer labels on ``volume.image``'s grid.
        volume: the preprocessed volume the prediction belongs to.

    Returns:
        uint8 SimpleITK image on ``volume.source_geometry``.
    """
    full = _uncrop(np.asarray(label_array_zyx).astype(np.uint8), volume, 0)
    image = volume.resampled_geometry.image_from_array(full)
    return resample_to_grid(image, volume.source_geometry, sitk.sitkNearestNeighbor,
                            output_pixel_type=sitk.sitkUInt8)


def read_source_label(volume: PreprocessedVolume) -> np.ndarray:
    """The label file of a preprocessed volume, in the project map, on its source image's grid.

    The file is read exactly as :func:`preprocess_volume` read it (the volume's label preset and
    ``allow_unknown_labels``, on the image's grid, NaN refused) but neither reoriented, resampled
    nor cropped: the reference for a prediction mapped back with :func:`restore_to_source`, so
    that it is scored in the label's own geometry.

    Args:
        volume: a preprocessed volume with a label file.

    Returns:
        uint8 ``(z, y, x)`` project labels of shape ``volume.source_geometry.shape``.

    Raises:
        InputDataError: the volume has no label file, or it cannot be read as for training.
    """
    if volume.label_path is None:
        raise InputDataError(f"{volume.subject_id} ({volume.modality}): no label file to read; "
                             "give the manifest row a label")
    label = _read_label(Path(volume.label_path), Path(volume.image_path), volume.source_geometry,
                        volume.config)
    return sitk.GetArrayFromImage(label).astype(np.uint8, copy=False)


def restore_probabilities_to_source(probabilities_zyxc: np.ndarray,
                                    volume: PreprocessedVolume) -> sitk.Image:
    """Maps class probabilities (z, y, x, C) back onto the original grid (linear interpolation).

    Outside the crop the background class (channel 0) gets probability 1.

    Returns:
        float32 vector image (C components) on ``volume.source_geometry``.
    """
    probabilities = np.asarray(probabilities_zyxc, dtype=np.float32)
    if probabilities.ndim != 4:
        raise InputDataError(f"{volume.subject_id}: probabilities must be (z, y, x, C), got "
                             f"shape {probabilities.shape}")
    full = _uncrop(probabilities, volume, 0.0)
    outside = np.ones(full.shape[:3], dtype=bool)
    outside[volume.crop.slices()] = False
    full[outside, 0] = 1.0
    image = volume.resampled_geometry.image_from_array(full, is_vector=True)
    return resample_to_grid(image, volume.source_geometry, sitk.sitkLinear)


# ---------------------------------------------------------------------------------------------
# cache


def _file_identity(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    file_path = Path(path)
    if not file_path.exists():
        raise InputDataError(f"{file_path}: file not found; check the path (manifest paths are "
                             "relative to the CSV's folder) or create the file")
    if file_path.is_dir():
        files = sorted(p for p in file_path.iterdir() if p.is_file())
        size = sum(p.stat().st_size for p in files)
        mtime = max((p.stat().st_mtime_ns for p in files), default=0)
    else:
        stat = file_path.stat()
        size, mtime = stat.st_size, stat.st_mtime_ns
    return {"path": str(file_path.resolve()), "size": int(size), "mtime_ns": int(mtime)}


def cache_key(image_path: str, label_path: str | None, modality: str, subject_id: str,
              config: PreprocessingConfig) -> tuple[str, dict[str, Any]]:
    """Hash of the input files' identity (path, size, mtime), the options and the version.

    The label preset enters with its id mapping, so that editing a preset file (whose path stays
    the same) invalidates the volumes preprocessed with its earlier content.
    """
    preset = get_preset(config.label_preset)
    identity = {
        "image": _file_identity(image_path),
        "label": _file_identity(label_path),
        "modality": modality,
        "subject_id": subject_id,
        "config": config.to_dict(),
        "label_mapping": sorted((int(k), int(v)) for k, v in preset.mapping.items()),
        "label_ids": sorted(int(i) for i in preset.valid_ids),
        "dltk_mm_version": dltk_mm.__version__,
        "cache_format": CACHE_FORMAT_VERSION,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return digest, identity


def _cache_stem(subject_id: str, modality: str, digest: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", subject_id)[:80]
    return f"{safe}_{modality}_{digest[:16]}"


def save_to_cache(volume: PreprocessedVolume, cache_dir: str | os.PathLike, digest: str,
                  identity: dict[str, Any]) -> Path:
    """Writes ``<stem>.npz`` (image, label) then ``<stem>.json`` (metadata), each atomically."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = _cache_stem(volume.subject_id, volume.modality, digest)
    arrays = {"image": volume.image}
    if volume.label is not None:
        arrays["label"] = volume.label

    def write_npz(target: Path) -> None:
        with open(target, "wb") as stream:
            np.savez_compressed(stream, **arrays)

    atomic_write(cache_dir / f"{stem}.npz", write_npz)
    metadata = volume.metadata()
    metadata.update({"cache_key": digest, "provenance": identity,
                     "dltk_mm_version": dltk_mm.__version__,
                     "cache_format": CACHE_FORMAT_VERSION})
    atomic_write(cache_dir / f"{stem}.json",
                  lambda target: target.write_text(json.dumps(metadata, indent=1)))
    return cache_dir / f"{stem}.json"


def load_from_cache(cache_dir: str | os.PathLike, subject_id: str, modality: str,
                    digest: str) -> PreprocessedVolume | None:
    """The cached volume for ``digest``, or None if absent or unreadable."""
    stem = _cache_stem(subject_id, modality, digest)
    json_path = Path(cache_dir) / f"{stem}.json"
    npz_path = Path(cache_dir) / f"{stem}.npz"
    if not (json_path.is_file() and npz_path.is_file()):
        return None
    try:
        metadata = json.loads(json_path.read_text())
        if metadata.get("cache_key") != digest:
            return None
        with np.load(npz_path) as arrays:
            image = arrays["image"]
            label = arrays["label"] if "label" in arrays.files else None
        return PreprocessedVolume(
            subject_id=metadata["subject_id"], modality=metadata["modality"], image=image,
            label=label, geometry=Geometry.from_dict(metadata["geometry"]),
            source_geometry=Geometry.from_dict(metadata["source_geometry"]),
            resampled_geometry=Geometry.from_dict(metadata["resampled_geometry"]),
            crop=CropBox.from_dict(metadata["crop"]), image_path=metadata["image_path"],
            label_path=metadata["label_path"],
            config=PreprocessingConfig.from_dict(metadata["config"]),
            intensity_stats=metadata.get("intensity_stats", {}), from_cache=True)
    except (OSError, ValueError, KeyError, TypeError) as error:
        logging.warning("cache entry %s unreadable (%s); recomputing", json_path, error)
        return None


ProgressCallback = Callable[[int, int, PreprocessedVolume], None]


def preprocess_manifest(manifest: pd.DataFrame, config: PreprocessingConfig | None = None,
                        cache_dir: str | os.PathLike | None = None,
                        progress: ProgressCallback | None = None) -> list[PreprocessedVolume]:
    """Preprocesses every row of a manifest (see :func:`dltk_mm.io.manifest.load_manifest`).

    Args:
        manifest: rows with subject_id, modality, image and optional label (absolute paths) and
            optional label_preset (overrides ``config.label_preset`` for that row where not
            empty, e.g. ``btcv`` CT rows and ``chaos`` MR rows in one manifest).
        config: options (paper defaults when None).
        cache_dir: folder of the on-disk cache (None: no cache). Entries are keyed by a hash of
            the input files' identity (path, size, modification time), the options, the label
            preset's id mapping and the dltk_mm version (:func:`cache_key`); inputs are never
            written.
        progress: called as ``progress(done, total, volume)`` after each volume
            (``volume.from_cache`` tells a cache hit).

    Returns:
        The preprocessed volumes in manifest order; each ``volume.config`` holds the preset used.

    Raises:
        InputDataError: unreadable or inconsistent inputs, an unknown preset in a row.
    """
    base_config = config or PreprocessingConfig()
    volumes = []
    total = len(manifest)
    for done, record in enumerate(manifest.to_dict("records"), start=1):
        # A row's label_preset column overrides the configured preset; the effective config is
        # part of the cache key and is recorded in the volume.
        preset = row_label_preset(record, base_config.label_preset)
        config = base_config if preset == base_config.label_preset \
            else dataclasses.replace(base_config, label_preset=preset)
        subject_id = str(record["subject_id"])
        modality = str(record["modality"]).lower()
        image_path = str(record["image"])
        label = record.get("label")
        label_path = None if label is None or (isinstance(label, float) and pd.isna(label)) \
            or label == "" else str(label)
        volume = None
        if cache_dir is not None:
            digest, identity = cache_key(image_path, label_path, modality, subject_id, config)
            volume = load_from_cache(cache_dir, subject_id, modality, digest)
            if volume is not None:
                logging.info("cache hit: %s (%s)", subject_id, modality)
        if volume is None:
            volume = preprocess_volume(image_path, label_path, modality, config, subject_id)
            if cache_dir is not None:
                save_to_cache(volume, cache_dir, digest, identity)
                logging.info("cache miss: %s (%s) written to %s", subject_id, modality, cache_dir)
        volumes.append(volume)
        if progress is not None:
            progress(done, total, volume)
    return volumes


def default_cache_dir(manifest_path: str | os.PathLike) -> Path:
    """The default preprocessing cache of a manifest: ``<manifest folder>/.dltk_mm_cache``."""
    return Path(manifest_path).expanduser().resolve().parent / DEFAULT_CACHE_NAME
