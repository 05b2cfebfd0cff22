"""Isotropic resampling and fixed-size physical crops.

Two tools:

- `resample_isotropic` resamples a whole `Volume` with SimpleITK (any direction matrix);
- `crop_patch` / `resample_on_axes` cut a cube of a fixed physical size around a point
  and resample it to isotropic spacing in one step, with separable linear interpolation
  along the index axes. Only the few source voxels the cube touches are read, so cropping
  a patch out of a 512×512×300 scan costs about as much as the patch itself; slice
  positions need not be evenly spaced (the cohort's masks carry their real z positions).

Sample points outside the source grid get the fill value (air, −1000 HU, for CT) and are
counted, so a nodule near the scan border is padded and the padding is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tumorchar.data.io import Volume

AIR_HU = -1000.0
# Points this close (mm) outside the first / last source sample still count as inside.
EDGE_TOLERANCE_MM = 1e-6


def linear_weights(coords_in: np.ndarray, coords_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Matrix W (n_out × n_in) of 1D linear interpolation, and which outputs lie inside.

    For c_in[i] ≤ c ≤ c_in[i+1]: W[o, i] = 1 − t, W[o, i+1] = t, t = (c − c_in[i]) /
    (c_in[i+1] − c_in[i]); rows of points outside [c_in[0], c_in[-1]] are zero. `coords_in`
    must be strictly increasing (gaps may vary).
    """
    coords_in = np.asarray(coords_in, float)
    coords_out = np.asarray(coords_out, float)
    if coords_in.ndim != 1 or coords_in.size == 0:
        raise ValueError("coords_in must be a non-empty 1D array")
    if np.any(np.diff(coords_in) <= 0):
        raise ValueError("coords_in must be strictly increasing")
    weights = np.zeros((coords_out.size, coords_in.size))
    lo, hi = coords_in[0] - EDGE_TOLERANCE_MM, coords_in[-1] + EDGE_TOLERANCE_MM
    inside = (coords_out >= lo) & (coords_out <= hi)
    rows = np.flatnonzero(inside)
    if coords_in.size == 1:
        weights[rows, 0] = 1.0
        return weights, inside
    c = np.clip(coords_out[rows], coords_in[0], coords_in[-1])
    left = np.clip(np.searchsorted(coords_in, c, side="right") - 1, 0, coords_in.size - 2)
    t = (c - coords_in[left]) / (coords_in[left + 1] - coords_in[left])
    weights[rows, left] = 1.0 - t
    weights[rows, left + 1] = t
    return weights, inside


def resample_on_axes(
    array: np.ndarray,
    axes_in: tuple[np.ndarray, np.ndarray, np.ndarray],
    axes_out: tuple[np.ndarray, np.ndarray, np.ndarray],
    fill: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Trilinear resampling of `array` from the grid `axes_in` to the grid `axes_out`.

    out[a, b, c] = Σ_ijk Wz[a, i] Wy[b, j] Wx[c, k] · array[i, j, k] (the three matrices of
    `linear_weights`), evaluated one axis at a time on the block of `array` the weights
    touch; outputs outside the source grid get `fill`. Returns (float32 array, inside mask).
    """
    mats, insides, blocks = [], [], []
    for c_in, c_out in zip(axes_in, axes_out, strict=True):
        w, inside = linear_weights(c_in, c_out)
        used = np.flatnonzero(w.any(axis=0))
        start, stop = (used[0], used[-1] + 1) if used.size else (0, 1)
        mats.append(w[:, start:stop].astype(np.float32))
        insides.append(inside)
        blocks.append(slice(start, stop))
    block = np.asarray(array[tuple(blocks)], dtype=np.float32)
    out = block @ mats[2].T  # (nz, ny, ox)
    out = np.matmul(mats[1], out)  # (nz, oy, ox)
    out = (mats[0] @ out.reshape(out.shape[0], -1)).reshape(mats[0].shape[0], *out.shape[1:])
    inside = insides[0][:, None, None] & insides[1][None, :, None] & insides[2][None, None, :]
    if not all(i.all() for i in insides):
        out[~inside] = fill
    return np.ascontiguousarray(out, dtype=np.float32), inside


def patch_axes(
    center_mm: tuple[float, float, float], size_mm: float, spacing_mm: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample positions of a cube of side `size_mm` centred on `center_mm` (z, y, x).

    n = round(size / spacing) samples per axis at c + (m − (n − 1)/2)·spacing, m = 0 … n−1;
    the centre falls midway between the two middle samples when n is even.
    """
    if size_mm <= 0 or spacing_mm <= 0:
        raise ValueError("size_mm and spacing_mm must be positive")
    n = max(1, int(round(size_mm / spacing_mm)))
    offsets = (np.arange(n) - (n - 1) / 2.0) * spacing_mm
    return tuple(float(c) + offsets for c in center_mm)  # type: ignore[return-value]


@dataclass(frozen=True)
class Crop:
    """A resampled cube and how much of it had to be padded."""

    array: np.ndarray  # float32 (n, n, n)
    axes_mm: tuple[np.ndarray, np.ndarray, np.ndarray]
    padded_voxels: int  # samples outside the source image, set to the fill value

    @property
    def padded_fraction(self) -> float:
        return self.padded_voxels / self.array.size


def crop_patch(
    volume: Volume,
    center_mm: tuple[float, float, float],
    size_mm: float = 32.0,
    spacing_mm: float = 0.5,
    fill: float = AIR_HU,
) -> Crop:
    """Cube of side `size_mm` around `center_mm` (in `volume.axes_mm()` coordinates),
    resampled to isotropic `spacing_mm` by trilinear interpolation; outside → `fill`."""
    axes_in = volume.axes_mm()
    axes_out = patch_axes(center_mm, size_mm, spacing_mm)
    array, inside = resample_on_axes(volume.array, axes_in, axes_out, fill=fill)
    return Crop(array, axes_out, int(inside.size - np.count_nonzero(inside)))


def mask_on_axes(
    mask: np.ndarray,
    axes_in: tuple[np.ndarray, np.ndarray, np.ndarray],
    axes_out: tuple[np.ndarray, np.ndarray, np.ndarray],
    edge_spacing_mm: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """Resample a binary mask to another grid: trilinear interpolation, then ≥ 0.5.

    Each source voxel stands for a box of its spacing, so the mask is first padded with one
    empty layer per side (one `edge_spacing_mm` away, default the axis's median spacing):
    its boundary then falls halfway between the last filled and first empty voxel. A mask
    that no output sample reaches at 0.5 keeps its highest-valued sample(s), so a tiny
    nodule never vanishes from a patch that covers it.
    """
    mask = np.asarray(mask, bool)
    padded = np.pad(mask, 1).astype(np.float32)
    axes_padded = []
    for axis, coords in enumerate(axes_in):
        coords = np.asarray(coords, float)
        if edge_spacing_mm is not None:
            step = float(edge_spacing_mm[axis])
        elif coords.size > 1:
            step = float(np.median(np.diff(coords)))
        else:
            raise ValueError(f"axis {axis} has one sample: give edge_spacing_mm")
        axes_padded.append(np.concatenate([[coords[0] - step], coords, [coords[-1] + step]]))
    values, _ = resample_on_axes(padded, tuple(axes_padded), axes_out, fill=0.0)
    out = values >= 0.5
    if not out.any() and values.max() > 0:  # smaller than an output voxel: keep its peak
        out = values >= values.max() * (1.0 - 1e-6)
    return out


def resample_isotropic(volume: Volume, spacing_mm: float = 0.5, interpolator: str = "linear"):
    """Resample a whole volume to isotropic `spacing_mm` with SimpleITK (same origin and
    direction; the physical extent n·spacing is kept: n_new = round(n·s / spacing_mm))."""
    import SimpleITK as sitk

    kinds = {
        "linear": sitk.sitkLinear,
        "nearest": sitk.sitkNearestNeighbor,
        "bspline": sitk.sitkBSpline,
    }
    if interpolator not in kinds:
        raise ValueError(f"interpolator must be one of {sorted(kinds)}")
    image = volume.to_sitk()
    spacing_xyz = image.GetSpacing()
    size = [
        max(1, int(round(n * s / spacing_mm)))
        for n, s in zip(image.GetSize(), spacing_xyz, strict=True)
    ]
    out = sitk.Resample(
        image,
        size,
        sitk.Transform(),
        kinds[interpolator],
        image.GetOrigin(),
        (spacing_mm,) * 3,
        image.GetDirection(),
        float(volume.array.min()),
        image.GetPixelID(),
    )
    return Volume.from_sitk(out)


def mask_center_mm(
    mask: np.ndarray, axes_mm: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[float, float, float]:
    """Centre of mass of a binary mask: (Σ_v c_z(v), Σ_v c_y(v), Σ_v c_x(v)) / |mask|."""
    mask = np.asarray(mask, bool)
    count = np.count_nonzero(mask)
    if count == 0:
        raise ValueError("empty mask")
    center = []
    for axis, coords in enumerate(axes_mm):
        others = tuple(a for a in range(3) if a != axis)
        per_index = mask.sum(axis=others)
        center.append(float(per_index @ np.asarray(coords, float)) / count)
    return center[0], center[1], center[2]
