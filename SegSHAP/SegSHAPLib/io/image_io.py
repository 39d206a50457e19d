"""Reading and writing images with their geometry: NIfTI, NRRD and DICOM series folders.

Axis convention (the one boundary where it changes):
- ``Volume.array`` is a numpy array in (z, y, x) order, as SimpleITK's ``GetArrayFromImage`` and nnU-Net's
  ``SimpleITKIO`` give it (nnU-Net also calls these axes 0, 1, 2).
- ``Volume.spacing``, ``Volume.origin`` and the columns of ``Volume.direction`` are in ITK's (x, y, z) /
  (i, j, k) order and LPS physical space, exactly as SimpleITK reports them.
- ``Volume.ijk_to_ras`` / ``ras_to_ijk`` use Slicer's RAS convention (R = -L, A = -P) and (i, j, k) indices,
  i.e. i indexes the last numpy axis.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SegSHAPLib.errors import InputError, OutputError
from SegSHAPLib.io.atomic_files import atomic_target, output_error

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

READABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
# Two DICOM slice gaps differ when they differ by more than this fraction of the median gap (or 0.01 mm).
SLICE_GAP_TOLERANCE = 0.01
WRITABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")


class ImageReadError(InputError):
    """An image path that cannot be read as a 3D image; the message says why and what is accepted."""


@dataclass
class Volume:
    """A 3D image with its geometry.

    array:     numpy array, shape (nz, ny, nx), axis order (z, y, x).
    spacing:   (sx, sy, sz) in mm, ITK order (x, y, z).
    origin:    physical position (LPS, mm) of voxel (i, j, k) = (0, 0, 0).
    direction: 3x3 matrix whose column c is the LPS direction of index axis c (c = i, j, k).
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Spacing in numpy axis order (z, y, x), as nnU-Net's properties['spacing'] holds it."""
        return (float(self.spacing[2]), float(self.spacing[1]), float(self.spacing[0]))

    def with_array(self, array: np.ndarray) -> "Volume":
        """Same geometry, other voxel data (shape (z, y, x) must match)."""
        if tuple(array.shape) != self.shape_zyx:
            raise ValueError(f"array shape {array.shape} does not match the volume's {self.shape_zyx}")
        return Volume(array, self.spacing, self.origin, self.direction.copy())

    def ijk_to_lps_matrix(self) -> np.ndarray:
        """4x4 homogeneous matrix taking (i, j, k, 1) to LPS mm."""
        m = np.eye(4)
        m[:3, :3] = self.direction @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    def ijk_to_ras_matrix(self) -> np.ndarray:
        """4x4 homogeneous matrix taking (i, j, k, 1) to RAS mm (Slicer's IJKToRAS)."""
        m = self.ijk_to_lps_matrix()
        flip = np.eye(4)
        flip[:3, :3] = LPS_TO_RAS
        return flip @ m

    def ras_to_ijk(self, ras: np.ndarray) -> np.ndarray:
        """RAS mm point(s), shape (..., 3), to continuous (i, j, k) index coordinates, shape (..., 3)."""
        inv = np.linalg.inv(self.ijk_to_ras_matrix())
        ras = np.asarray(ras, dtype=float)
        return ras @ inv[:3, :3].T + inv[:3, 3]

    def ijk_to_ras(self, ijk: np.ndarray) -> np.ndarray:
        """(i, j, k) index coordinates, shape (..., 3), to RAS mm, shape (..., 3)."""
        m = self.ijk_to_ras_matrix()
        return np.asarray(ijk, dtype=float) @ m[:3, :3].T + m[:3, 3]

    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))

    def same_grid(self, other: "Volume", tol: float = 1e-3) -> bool:
        """True when both volumes share shape, spacing, origin and direction (within tol mm / tol)."""
        return (self.shape_zyx == other.shape_zyx
                and np.allclose(self.spacing, other.spacing, atol=tol)
                and np.allclose(self.origin, other.origin, atol=tol)
                and np.allclose(self.direction, other.direction, atol=tol))

    def to_sitk(self) -> sitk.Image:
        image = sitk.GetImageFromArray(self.array)
        image.SetSpacing(tuple(float(s) for s in self.spacing))
        image.SetOrigin(tuple(float(o) for o in self.origin))
        image.SetDirection(tuple(float(d) for d in self.direction.reshape(-1)))
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> "Volume":
        if image.GetDimension() != 3:
            raise ImageReadError(f"expected a 3D image, got {image.GetDimension()}D")
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise ImageReadError("expected a single-channel (scalar) image, "
                                 f"got {image.GetNumberOfComponentsPerPixel()} components per voxel")
        return cls(sitk.GetArrayFromImage(image),
                   tuple(float(s) for s in image.GetSpacing()),
                   tuple(float(o) for o in image.GetOrigin()),
                   np.array(image.GetDirection(), dtype=float).reshape(3, 3))


def describe_grid_mismatch(a: Volume, b: Volume, name_a: str, name_b: str) -> str:
    """One-line explanation of how two grids differ (for error messages)."""
    parts = []
    if a.shape_zyx != b.shape_zyx:
        parts.append(f"size (x,y,z) {a.shape_zyx[::-1]} vs {b.shape_zyx[::-1]}")
    if not np.allclose(a.spacing, b.spacing, atol=1e-3):
        parts.append(f"spacing {tuple(round(s, 4) for s in a.spacing)} vs {tuple(round(s, 4) for s in b.spacing)}")
    if not np.allclose(a.origin, b.origin, atol=1e-3):
        parts.append(f"origin {tuple(round(o, 3) for o in a.origin)} vs {tuple(round(o, 3) for o in b.origin)}")
    if not np.allclose(a.direction, b.direction, atol=1e-3):
        parts.append("direction matrices differ")
    return (f"{name_a} and {name_b} are not on the same voxel grid ({'; '.join(parts)}); "
            f"resample {name_b} onto {name_a} first")


def _read_dicom_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    series_ids = reader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise ImageReadError(f"{folder} is a folder with no DICOM series in it")
    if len(series_ids) > 1:
        raise ImageReadError(f"{folder} holds {len(series_ids)} DICOM series; point to a folder with exactly one")
    files = reader.GetGDCMSeriesFileNames(str(folder), series_ids[0])
    check_slice_positions(files)
    reader.SetFileNames(files)
    return reader.Execute()


def _slice_position(reader: sitk.ImageFileReader, file: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(ImagePositionPatient, slice normal) of one DICOM file (LPS mm), None when it lacks either tag."""
    reader.SetFileName(file)
    reader.ReadImageInformation()
    if not (reader.HasMetaDataKey("0020|0032") and reader.HasMetaDataKey("0020|0037")):
        return None
    try:
        position = np.array([float(v) for v in reader.GetMetaData("0020|0032").split("\\")])
        orientation = np.array([float(v) for v in reader.GetMetaData("0020|0037").split("\\")])
    except ValueError:
        return None
    if position.shape != (3,) or orientation.shape != (6,):
        return None
    return position, np.cross(orientation[:3], orientation[3:])


def check_slice_positions(files: list[str]) -> None:
    """Refuse a DICOM series whose slices are not evenly spaced along their normal: a duplicated slice (two
    files at one position) or a missing one (a gap wider than the others). ITK would average the spacing and
    only warn. The message names the files. Series without position/orientation tags are left to ITK."""
    reader = sitk.ImageFileReader()
    read = [_slice_position(reader, file) for file in files]
    if len(files) < 3 or any(r is None for r in read):
        return
    distance = np.array([position @ read[0][1] for position, _ in read])     # along the first slice's normal
    order = np.argsort(distance, kind="stable")
    gaps = np.diff(distance[order])
    typical = float(np.median(gaps))
    tolerance = max(SLICE_GAP_TOLERANCE * typical, 0.01)
    for n, gap in enumerate(gaps):
        first, second = Path(files[order[n]]).name, Path(files[order[n + 1]]).name
        if gap <= tolerance:
            raise ImageReadError(f"the DICOM series in {Path(files[0]).parent} has two slices at the same position "
                                 f"({first} and {second}, {distance[order[n]]:.2f} mm along the slice normal); "
                                 "remove the duplicate")
        if abs(gap - typical) > tolerance:
            raise ImageReadError(f"the DICOM series in {Path(files[0]).parent} is not evenly spaced: {gap:.2f} mm "
                                 f"between {first} and {second} where the other slices are {typical:.2f} mm apart "
                                 "(a missing slice?); export the complete series")


def check_file_complete(path: Path) -> None:
    """Refuse a truncated or corrupt image file that ITK would read anyway (it zero-fills what is missing).

    A gzip-compressed file (.nii.gz) is decompressed to its end, so a cut or damaged stream (gzip's own length
    and CRC check) is an error; a NIfTI file must then hold the voxel bytes its header announces
    (vox_offset + nx ny nz ... x bytes per voxel, read with nibabel, a reader independent of ITK)."""
    name = str(path).lower()
    size = path.stat().st_size
    if name.endswith(".gz"):
        size = 0
        try:
            with gzip.open(path, "rb") as stream:
                for chunk in iter(lambda: stream.read(1 << 22), b""):
                    size += len(chunk)
        except (EOFError, OSError, zlib.error) as err:
            raise ImageReadError(f"{path}: cannot be read: the compressed file is truncated or corrupt ({err}); "
                                 "copy or export it again") from None
    if name.endswith(NIFTI_SUFFIXES):
        import nibabel

        try:
            header = nibabel.load(str(path)).header
        except Exception as err:  # noqa: BLE001 - any nibabel failure means the header is unusable
            raise ImageReadError(f"{path}: cannot be read as NIfTI ({err})") from None
        expected = int(header.get_data_offset()) + int(np.prod(header.get_data_shape())) \
            * header.get_data_dtype().itemsize
        if size < expected:
            raise ImageReadError(f"{path}: cannot be read: the file is truncated: it holds {size:,} bytes of image "
                                 f"data where its header announces {expected:,}; copy or export it again")


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a NIfTI/NRRD/MetaImage file or a DICOM series folder into a ``Volume`` (array in z, y, x)."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file or folder")
    try:
        if path.is_dir():
            image = _read_dicom_series(path)
        else:
            if not str(path).lower().endswith(READABLE_SUFFIXES):
                raise ImageReadError(f"{path}: unsupported file type; give NIfTI (.nii/.nii.gz), NRRD (.nrrd) "
                                     "or a DICOM series folder")
            check_file_complete(path)
            image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        first_line = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown reader error"
        raise ImageReadError(f"{path}: cannot be read as an image ({first_line})") from None
    volume = Volume.from_sitk(image)
    if str(path).lower().endswith(NIFTI_SUFFIXES) and np.issubdtype(volume.array.dtype, np.floating):
        _restore_nifti_nans(path, volume.array)
    return volume


def _restore_nifti_nans(path: Path, array_zyx: np.ndarray) -> None:
    """ITK's NIfTI reader turns NaN voxels into 0; put them back (read with nibabel, (i, j, k) -> (z, y, x)) so
    that a NaN in the input is reported instead of silently becoming 0 HU."""
    import nibabel

    data_ijk = np.asanyarray(nibabel.load(str(path)).dataobj)
    if data_ijk.ndim == 3 and np.issubdtype(data_ijk.dtype, np.floating):
        nans = np.isnan(data_ijk).transpose(2, 1, 0)
        if nans.shape == array_zyx.shape and nans.any():
            array_zyx[nans] = np.nan


def write_volume(volume: Volume, path: str | os.PathLike) -> Path:
    """Write a ``Volume`` to NIfTI/NRRD/MetaImage (chosen by the suffix), compressed, geometry preserved.

    Written whole or not at all (``atomic_files.atomic_target``): the temporary file is read back (complete
    compressed stream and voxel data, header size) before it replaces ``path``; a write cut short by a full
    disk or a quota (ITK does not always say so) raises ``OutputError`` and leaves ``path`` as it was."""
    path = Path(path)
    if not str(path).lower().endswith(WRITABLE_SUFFIXES):
        raise ValueError(f"{path}: unsupported output type; use .nii.gz, .nii, .nrrd or .mha")
    with atomic_target(path) as temporary:
        try:
            sitk.WriteImage(volume.to_sitk(), str(temporary), useCompression=True)
        except RuntimeError as err:
            raise output_error(path, err) from None
        _check_written(temporary, volume, path)
    return path


def _check_written(temporary: Path, volume: Volume, path: Path) -> None:
    """Read back what ITK wrote: complete (``check_file_complete``) and of the volume's size; OutputError if not."""
    try:
        check_file_complete(temporary)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(temporary))
        reader.ReadImageInformation()
        size = tuple(reader.GetSize())
    except (ImageReadError, RuntimeError) as err:
        raise OutputError(f"cannot write {path}: the file written is incomplete ({str(err).split(': ')[-1]}); "
                          "disk full or over quota?") from None
    if size != volume.shape_zyx[::-1]:
        raise OutputError(f"cannot write {path}: the file written has size {size}, not {volume.shape_zyx[::-1]}")
