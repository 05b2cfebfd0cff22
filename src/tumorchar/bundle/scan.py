"""Scans for prediction: reading, geometry checks, modality, and where the region is.

A scan travels as a SimpleITK image (array + origin + spacing + direction). Points are
given as ``(x, y, z)``: in millimetres in the scan's world (patient) coordinates, the
frame of DICOM's ImagePositionPatient, or as voxel indices (column, row, slice).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
_DICOM_MODALITY_TAG = "0008|0060"
_CT_AIR_HU = -500.0  # a CT of the chest or abdomen always has voxels below this (air)


class ScanError(ValueError):
    """A scan, point or mask that cannot be characterized; the message names the case."""


@dataclass(frozen=True)
class Scan:
    """A scan ready for region extraction.

    `modality` is ``"ct"`` or ``"mri"`` when the file says so (DICOM) or the caller does,
    otherwise None (NIfTI and NRRD carry no modality).
    """

    image: sitk.Image
    modality: str | None
    case_id: str

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        size = self.image.GetSize()
        return (size[2], size[1], size[0])


def _suffix_of(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def case_id_for(path: str | os.PathLike) -> str:
    """The case id derived from a file or folder name (extension removed)."""
    path = Path(path)
    name = path.name
    for suffix in (*NIFTI_SUFFIXES, *NRRD_SUFFIXES, ".dcm", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return name


def read_scan(path: str | os.PathLike, case_id: str | None = None) -> Scan:
    """Read a DICOM series folder, a DICOM file, a NIfTI or an NRRD file into a `Scan`.

    Raises `ScanError` when the file is unreadable or carries no voxel spacing.
    """
    path = Path(path)
    case_id = case_id or case_id_for(path)
    if not path.exists():
        raise ScanError(f"case {case_id}: {path} does not exist")
    try:
        if path.is_dir():
            image, modality = _read_dicom_series(path, case_id)
        else:
            image, modality = _read_file(path, case_id)
    except RuntimeError as error:  # SimpleITK's exception type
        raise ScanError(f"case {case_id}: cannot read {path.name}: not a readable scan") from error
    if image.GetDimension() != 3:
        raise ScanError(f"case {case_id}: expected a 3D scan, got {image.GetDimension()}D")
    return Scan(image=sitk.Cast(image, sitk.sitkFloat32), modality=modality, case_id=case_id)


def _read_dicom_series(folder: Path, case_id: str) -> tuple[sitk.Image, str | None]:
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise ScanError(f"case {case_id}: no DICOM series in folder {folder.name}")
    if len(series) > 1:
        raise ScanError(
            f"case {case_id}: folder {folder.name} holds {len(series)} DICOM series; "
            "point --scan at a folder with one series"
        )
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    _require_dicom_spacing(Path(files[0]), case_id)
    reader.SetFileNames(files)
    image = reader.Execute()
    return image, _dicom_modality(Path(files[0]))


def _read_file(path: Path, case_id: str) -> tuple[sitk.Image, str | None]:
    suffix = _suffix_of(path)
    if suffix in NRRD_SUFFIXES:
        _require_nrrd_spacing(path, case_id)
        return sitk.ReadImage(str(path)), None
    if suffix in NIFTI_SUFFIXES or suffix in (".mha", ".mhd"):
        return sitk.ReadImage(str(path)), None
    _require_dicom_spacing(path, case_id)  # anything else is tried as a DICOM file
    return sitk.ReadImage(str(path)), _dicom_modality(path)


def _require_dicom_spacing(path: Path, case_id: str) -> None:
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as error:  # pydicom raises several types for non-DICOM input
        raise ScanError(f"case {case_id}: {path.name} is not a DICOM file") from error
    if "PixelSpacing" not in header:
        raise ScanError(
            f"case {case_id}: the DICOM file has no PixelSpacing, so distances in mm are "
            "unknown; cannot crop a region of the training size"
        )


def _dicom_modality(path: Path) -> str | None:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    if not reader.HasMetaDataKey(_DICOM_MODALITY_TAG):
        return None
    value = reader.GetMetaData(_DICOM_MODALITY_TAG).strip().upper()
    return {"CT": "ct", "MR": "mri"}.get(value, value.lower())


def _require_nrrd_spacing(path: Path, case_id: str) -> None:
    """An NRRD header without `spacings` or `space directions` has no physical scale."""
    with open(path, "rb") as handle:
        header = handle.read(1 << 16).split(b"\n\n", 1)[0].lower()
    if b"space directions:" not in header and b"spacings:" not in header:
        raise ScanError(
            f"case {case_id}: the NRRD header has neither 'space directions' nor 'spacings', "
            "so distances in mm are unknown"
        )


def as_scan(scan: Any, case_id: str | None = None, modality: str | None = None) -> Scan:
    """Accept a path, a `Scan`, a SimpleITK image or an object with `array` and `spacing`."""
    if isinstance(scan, str | os.PathLike):
        result = read_scan(scan, case_id)
    elif isinstance(scan, Scan):
        result = scan
    elif isinstance(scan, sitk.Image):
        result = Scan(sitk.Cast(scan, sitk.sitkFloat32), None, case_id or "scan")
    elif isinstance(scan, np.ndarray):
        raise ScanError(
            f"case {case_id or 'scan'}: a bare array has no spacing information; pass a "
            "file path or a volume that carries its spacing"
        )
    else:
        result = _from_volume_object(scan, case_id or getattr(scan, "case_id", None) or "scan")
    if case_id and result.case_id != case_id:
        result = Scan(result.image, result.modality, case_id)
    if modality is not None:
        result = Scan(result.image, normalize_modality(modality), result.case_id)
    return result


def _from_volume_object(volume: Any, case_id: str) -> Scan:
    """A volume object with `array` (z, y, x), `spacing` (z, y, x) mm and optional
    `origin` (x, y, z) mm and `direction` (9 values, ITK order)."""
    array = getattr(volume, "array", None)
    spacing = getattr(volume, "spacing", None) or getattr(volume, "spacing_mm", None)
    if array is None:
        raise ScanError(f"case {case_id}: unsupported scan type {type(volume).__name__}")
    if spacing is None:
        raise ScanError(f"case {case_id}: the volume has no spacing information")
    spacing_zyx = [float(s) for s in np.broadcast_to(np.asarray(spacing, float), (3,))]
    if not all(np.isfinite(s) and s > 0 for s in spacing_zyx):
        raise ScanError(f"case {case_id}: invalid spacing {spacing_zyx}")
    image = sitk.GetImageFromArray(np.asarray(array, dtype=np.float32))
    image.SetSpacing(spacing_zyx[::-1])
    if getattr(volume, "origin", None) is not None:
        image.SetOrigin([float(v) for v in volume.origin])
    if getattr(volume, "direction", None) is not None:
        image.SetDirection([float(v) for v in np.ravel(volume.direction)])
    modality = getattr(volume, "modality", None)
    return Scan(image, normalize_modality(modality) if modality else None, case_id)


def normalize_modality(value: str) -> str:
    value = value.strip().lower()
    aliases = {"ct": "ct", "mr": "mri", "mri": "mri"}
    if value not in aliases:
        raise ScanError(f"unknown modality {value!r}; use 'ct' or 'mri'")
    return aliases[value]


def infer_modality(scan: Scan) -> str:
    """The scan's modality: from its header when known, else from its intensities
    (a CT in Hounsfield units has air below -500 HU; MRI intensities are non-negative)."""
    if scan.modality is not None:
        return scan.modality
    minimum = float(sitk.GetArrayViewFromImage(scan.image).min())
    return "ct" if minimum < _CT_AIR_HU else "mri"


def point_to_index(scan: Scan, point_xyz: tuple[float, float, float], units: str) -> np.ndarray:
    """Continuous voxel index (x, y, z) of a point; raises `ScanError` if it is outside."""
    if len(point_xyz) != 3 or not all(np.isfinite(point_xyz)):
        raise ScanError(f"case {scan.case_id}: a point needs three finite coordinates")
    if units == "mm":
        index = np.array(scan.image.TransformPhysicalPointToContinuousIndex(point_xyz))
    elif units == "voxel":
        index = np.asarray(point_xyz, dtype=float)
    else:
        raise ScanError(f"unknown units {units!r}; use 'mm' or 'voxel'")
    size = np.array(scan.image.GetSize(), dtype=float)
    if np.any(index < -0.5) or np.any(index > size - 0.5):
        raise ScanError(
            f"case {scan.case_id}: point {tuple(point_xyz)} ({units}) is outside the scan "
            f"(voxel index {tuple(np.round(index, 1))}, scan size x,y,z = "
            f"{tuple(int(s) for s in size)})"
        )
    return index


def index_to_point(scan: Scan, index_xyz: np.ndarray) -> np.ndarray:
    return np.array(scan.image.TransformContinuousIndexToPhysicalPoint(list(map(float, index_xyz))))


def mask_center(scan: Scan, mask: Any) -> np.ndarray:
    """Centroid (x, y, z, in mm) of a mask on the scan's grid (array or path or image)."""
    if isinstance(mask, str | os.PathLike):
        try:
            mask = sitk.ReadImage(str(mask))
        except RuntimeError as error:
            raise ScanError(f"case {scan.case_id}: cannot read the mask file") from error
    if isinstance(mask, sitk.Image):
        if mask.GetSize() != scan.image.GetSize() or not np.allclose(
            mask.GetSpacing(), scan.image.GetSpacing(), rtol=1e-4
        ):
            raise ScanError(
                f"case {scan.case_id}: the mask's grid ({mask.GetSize()}, spacing "
                f"{mask.GetSpacing()}) does not match the scan's ({scan.image.GetSize()}, "
                f"spacing {scan.image.GetSpacing()})"
            )
        mask = sitk.GetArrayFromImage(mask)
    mask = np.asarray(mask) != 0
    if mask.shape != scan.shape_zyx:
        raise ScanError(
            f"case {scan.case_id}: mask shape {mask.shape} (z, y, x) does not match the "
            f"scan's {scan.shape_zyx}"
        )
    if not mask.any():
        raise ScanError(f"case {scan.case_id}: the mask is empty")
    center_zyx = np.argwhere(mask).mean(axis=0)
    return index_to_point(scan, center_zyx[::-1])
