"""The region around a point, cropped and resampled as the training patches were.

CT training patches (`tumorchar.data.ct_patches`) are cubes of a fixed physical size on an
isotropic grid centred on the nodule, cut with `tumorchar.data.resample.crop_patch`
(trilinear, air outside the scan); their 2D slice is the cube's middle axial slice.
`extract_patch` calls the same function with the settings recorded in the bundle, so a
new scan's region is made exactly as the training ones were.

MRI training cases (`tumorchar.data.mri`) are the axial slices an ROI touches, after N4
bias correction and curvature anisotropic diffusion of the whole volume, each cropped to
the ROI's square in-plane extent plus a margin and resampled to `roi_size`² pixels; the 2D
image is the middle one. `extract_mri_region` runs those same functions on a new scan
with the bundle's settings. The ROI is the given mask; for a point, it is a square of the
training ROIs' median in-plane extent on the axial slice through the point.

A CT scan of a single slice (e.g. one DICOM image) is treated as a slab of its slice
thickness: the slice is repeated at ±thickness/2 so that the cube's samples within the
slab take its values, where a single sample plane would leave the whole cube as air.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from tumorchar.bundle.scan import Scan, ScanError


@dataclass(frozen=True)
class RegionSettings:
    """How a CT training patch was cut: isotropic spacing, cube edge, value outside."""

    spacing_mm: float = 0.5
    size_mm: float = 32.0
    fill_value: float = -1000.0
    kind: str = "ct-cube"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MRIRegionSettings:
    """How MRI training ROIs were made: the preprocessing and ROI settings of the store
    (`tumorchar.data.mri.MRISettings` fields), and the in-plane ROI side used for a point."""

    mri: dict
    roi_extent_mm: float
    kind: str = "mri-roi"

    def to_dict(self) -> dict:
        return asdict(self)

    def mri_settings(self):
        from tumorchar.data.mri import MRISettings

        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in self.mri.items()}
        return MRISettings(**fields)


def region_settings_from_dict(data: dict) -> RegionSettings | MRIRegionSettings:
    kind = data.get("kind", "ct-cube")
    if kind == "ct-cube":
        return RegionSettings(**data)
    if kind == "mri-roi":
        return MRIRegionSettings(**data)
    raise ValueError(f"unknown region kind {kind!r}")


@dataclass(frozen=True)
class RegionPatch:
    """A resampled cube `(z, y, x)`, its middle axial slice, and how it was placed.

    `axes_mm` are the sample positions along z, y, x in the scan's `Volume.axes_mm()`
    coordinates (None when unknown, e.g. a patch read from a store): what maps a map made on
    the patch back onto the scan.
    """

    volume: np.ndarray
    slice2d: np.ndarray
    center_mm: tuple[float, float, float]
    padded_fraction: float
    axes_mm: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


def _as_slab(scan: Scan) -> Scan:
    """A one-slice scan as two copies of the slice, one slice thickness apart."""
    volume = scan.volume
    if volume.array.shape[0] != 1:
        return scan
    thickness = float(volume.spacing[0])
    normal = np.asarray(volume.direction, float).reshape(3, 3)[:, 2]
    origin = np.asarray(volume.origin, float) - normal * thickness / 2.0
    slab = replace(volume, array=np.repeat(volume.array, 2, axis=0), origin=tuple(origin.tolist()))
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
        axes_mm=crop.axes_mm,
    )


def point_roi(scan: Scan, center_mm: np.ndarray, extent_mm: float) -> np.ndarray:
    """A square ROI of side `extent_mm` centred on the point, on its nearest axial slice."""
    k, j, i = scan.index_of(center_mm)[::-1]
    shape = scan.shape_zyx
    half_rows = extent_mm / 2.0 / float(scan.volume.spacing[1])
    half_cols = extent_mm / 2.0 / float(scan.volume.spacing[2])
    roi = np.zeros(shape, bool)
    rows = slice(max(0, int(np.floor(j - half_rows))), min(shape[1], int(np.ceil(j + half_rows))))
    cols = slice(max(0, int(np.floor(i - half_cols))), min(shape[2], int(np.ceil(i + half_cols))))
    roi[int(np.clip(np.round(k), 0, shape[0] - 1)), rows, cols] = True
    return roi


def extract_mri_region(scan: Scan, roi: np.ndarray, settings: MRIRegionSettings) -> RegionPatch:
    """The ROI slices of a preprocessed MRI, as `tumorchar.data.mri.mri_case` makes them."""
    from tumorchar.data.mri import preprocess, roi_axes, roi_slices

    if float(np.min(scan.volume.array)) < 0:
        raise ScanError(
            f"case {scan.case_id}: negative intensities; the MRI model expects a magnitude image"
        )
    mri = settings.mri_settings()
    corrected = preprocess(scan.volume, mri)
    stack, _, _ = roi_slices(corrected, roi, mri)
    center_kji = np.argwhere(roi).mean(axis=0)
    return RegionPatch(
        volume=stack,
        slice2d=stack[stack.shape[0] // 2].copy(),
        center_mm=tuple(float(v) for v in scan.point_of(center_kji[::-1])),
        padded_fraction=0.0,
        axes_mm=roi_axes(corrected, roi, mri)[0],
    )


def region_mask(scan: Scan, center_mm: np.ndarray, settings) -> np.ndarray:
    """The voxels of `scan` (bool, z, y, x) inside the region a model looks at around a point.

    CT (`RegionSettings`): the cube `extract_patch` samples, i.e. the voxels whose centres
    lie within n·s/2 of the centre along each of the scan's axes (n = round(size / s) samples
    of spacing s, `tumorchar.data.resample.patch_axes`). MRI (`MRIRegionSettings`): the ROI
    square of `point_roi`.
    """
    if isinstance(settings, MRIRegionSettings):
        return point_roi(scan, center_mm, settings.roi_extent_mm)
    n = max(1, int(round(settings.size_mm / settings.spacing_mm)))
    half = n * settings.spacing_mm / 2.0
    inside = [
        np.abs(coords - c) <= half + 1e-6
        for coords, c in zip(scan.volume.axes_mm(), scan.axes_coordinates(center_mm), strict=True)
    ]
    return inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]
