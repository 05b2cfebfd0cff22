"""The region around a point, cropped and resampled as the training patches were.

CT training patches (`tumorchar.data.ct_patches`) are cubes of a fixed physical size on an
isotropic grid centred on the nodule, cut with `tumorchar.data.resample.crop_patch`
(trilinear, air outside the scan); their 2D slice is the cube's middle axial slice.
`extract_patch` calls the same function with the settings recorded in the bundle, so a
new scan's region is made exactly as the training ones were.

A scan of a single slice (e.g. one DICOM image) is treated as a slab of its slice
thickness: the slice is repeated at ±thickness/2 so that the cube's samples within the
slab take its values, where a single sample plane would leave the whole cube as air.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from tumorchar.bundle.scan import Scan


@dataclass(frozen=True)
class RegionSettings:
    """How a training patch was cut: isotropic spacing, cube edge, value outside the scan."""

    spacing_mm: float = 0.5
    size_mm: float = 32.0
    fill_value: float = -1000.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RegionPatch:
    """A resampled cube `(z, y, x)`, its middle axial slice, and how it was placed."""

    volume: np.ndarray
    slice2d: np.ndarray
    center_mm: tuple[float, float, float]
    padded_fraction: float


def _as_slab(scan: Scan) -> Scan:
    """A one-slice scan as two copies of the slice, one slice thickness apart."""
    volume = scan.volume
    if volume.array.shape[0] != 1:
        return scan
    thickness = float(volume.spacing[0])
    normal = np.asarray(volume.direction, float).reshape(3, 3)[:, 2]
    origin = np.asarray(volume.origin, float) - normal * thickness / 2.0
    slab = replace(
        volume, array=np.repeat(volume.array, 2, axis=0), origin=tuple(origin.tolist())
    )
    return replace(scan, volume=slab)


def extract_patch(scan: Scan, center_mm: np.ndarray, settings: RegionSettings) -> RegionPatch:
    """The cube of `settings` centred on the world point `center_mm` (x, y, z)."""
    from tumorchar.data.resample import crop_patch

    scan = _as_slab(scan)
    crop = crop_patch(
        scan.volume,
        scan.axes_coordinates(center_mm),
        size_mm=settings.size_mm,
        spacing_mm=settings.spacing_mm,
        fill=settings.fill_value,
    )
    volume = np.ascontiguousarray(crop.array, dtype=np.float32)
    return RegionPatch(
        volume=volume,
        slice2d=volume[volume.shape[0] // 2].copy(),
        center_mm=tuple(float(v) for v in center_mm),
        padded_fraction=float(crop.padded_fraction),
    )
