"""The region around a point, cropped and resampled as the training patches were.

Training patches (see `tumorchar.data.patches`) are cubes of a fixed physical size on an
isotropic grid centred on the nodule. `extract_patch` builds the same cube around any
point of a scan: a grid of ``n = round(size_mm / spacing_mm)`` voxels per axis with the
scan's own axis directions, centred on the point, sampled with linear interpolation, and
filled with `fill_value` (air for CT) where it leaves the scan.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk

from tumorchar.bundle.scan import Scan


@dataclass(frozen=True)
class RegionSettings:
    """How a training patch was cut: isotropic spacing, cube edge, value outside the scan."""

    spacing_mm: float = 0.5
    size_mm: float = 32.0
    fill_value: float = -1000.0

    @property
    def n_voxels(self) -> int:
        return int(round(self.size_mm / self.spacing_mm))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RegionPatch:
    """A resampled cube `(z, y, x)`, its central axial slice, and how it was placed."""

    volume: np.ndarray
    slice2d: np.ndarray
    center_mm: tuple[float, float, float]
    leaves_scan: bool


def extract_patch(scan: Scan, center_mm: np.ndarray, settings: RegionSettings) -> RegionPatch:
    """Resample the cube of `settings` centred on `center_mm` (x, y, z world coordinates)."""
    n = settings.n_voxels
    spacing = float(settings.spacing_mm)
    direction = np.array(scan.image.GetDirection(), dtype=float).reshape(3, 3)
    half_extent = np.full(3, (n - 1) / 2.0 * spacing)
    origin = np.asarray(center_mm, dtype=float) - direction @ half_extent
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([n, n, n])
    resampler.SetOutputSpacing([spacing] * 3)
    resampler.SetOutputDirection(direction.ravel().tolist())
    resampler.SetOutputOrigin(origin.tolist())
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetDefaultPixelValue(float(settings.fill_value))
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    volume = sitk.GetArrayFromImage(resampler.Execute(scan.image)).astype(np.float32)
    return RegionPatch(
        volume=volume,
        slice2d=volume[n // 2].copy(),
        center_mm=tuple(float(v) for v in center_mm),
        leaves_scan=_leaves_scan(scan, origin, direction, n, spacing),
    )


def _leaves_scan(scan: Scan, origin: np.ndarray, direction: np.ndarray, n: int, spacing: float):
    """Whether any corner of the cube lies outside the scan's voxel extent."""
    size = np.array(scan.image.GetSize(), dtype=float)
    for corner in np.ndindex(2, 2, 2):
        point = origin + direction @ (np.array(corner) * (n - 1) * spacing)
        index = np.array(scan.image.TransformPhysicalPointToContinuousIndex(point.tolist()))
        if np.any(index < -0.5) or np.any(index > size - 0.5):
            return True
    return False
