"""Builders of small hand-made inputs for the data tests: cohort folders of ellipsoid
nodules and DICOM series built from pydicom's own CT test slice."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tumorchar.data.cohort_store import PAPER_TASKS, ConsensusMask, write_cohort

SCORES = PAPER_TASKS


def ellipsoid(shape, spacing, radii_mm, centre_index=None) -> np.ndarray:
    """Bool (z, y, x) ellipsoid with semi-axes radii_mm (z, y, x) on a grid of `spacing`."""
    centre = (np.array(shape) - 1) / 2 if centre_index is None else np.asarray(centre_index)
    grid = np.indices(shape, dtype=float)
    r2 = sum(((grid[a] - centre[a]) * spacing[a] / radii_mm[a]) ** 2 for a in range(3))
    return r2 <= 1.0


def cohort_row(nodule_id, ps, dz, **scores) -> dict:
    row = {
        "nodule_id": nodule_id,
        "patient_id": nodule_id.split("_")[0],
        "series_uid": "1.2.3",
        "label": "benign",
        "pixel_spacing_mm": ps,
        "slice_thickness_mm": dz,
        "equivalent_diameter_mm": 8.0,
    }
    row.update({name: 3.0 for name in SCORES})
    row.update(calcification=6.0)
    row.update(scores)
    return row


def make_cohort(folder: Path, nodules: dict) -> Path:
    """nodules: id → (mask, z_mm, origin_ij, ps, dz, scores dict)."""
    rows, masks = [], {}
    for nodule_id, (mask, z_mm, origin, ps, dz, scores) in nodules.items():
        rows.append(cohort_row(nodule_id, ps, dz, **scores))
        masks[nodule_id] = ConsensusMask(mask, np.asarray(z_mm, float), origin, ps)
    return write_cohort(pd.DataFrame(rows), masks, folder)


def write_ct_series(
    folder: Path,
    volume_hu: np.ndarray,
    spacing,
    origin_xyz,
    series_uid: str,
    shuffle_seed: int | None = 0,
) -> list[Path]:
    """Write `volume_hu` (z, y, x) as a DICOM series built on pydicom's CT_small.dcm."""
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    folder.mkdir(parents=True, exist_ok=True)
    nz, ny, nx = volume_hu.shape
    slope, intercept = 1.0, -1024.0
    order = np.arange(nz)
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(nz)
    paths = []
    for k in order:
        ds = copy.deepcopy(template)
        stored = np.round((volume_hu[k] - intercept) / slope).astype(np.int16)
        ds.Rows, ds.Columns = ny, nx
        ds.PixelData = stored.tobytes()
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness = spacing[0]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin_xyz[0], origin_xyz[1], origin_xyz[2] + k * spacing[0]]
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = int(k) + 1
        path = folder / f"img{len(paths):04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
