"""A synthetic pancreas T2-MRI generator, for tests and for the demo of the MRI path.

SYNTHETIC IMAGES: nothing here comes from a patient. Each case is an axial T2-like volume:

- abdomen: an elliptical body (soft tissue) in a bright subcutaneous fat ring, a liver
  block, two kidneys and a dark spine;
- pancreas: a tube along a curved centreline (head → tail, radius 13 → 6 mm, rising slightly
  towards the tail) with a lobulated texture;
- IPMN cases: 1–3 bright fluid cysts (ellipsoids, radius 5–14 mm) on the pancreas, and in
  about half of them a dilated main duct along the centreline; normal cases have neither;
- a smooth multiplicative bias field exp(quadratic) of about ±30 %, then Rician noise
  (magnitude of a complex Gaussian).

Output: `<case_id>.nii.gz` per case, `rois.csv` (a box around the pancreas, or a mask file
per case with `roi="mask"`), `labels.csv` (`case_id patient_id label`) and `synthetic.json`
(the generator's settings and a note that the data are synthetic). Every case depends only
on (seed, case id); files are written atomically.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from tumorchar._io import atomic_path, write_text_atomic
from tumorchar.data.io import Volume
from tumorchar.data.mri import SYNTHETIC_MARKER, SYNTHETIC_NOTE
from tumorchar.data.phantom import case_rng

INTENSITY = {
    "background": 0.0,
    "tissue": 250.0,
    "fat": 600.0,
    "liver": 180.0,
    "kidney": 380.0,
    "spine": 90.0,
    "pancreas": 320.0,
    "fluid": 950.0,
}


@dataclass(frozen=True)
class SyntheticCase:
    case_id: str
    label: str
    volume: Volume
    pancreas: np.ndarray  # bool (z, y, x): pancreas and cysts, the ROI


def _physical_grid(shape, spacing):
    """Physical coordinates (mm) centred on the volume, one 1D array per axis (z, y, x)."""
    return [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing, strict=True)]


def _ellipse(y, x, cy, cx, ry, rx):
    return ((y[:, None] - cy) / ry) ** 2 + ((x[None, :] - cx) / rx) ** 2 <= 1.0


def synthesize_case(case_id: str, label: str, seed: int, shape=(30, 256, 256)) -> SyntheticCase:
    """One synthetic case (see the module docstring); `label` is 'normal' or 'ipmn'."""
    rng = case_rng(seed, case_id)
    spacing = (float(rng.uniform(4.0, 6.0)), *(2 * [float(rng.uniform(1.0, 1.4))]))
    z, y, x = _physical_grid(shape, spacing)
    image = np.zeros(shape, np.float32)
    body_ry, body_rx = rng.uniform(95, 115), rng.uniform(130, 150)
    body = _ellipse(y, x, 0, 0, body_ry, body_rx)
    inner = _ellipse(y, x, 0, 0, body_ry - 12, body_rx - 12)
    plane = np.where(inner, INTENSITY["tissue"], np.where(body, INTENSITY["fat"], 0.0))
    plane = np.where(_ellipse(y, x, -20, -70, 60, 55) & inner, INTENSITY["liver"], plane)
    for side in (-1, 1):
        plane = np.where(_ellipse(y, x, 45, side * 55, 22, 14), INTENSITY["kidney"], plane)
    plane = np.where(_ellipse(y, x, 70, 0, 16, 16), INTENSITY["spine"], plane)
    image[:] = plane
    centre, radius = _pancreas_centreline(shape, spacing, rng)
    tube, distance, nearest = _tube(centre, radius, shape, spacing)
    lobules = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), (0.5, 2, 2))
    image[tube] = INTENSITY["pancreas"] * (1.0 + 0.8 * lobules[tube])
    roi = tube.copy()
    if label == "ipmn":
        for _ in range(int(rng.integers(1, 4))):
            c = centre[int(rng.integers(0, len(centre)))]
            radii = rng.uniform(5, 14, size=3) * np.array([0.8, 1, 1])
            grid = np.meshgrid(z - c[0], y - c[1], x - c[2], indexing="ij", sparse=True)
            cyst = sum((g / r) ** 2 for g, r in zip(grid, radii, strict=True)) <= 1.0
            image[cyst] = INTENSITY["fluid"]
            roi |= cyst
        if rng.random() < 0.5:  # main-duct involvement: a dilated duct along the centreline
            duct = tube & (distance <= 0.4 * radius[nearest])
            image[duct] = INTENSITY["fluid"]
    image *= _bias_field(shape, rng)
    sigma = 18.0
    noisy = np.hypot(
        image + sigma * rng.standard_normal(shape, dtype=np.float32),
        sigma * rng.standard_normal(shape, dtype=np.float32),
    )
    volume = Volume(noisy.astype(np.float32), spacing)
    return SyntheticCase(case_id, label, volume, roi)


def _pancreas_centreline(shape, spacing, rng, n: int = 80):
    """Points (z, y, x) mm along a curved head → tail centreline and their tube radii."""
    t = np.linspace(0.0, 1.0, n)
    x = -55 + 110 * t + rng.uniform(-8, 8)
    y = 10 - 28 * np.sin(np.pi * t) * rng.uniform(0.6, 1.2) + rng.uniform(-6, 6)
    z = (-8 + 16 * t) * rng.uniform(0.5, 1.0)
    radius = 13.0 - 7.0 * t
    return np.column_stack([z, y, x]), radius


def _tube(centre, radius, shape, spacing):
    """Voxels within radius(t) of the centreline: a distance transform from the rasterized
    centreline gives, per voxel, the distance (mm) and the nearest centreline point."""
    index = np.round(centre / np.array(spacing) + (np.array(shape) - 1) / 2.0).astype(int)
    index = np.clip(index, 0, np.array(shape) - 1)
    seeds = np.ones(shape, bool)
    which = np.full(shape, -1, int)
    for i, (a, b, c) in enumerate(index):
        seeds[a, b, c] = False
        which[a, b, c] = i
    distance, nearest_index = ndimage.distance_transform_edt(
        seeds, sampling=spacing, return_indices=True
    )
    nearest = which[tuple(nearest_index)]
    return distance <= radius[nearest], distance, nearest


def _bias_field(shape, rng) -> np.ndarray:
    """exp(Σ a_k·m_k) over the monomials m of degree ≤ 2 of normalized (y, x) and z, scaled
    so the field spans about ±30 %."""
    z, y, x = (np.linspace(-1, 1, n) for n in shape)
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij", sparse=True)
    terms = [yy, xx, zz, yy * xx, yy**2, xx**2]
    log = sum(rng.uniform(-1, 1) * term for term in terms)
    log = log - log.mean()
    log *= 0.3 / max(float(np.abs(log).max()), 1e-6)
    return np.exp(log).astype(np.float32)


def _write_nifti(volume: Volume, path: Path) -> None:
    import SimpleITK as sitk

    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    with atomic_path(path, suffix=suffix) as tmp:
        sitk.WriteImage(volume.to_sitk(), str(tmp), useCompression=True)


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def write_synthetic_mri(
    out: str | os.PathLike,
    n_cases: int = 12,
    seed: int = 0,
    ipmn_fraction: float = 0.78,
    shape=(30, 256, 256),
    roi: str = "box",
) -> Path:
    """Write `n_cases` synthetic cases to `out` (images, rois.csv, labels.csv, synthetic.json).

    The first round(n·(1 − ipmn_fraction)) cases (at least one when n ≥ 2) are normal,
    the rest IPMN (the paper's cohort: 38 normal, 133 IPMN, 78 % IPMN).
    """
    if n_cases < 1:
        raise ValueError("n_cases must be ≥ 1")
    if roi not in ("box", "mask"):
        raise ValueError("roi must be 'box' or 'mask'")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_normal = int(round(n_cases * (1.0 - ipmn_fraction)))
    if n_cases >= 2:
        n_normal = min(max(n_normal, 1), n_cases - 1)
    rois, labels = [], []
    for i in range(n_cases):
        case_id = f"SYNMRI-{i + 1:04d}"
        label = "normal" if i < n_normal else "ipmn"
        case = synthesize_case(case_id, label, seed, shape)
        _write_nifti(case.volume, out / f"{case_id}.nii.gz")
        if roi == "mask":
            mask = Volume(case.pancreas.astype(np.float32), case.volume.spacing)
            _write_nifti(mask, out / f"{case_id}_roi.nii.gz")
            rois.append({"case_id": case_id, "mask": f"{case_id}_roi.nii.gz"})
        else:
            zs, ys, xs = (
                np.flatnonzero(case.pancreas.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1))
            )
            rois.append(
                {
                    "case_id": case_id,
                    "z0": zs[0],
                    "z1": zs[-1] + 1,
                    "y0": ys[0],
                    "y1": ys[-1] + 1,
                    "x0": xs[0],
                    "x1": xs[-1] + 1,
                }
            )
        labels.append({"case_id": case_id, "patient_id": case_id, "label": label})
    _write_csv(pd.DataFrame(rois), out / "rois.csv")
    _write_csv(pd.DataFrame(labels), out / "labels.csv")
    meta = {
        "note": SYNTHETIC_NOTE,
        "n_cases": n_cases,
        "seed": seed,
        "shape": list(shape),
        "ipmn_fraction": ipmn_fraction,
        "roi": roi,
    }
    write_text_atomic(out / SYNTHETIC_MARKER, json.dumps(meta, indent=2))
    return out
