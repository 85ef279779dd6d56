"""Reading and writing 3D volumes with SimpleITK: NIfTI, MetaImage, NRRD and DICOM series.

One code path for every format: a file path is read with ``sitk.ImageFileReader`` (the format
comes from the file itself), a folder is read as a DICOM series with ``sitk.ImageSeriesReader``.
Arrays are returned in SimpleITK's (z, y, x) order together with the
:class:`~dltk_mm.io.geometry.Geometry` of the file. Every failure is an
:class:`~dltk_mm.errors.InputDataError` naming the file and the fix.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from absl import logging

from dltk_mm.errors import InputDataError
from dltk_mm.io.geometry import Geometry
from dltk_mm.io.header_geometry import header_geometry, is_nifti

_SPLIT_FORMATS = (".mhd", ".nhdr", ".hdr", ".img")
SUPPORTED_FORMATS = ("NIfTI (.nii, .nii.gz)", "MetaImage (.mha, .mhd)", "NRRD (.nrrd, .nhdr)",
                     "DICOM series (a folder)")


@dataclasses.dataclass
class Volume:
    """A volume read from disk.

    Attributes:
        array: voxel values, (z, y, x).
        geometry: the grid of the file.
        path: where it was read from.
    """

    array: np.ndarray
    geometry: Geometry
    path: Path


def _formats_hint() -> str:
    return "supported: " + ", ".join(SUPPORTED_FORMATS)


def _dicom_series_files(folder: Path) -> list[str]:
    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise InputDataError(
            f"{folder}: is a folder but holds no DICOM series; point to a volume file or to a "
            f"folder with the DICOM files of one series ({_formats_hint()})"
        )
    if len(series_ids) > 1:
        raise InputDataError(
            f"{folder}: holds {len(series_ids)} DICOM series ({', '.join(series_ids)}); put each "
            "series in its own folder and list that folder"
        )
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_ids[0]))


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise InputDataError(
            f"{path}: file not found; check the path (manifest paths are relative to the CSV's "
            "folder) or create the file"
        )


def _to_3d(image: sitk.Image, path: Path) -> sitk.Image:
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputDataError(
            f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per voxel; dltk_mm "
            "reads single-channel (scalar) volumes: split the channels into separate files"
        )
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        size = list(image.GetSize())
        size[3] = 0
        image = sitk.Extract(image, size, [0, 0, 0, 0])
    if image.GetDimension() != 3:
        raise InputDataError(
            f"{path}: is a {image.GetDimension()}D image of size {image.GetSize()}; dltk_mm needs "
            "3D volumes (one file or DICOM series per volume)"
        )
    return image


def _nifti_header_info(header: bytes) -> tuple[int, bool] | None:
    """(header + data bytes the file must hold, whether the data type is floating point) of a
    NIfTI-1/2 header, or None if it is not one."""
    if len(header) < 348:
        return None
    for endian in ("<", ">"):
        size = struct.unpack(endian + "i", header[:4])[0]
        if size == 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            datatype = struct.unpack(endian + "h", header[70:72])[0]
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            offset = int(struct.unpack(endian + "f", header[108:112])[0])
            break
        if size == 540 and len(header) >= 540:
            dims = struct.unpack(endian + "8q", header[16:80])
            datatype = struct.unpack(endian + "h", header[12:14])[0]
            bitpix = struct.unpack(endian + "h", header[14:16])[0]
            offset = struct.unpack(endian + "q", header[168:176])[0]
            break
    else:
        return None
    if not 1 <= dims[0] <= 7 or bitpix <= 0:
        return None
    voxels = int(np.prod([max(int(d), 1) for d in dims[1:dims[0] + 1]]))
    expected = max(offset, 352 if size == 348 else 544) + voxels * bitpix // 8
    return expected, datatype in (16, 64, 1536)  # float32, float64, float128


def _read_nifti_header(path: Path) -> tuple[int, bool] | None:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            return _nifti_header_info(stream.read(544))
    except (OSError, EOFError):
        return None  # SimpleITK reports the error


def _nifti_non_finite(path: Path) -> int:
    """Number of NaN/Inf voxels of a floating-point NIfTI file as stored (ITK's NIfTI reader
    replaces NaN by 0, so they must be counted from the raw data)."""
    import nibabel

    data = np.asarray(nibabel.load(str(path)).dataobj.get_unscaled())
    return int(data.size - np.count_nonzero(np.isfinite(data)))


def _check_nifti_complete(path: Path) -> None:
    """ITK zero-fills truncated NIfTI files silently: compare the data size with the header."""
    name = path.name.lower()
    info = _read_nifti_header(path)
    expected = None if info is None else info[0]
    if name.endswith(".nii"):
        actual = path.stat().st_size
    elif name.endswith(".nii.gz"):
        with open(path, "rb") as stream:
            stream.seek(-4, os.SEEK_END)
            actual = struct.unpack("<I", stream.read(4))[0]  # gzip ISIZE trailer (mod 2**32)
        if expected is not None and actual != expected % 2**32:
            try:  # unusual trailer: count the bytes the hard way
                actual = 0
                with gzip.open(path, "rb") as stream:
                    while chunk := stream.read(1 << 24):
                        actual += len(chunk)
            except (OSError, EOFError):
                actual = -1
    else:
        return
    if expected is not None and actual < expected:
        raise InputDataError(
            f"{path}: NIfTI file is truncated or corrupt (holds "
            f"{'an unreadable stream' if actual < 0 else f'{actual} bytes'}, the header needs "
            f"{expected}); copy or download it again"
        )


def read_image(path: str | os.PathLike, pixel_type: int | None = None,
               check_values: bool = False) -> sitk.Image:
    """Reads a 3D image (file or DICOM series folder) with SimpleITK.

    Args:
        path: a volume file or a folder holding one DICOM series.
        pixel_type: optional SimpleITK pixel type to cast to (e.g. ``sitk.sitkFloat32``).
        check_values: raise if the volume holds NaN or infinite values.

    Returns:
        The image, with its header geometry.

    Raises:
        InputDataError: if the file is missing, unreadable or not a scalar 3D volume (or holds
            NaN/Inf with ``check_values``).
    """
    path = Path(path)
    _check_exists(path)
    itk_read_geometry = True
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(_dicom_series_files(path))
            image = reader.Execute()
        else:
            _check_nifti_complete(path)
            image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        if not _refused_for_its_axes(path, error):
            raise _unreadable(path, error) from error
        image, itk_read_geometry = _read_nifti_voxels(path), False
    image = _to_3d(image, path)
    geometry = header_geometry(path, Geometry.from_image(image) if itk_read_geometry else None)
    if geometry != Geometry.from_image(image):
        image = geometry.apply_to(image)
    if check_values:
        check_finite(sitk.GetArrayViewFromImage(image), path)
        name = path.name.lower()
        if name.endswith((".nii", ".nii.gz")):
            info = _read_nifti_header(path)
            if info is not None and info[1]:
                _raise_non_finite(_nifti_non_finite(path), path)
    if pixel_type is not None and image.GetPixelID() != pixel_type:
        image = sitk.Cast(image, pixel_type)
    return image


def _refused_for_its_axes(path: Path, error: RuntimeError) -> bool:
    """Whether ITK refused a NIfTI file only because its axes are not exactly orthonormal."""
    return is_nifti(path) and "orthonormal" in str(error)


def _read_nifti_voxels(path: Path) -> sitk.Image:
    """The voxels of a NIfTI file ITK refused for its axes (read by nibabel; grid set later)."""
    import nibabel

    data = np.asanyarray(nibabel.load(str(path)).dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputDataError(f"{path}: is a {data.ndim}D image of shape {data.shape}; dltk_mm "
                             "needs 3D volumes (one file per volume)")
    return sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))


def _unreadable(path: Path, error: RuntimeError) -> InputDataError:
    """The error for a file SimpleITK cannot read, with ITK's last message line."""
    reason = str(error).strip().splitlines()
    return InputDataError(
        f"{path}: cannot be read as an image ({reason[-1] if reason else 'unknown error'}); "
        f"check that it is a complete, uncorrupted volume ({_formats_hint()})"
    )


def read_geometry(path: str | os.PathLike) -> Geometry:
    """The grid of a volume from its header only (a DICOM folder is read in full).

    Raises:
        InputDataError: if the file is missing or unreadable.
    """
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        return Geometry.from_image(read_image(path))
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        if not _refused_for_its_axes(path, error):
            raise _unreadable(path, error) from error
        return header_geometry(path, None)
    dimension = reader.GetDimension()
    if dimension == 4 and reader.GetSize()[3] == 1:
        dimension = 3
    if dimension != 3:
        raise InputDataError(
            f"{path}: is a {reader.GetDimension()}D image of size {reader.GetSize()}; dltk_mm "
            "needs 3D volumes"
        )
    return header_geometry(path, Geometry.from_reader(reader))


def check_finite(array: np.ndarray, path: str | os.PathLike) -> None:
    """Raises InputDataError naming ``path`` if ``array`` holds NaN or infinite values."""
    if np.issubdtype(array.dtype, np.floating):
        _raise_non_finite(int(array.size - np.count_nonzero(np.isfinite(array))), path)


def _raise_non_finite(count: int, path: str | os.PathLike) -> None:
    if count:
        raise InputDataError(
            f"{path}: holds {count} NaN or infinite voxel value(s); fix or replace the volume "
            "(e.g. set them to the background intensity) before using it"
        )


def read_volume(path: str | os.PathLike, dtype: np.dtype | type | None = None,
                allow_non_finite: bool = False) -> Volume:
    """Reads a volume into a (z, y, x) NumPy array plus its geometry.

    Args:
        path: a volume file or a DICOM series folder.
        dtype: optional NumPy dtype to convert the array to.
        allow_non_finite: if False (default), NaN/Inf voxels raise an error.

    Returns:
        The :class:`Volume`.

    Raises:
        InputDataError: for a missing/unreadable file or NaN/Inf values.
    """
    path = Path(path)
    image = read_image(path, check_values=not allow_non_finite)
    array = sitk.GetArrayFromImage(image)
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    return Volume(array=array, geometry=Geometry.from_image(image), path=path)


def write_volume(data: sitk.Image | np.ndarray, path: str | os.PathLike,
                 geometry: Geometry | None = None, compress: bool = True) -> Path:
    """Writes a volume atomically (temporary file in the same folder, then rename).

    Two-file formats (.mhd/.raw, .nhdr, Analyze) are written in place, since their header names
    the data file.

    Args:
        data: a SimpleITK image, or a (z, y, x) array together with ``geometry``.
        path: output file; the format follows the suffix (.nii.gz, .nii, .mha, .nrrd, ...).
        geometry: grid of ``data`` when it is an array (overrides an image's own grid if given).
        compress: whether to compress (where the format allows).

    Returns:
        The written path.
    """
    path = Path(path)
    if isinstance(data, np.ndarray):
        if geometry is None:
            raise InputDataError(f"{path}: writing an array needs its geometry")
        image = geometry.image_from_array(data)
    else:
        image = data
        if geometry is not None:
            image = geometry.apply_to(sitk.Image(image))
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    if suffix.lower() in _SPLIT_FORMATS:
        # header + separate data file: the header names the data file, so write in place
        sitk.WriteImage(image, str(path), compress)
        return path
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        sitk.WriteImage(image, temporary, compress)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    logging.debug("wrote %s", path)
    return path
