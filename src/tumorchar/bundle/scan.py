"""Scans for prediction: reading, geometry checks, modality, and where the region is.

A scan travels as a `tumorchar.data.io.Volume` (array `(z, y, x)` + spacing + origin +
direction). Points are given as ``(x, y, z)``: in millimetres in the scan's world
(patient) coordinates, the frame of DICOM's ImagePositionPatient, or as voxel indices
(column, row, slice). With D the direction matrix and s = (dx, dy, dz), voxel index
v = (i, j, k) sits at p = origin + D (v ⊙ s), so v = (Dᵀ (p − origin)) ⊘ s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tumorchar.data.io import NIFTI_SUFFIXES, NRRD_SUFFIXES, ScanReadError, Volume
from tumorchar.errors import ScanError

_CT_AIR_HU = -500.0  # a CT of the chest or abdomen always has voxels below this (air)
_KNOWN_SUFFIXES = (*NIFTI_SUFFIXES, *NRRD_SUFFIXES, ".mha", ".mhd", ".dcm")


@dataclass(frozen=True)
class Scan:
    """A scan ready for region extraction.

    `modality` is ``"ct"`` or ``"mri"`` when the file says so (DICOM) or the caller does,
    otherwise None (NIfTI and NRRD carry no modality).
    """

    volume: Volume
    modality: str | None
    case_id: str

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.volume.array.shape)

    @property
    def _direction(self) -> np.ndarray:
        return np.asarray(self.volume.direction, dtype=float).reshape(3, 3)

    @property
    def _spacing_xyz(self) -> np.ndarray:
        return np.asarray(self.volume.spacing, dtype=float)[::-1]

    def index_of(self, point_xyz: np.ndarray) -> np.ndarray:
        """Continuous voxel index (i, j, k) = (column, row, slice) of a world point."""
        offset = np.asarray(point_xyz, float) - np.asarray(self.volume.origin, float)
        return (self._direction.T @ offset) / self._spacing_xyz

    def point_of(self, index_ijk: np.ndarray) -> np.ndarray:
        """World point (x, y, z) of a continuous voxel index (i, j, k)."""
        scaled = np.asarray(index_ijk, float) * self._spacing_xyz
        return np.asarray(self.volume.origin, float) + self._direction @ scaled

    def axes_coordinates(self, point_xyz: np.ndarray) -> tuple[float, float, float]:
        """The point in `Volume.axes_mm()` coordinates: (⟨p, d_z⟩, ⟨p, d_y⟩, ⟨p, d_x⟩)."""
        projected = self._direction.T @ np.asarray(point_xyz, float)
        return float(projected[2]), float(projected[1]), float(projected[0])


def case_id_for(path: str | os.PathLike) -> str:
    """The case id derived from a file or folder name (extension removed)."""
    name = Path(path).name
    for suffix in _KNOWN_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def read_scan(path: str | os.PathLike, case_id: str | None = None) -> Scan:
    """Read a DICOM series folder, a single DICOM file, a NIfTI or an NRRD file.

    Raises `ScanError` (naming the case) when the scan is unreadable or carries no voxel
    spacing: a DICOM without PixelSpacing, an NRRD without `space directions`/`spacings`.
    """
    from tumorchar.data.io import read_dicom_series, read_image

    path = Path(path)
    case_id = case_id or case_id_for(path)
    if not path.exists():
        raise ScanError(f"case {case_id}: {path} does not exist")
    try:
        if path.is_dir():
            return Scan(read_dicom_series(path, case_id=case_id), _folder_modality(path), case_id)
        lower = path.name.lower()
        if lower.endswith(NRRD_SUFFIXES):
            _require_nrrd_spacing(path, case_id)
        if lower.endswith((*NIFTI_SUFFIXES, *NRRD_SUFFIXES, ".mha", ".mhd")):
            return Scan(read_image(path, case_id=case_id), None, case_id)
        return _read_dicom_file(path, case_id)
    except ScanReadError as error:
        raise ScanError(str(error)) from None


def _read_dicom_file(path: Path, case_id: str) -> Scan:
    """One DICOM image file (HU through SimpleITK's rescale), e.g. a single CT slice."""
    import pydicom
    import SimpleITK as sitk

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as error:  # pydicom raises several types for non-DICOM input
        raise ScanError(
            f"case {case_id}: {path.name} is neither a DICOM file nor a NIfTI/NRRD file"
        ) from error
    if "PixelSpacing" not in header:
        raise ScanError(
            f"case {case_id}: the DICOM file has no PixelSpacing, so distances in mm are "
            "unknown; cannot crop a region of the training size"
        )
    try:
        image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    except RuntimeError:
        raise ScanError(f"case {case_id}: cannot decode the pixels of {path.name}") from None
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    return Scan(Volume.from_sitk(image), _modality_of(header.get("Modality")), case_id)


def _folder_modality(folder: Path) -> str | None:
    import pydicom

    for path in sorted(folder.iterdir()):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
        except Exception:  # not DICOM (a readme, a DICOMDIR...): look at the next file
            continue
        if header.get("Modality"):
            return _modality_of(header.Modality)
    return None


def _modality_of(value: str | None) -> str | None:
    if not value:
        return None
    value = str(value).strip().upper()
    return {"CT": "ct", "MR": "mri"}.get(value, value.lower())


def _require_nrrd_spacing(path: Path, case_id: str) -> None:
    """An NRRD header without `spacings` or `space directions` has no physical scale
    (readers then silently assume 1 mm)."""
    with open(path, "rb") as handle:
        header = handle.read(1 << 16).split(b"\n\n", 1)[0].lower()
    if b"space directions:" not in header and b"spacings:" not in header:
        raise ScanError(
            f"case {case_id}: the NRRD header has neither 'space directions' nor 'spacings', "
            "so distances in mm are unknown"
        )


def as_scan(scan: Any, case_id: str | None = None, modality: str | None = None) -> Scan:
    """Accept a path, a `Scan`, a `Volume` or a SimpleITK image."""
    if isinstance(scan, str | os.PathLike):
        result = read_scan(scan, case_id)
    elif isinstance(scan, Scan):
        result = scan
    elif isinstance(scan, Volume):
        result = Scan(scan, None, case_id or "scan")
    elif isinstance(scan, np.ndarray):
        raise ScanError(
            f"case {case_id or 'scan'}: a bare array has no spacing information; pass a file "
            "or a tumorchar.data.io.Volume that carries its spacing"
        )
    elif type(scan).__module__.startswith("SimpleITK"):
        result = Scan(Volume.from_sitk(scan), None, case_id or "scan")
    else:
        raise ScanError(f"case {case_id or 'scan'}: unsupported scan type {type(scan).__name__}")
    if case_id and result.case_id != case_id:
        result = replace(result, case_id=case_id)
    if modality is not None:
        result = replace(result, modality=normalize_modality(modality))
    return result


def normalize_modality(value: str) -> str:
    aliases = {"ct": "ct", "mr": "mri", "mri": "mri"}
    key = value.strip().lower()
    if key not in aliases:
        raise ScanError(f"unknown modality {value!r}; use 'ct' or 'mri'")
    return aliases[key]


def infer_modality(scan: Scan) -> str:
    """The scan's modality: from its header when known, else from its intensities
    (a CT in Hounsfield units has air below -500 HU; MRI intensities are non-negative)."""
    if scan.modality is not None:
        return scan.modality
    return "ct" if float(np.min(scan.volume.array)) < _CT_AIR_HU else "mri"


def locate_point(scan: Scan, point_xyz, units: str = "mm") -> np.ndarray:
    """World coordinates of a point given in mm or voxels; `ScanError` if it is outside."""
    point = np.asarray(point_xyz, dtype=float).ravel()
    if point.shape != (3,) or not np.all(np.isfinite(point)):
        raise ScanError(f"case {scan.case_id}: a point needs three finite coordinates x,y,z")
    if units == "mm":
        index = scan.index_of(point)
    elif units == "voxel":
        index = point
    else:
        raise ScanError(f"unknown units {units!r}; use 'mm' or 'voxel'")
    size = np.array(scan.shape_zyx[::-1], dtype=float)
    if np.any(index < -0.5) or np.any(index > size - 0.5):
        raise ScanError(
            f"case {scan.case_id}: point {tuple(point.tolist())} ({units}) is outside the scan "
            f"(voxel index {tuple(np.round(index, 1).tolist())}; the scan has x, y, z sizes "
            f"{tuple(int(s) for s in size)})"
        )
    return scan.point_of(index)


def mask_center(scan: Scan, mask: Any) -> np.ndarray:
    """World centroid (x, y, z) of a mask on the scan's grid (array, Volume or file)."""
    center_kji = np.argwhere(mask_array(scan, mask)).mean(axis=0)
    return scan.point_of(center_kji[::-1])


def mask_array(scan: Scan, mask: Any) -> np.ndarray:
    """A non-empty bool mask `(z, y, x)` on the scan's grid, from an array, Volume or file."""
    if isinstance(mask, str | os.PathLike):
        from tumorchar.data.io import read_image

        try:
            mask = read_image(mask, case_id=scan.case_id)
        except ScanReadError as error:
            raise ScanError(f"{error} (the mask)") from None
    if isinstance(mask, Volume):
        same_origin = np.allclose(
            mask.origin, scan.volume.origin, atol=1e-2 * min(scan.volume.spacing)
        )
        if (
            mask.array.shape != scan.volume.array.shape
            or not np.allclose(mask.spacing, scan.volume.spacing, rtol=1e-3)
            or not same_origin
        ):
            raise ScanError(
                f"case {scan.case_id}: the mask's grid (shape {mask.array.shape}, spacing "
                f"{tuple(round(s, 4) for s in mask.spacing)}) does not match the scan's (shape "
                f"{scan.volume.array.shape}, spacing "
                f"{tuple(round(s, 4) for s in scan.volume.spacing)})"
            )
        mask = mask.array
    mask = np.asarray(mask) != 0
    if mask.shape != scan.shape_zyx:
        raise ScanError(
            f"case {scan.case_id}: mask shape {mask.shape} (z, y, x) does not match the "
            f"scan's {scan.shape_zyx}"
        )
    if not mask.any():
        raise ScanError(f"case {scan.case_id}: the mask is empty")
    return mask
