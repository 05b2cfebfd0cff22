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


def read_scan(
    path: str | os.PathLike, case_id: str | None = None, max_bytes: int | None = None
) -> Scan:
    """Read a DICOM series folder, a single DICOM file, a NIfTI or an NRRD file.

    Raises `ScanError` (naming the case) for everything `tumorchar.data.io` refuses: an
    unreadable, truncated or damaged file, a missing or malformed required attribute, no
    usable voxel spacing (a DICOM without PixelSpacing, an NRRD without `space directions`
    / `spacings`, a NIfTI with zero pixdim...), several components per voxel, a size over
    the memory budget `max_bytes`, non-finite voxels.
    """
    from tumorchar.data.io import read_dicom_file, read_dicom_series, read_image

    path = Path(path)
    case_id = case_id or case_id_for(path)
    if not path.exists():
        raise ScanError(f"case {case_id}: {path} does not exist")
    try:
        if path.is_dir():
            volume = read_dicom_series(path, case_id=case_id, max_bytes=max_bytes)
            return Scan(volume, _folder_modality(path), case_id)
        lower = path.name.lower()
        if lower.endswith((*NIFTI_SUFFIXES, *NRRD_SUFFIXES, ".mha", ".mhd")):
            return Scan(read_image(path, case_id=case_id, max_bytes=max_bytes), None, case_id)
        if not _is_dicom(path):
            raise ScanError(
                f"case {case_id}: {path.name} is neither a DICOM file nor a NIfTI/NRRD file"
            )
        volume = read_dicom_file(path, case_id=case_id, max_bytes=max_bytes)
        return Scan(volume, _file_modality(path), case_id)
    except ScanReadError as error:
        raise ScanError(str(error)) from None


def _is_dicom(path: Path) -> bool:
    """A DICOM Part 10 file starts with a 128-byte preamble and b"DICM"."""
    with open(path, "rb") as handle:
        return handle.read(132)[128:] == b"DICM"


def _file_modality(path: Path) -> str | None:
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
        value = header.get("Modality")
    except Exception:  # the modality is optional; the file was checked when it was read
        return None
    return _modality_of(value) if isinstance(value, str) else None


def _folder_modality(folder: Path) -> str | None:
    for path in sorted(folder.iterdir()):
        if path.is_file():
            modality = _file_modality(path)
            if modality:
                return modality
    return None


def _modality_of(value: str | None) -> str | None:
    if not value or not str(value).strip():
        return None
    value = str(value).strip().upper()
    return {"CT": "ct", "MR": "mri"}.get(value, value.lower())


def as_scan(scan: Any, case_id: str | None = None, modality: str | None = None) -> Scan:
    """Accept a path, a `Scan`, a `Volume` or a SimpleITK image."""
    if isinstance(scan, str | os.PathLike):
        result = read_scan(scan, case_id)
    elif isinstance(scan, Scan):
        result = scan
    elif isinstance(scan, Volume):
        result = Scan(scan, None, case_id or "scan")
        _check_in_memory(result)
    elif isinstance(scan, np.ndarray):
        raise ScanError(
            f"case {case_id or 'scan'}: a bare array has no spacing information; pass a file "
            "or a tumorchar.data.io.Volume that carries its spacing"
        )
    elif type(scan).__module__.startswith("SimpleITK"):
        try:
            volume = Volume.from_sitk(scan)
        except ValueError as error:
            raise ScanError(f"case {case_id or 'scan'}: {error}") from None
        result = Scan(volume, None, case_id or "scan")
        _check_in_memory(result)
    else:
        raise ScanError(f"case {case_id or 'scan'}: unsupported scan type {type(scan).__name__}")
    if case_id and result.case_id != case_id:
        result = replace(result, case_id=case_id)
    if modality is not None:
        result = replace(result, modality=normalize_modality(modality))
    return result


def _check_in_memory(scan: Scan) -> None:
    """An image given in memory gets the file readers' value check: finite voxels."""
    from tumorchar.data.io import check_finite

    try:
        check_finite(scan.volume.array, scan.case_id)
    except ScanReadError as error:
        raise ScanError(str(error)) from None


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


# A mask file is accepted on the scan's grid when, compared with the scan: the shape is
# equal, the voxel sizes agree to MASK_SPACING_RTOL (relative), the origins to
# MASK_ORIGIN_VOXELS of the smallest voxel size, and the direction cosines to
# MASK_DIRECTION_ATOL (1e-4 on a unit vector is 0.006°: float32 headers round to ~1e-7).
MASK_SPACING_RTOL = 1e-3
MASK_ORIGIN_VOXELS = 1e-2
MASK_DIRECTION_ATOL = 1e-4
# Voxels of a mask belong to one component when they touch by a face, edge or corner.
MASK_CONNECTIVITY = 3


def mask_center(scan: Scan, mask: Any, component: str | int | None = None) -> np.ndarray:
    """World centroid (x, y, z) of a mask on the scan's grid (array, Volume or file)."""
    center_kji = np.argwhere(mask_array(scan, mask, component)).mean(axis=0)
    return scan.point_of(center_kji[::-1])


def parse_component(text: str | None) -> str | int | None:
    """A `--component` option: None, ``largest`` or an integer label value."""
    if text is None or not str(text).strip():
        return None
    text = str(text).strip().lower()
    if text == "largest":
        return "largest"
    try:
        return int(text)
    except ValueError:
        raise ScanError(f"component must be 'largest' or a label value, got {text!r}") from None


def mask_array(scan: Scan, mask: Any, component: str | int | None = None) -> np.ndarray:
    """A bool mask `(z, y, x)` of one connected region on the scan's grid.

    `mask` is an array, a `Volume`, a SimpleITK image or a file; an image must lie on the
    scan's grid (shape, spacing, origin and direction within the tolerances above). A mask
    of several separate regions is refused with their count (their joint centroid lies on
    none of them) unless `component` picks one: ``"largest"`` (most voxels) or an integer
    label value (the voxels equal to it, which must form one region).
    """
    if isinstance(mask, str | os.PathLike):
        from tumorchar.data.io import read_image

        try:
            mask = read_image(mask, case_id=scan.case_id)
        except ScanReadError as error:
            raise ScanError(f"{error} (the mask)") from None
    elif type(mask).__module__.startswith("SimpleITK"):
        mask = Volume.from_sitk(mask)
    if isinstance(mask, Volume):
        _check_mask_grid(scan, mask)
        mask = mask.array
    values = np.asarray(mask)
    if values.shape != scan.shape_zyx:
        raise ScanError(
            f"case {scan.case_id}: mask shape {values.shape} (z, y, x) does not match the "
            f"scan's {scan.shape_zyx}"
        )
    return _one_component(values, scan.case_id, component)


def _check_mask_grid(scan: Scan, mask: Volume) -> None:
    volume = scan.volume
    problems = []
    if mask.array.shape != volume.array.shape:
        problems.append(f"shape {mask.array.shape} vs {volume.array.shape} (z, y, x)")
    if not np.allclose(mask.spacing, volume.spacing, rtol=MASK_SPACING_RTOL):
        problems.append(
            f"spacing {tuple(round(s, 4) for s in mask.spacing)} vs "
            f"{tuple(round(s, 4) for s in volume.spacing)} mm"
        )
    origin_tol = MASK_ORIGIN_VOXELS * min(volume.spacing)
    if not np.allclose(mask.origin, volume.origin, rtol=0, atol=origin_tol):
        problems.append(
            f"origin {tuple(round(o, 3) for o in mask.origin)} vs "
            f"{tuple(round(o, 3) for o in volume.origin)} mm"
        )
    directions = (np.asarray(d, float).reshape(3, 3) for d in (mask.direction, volume.direction))
    if not np.allclose(*directions, rtol=0, atol=MASK_DIRECTION_ATOL):
        problems.append("direction matrix differs")
    if problems:
        raise ScanError(
            f"case {scan.case_id}: the mask is not on the scan's grid: " + "; ".join(problems)
        )


def _one_component(values: np.ndarray, case_id: str, component: str | int | None) -> np.ndarray:
    from scipy import ndimage

    if component is None or component == "largest":
        binary, what = values != 0, "the mask"
    elif isinstance(component, int | np.integer) and not isinstance(component, bool):
        binary, what = values == component, f"label {component} of the mask"
        if not binary.any():
            found = np.unique(values[values != 0])[:10].tolist()
            raise ScanError(
                f"case {case_id}: the mask has no voxel of label {component} (labels: {found})"
            )
    else:
        raise ScanError(f"component must be 'largest' or a label value, got {component!r}")
    if not binary.any():
        raise ScanError(f"case {case_id}: the mask is empty")
    structure = ndimage.generate_binary_structure(3, MASK_CONNECTIVITY)
    labels, count = ndimage.label(binary, structure=structure)
    if count == 1:
        return binary
    sizes = np.bincount(labels.ravel())[1:]
    if component == "largest":
        return labels == int(np.argmax(sizes)) + 1  # ties: the first in scan order
    largest = ", ".join(str(n) for n in sorted(sizes, reverse=True)[:5])
    raise ScanError(
        f"case {case_id}: {what} has {count} separate regions (voxels: {largest}); their joint "
        "centroid lies on none of them. Pick one: component 'largest' or a label value "
        "(--component)"
    )
