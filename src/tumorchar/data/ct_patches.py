"""Nodule patches from a cohort folder: cropped from real LIDC scans, or rendered as phantom.

Both paths place the nodule the same way: the consensus mask lives on its scan's grid
(rows and columns at the pixel spacing, slices at their real z positions); the patch is a
cube of `size_mm` centred on the mask's centre of mass, sampled at isotropic `spacing_mm`;
the mask is resampled alongside (trilinear, ≥ 0.5). The LIDC path interpolates the scan's
HU there (air where the cube leaves the scan, recorded as `padded_fraction`); the phantom
path renders CT-like intensities from the nodule's ratings (`tumorchar.data.phantom`).
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tumorchar.data.cohort_store import Cohort, ConsensusMask, load_cohort
from tumorchar.data.io import ScanReadError, Volume, find_series_folders, read_dicom_series
from tumorchar.data.patches import (
    SCORE_COLUMNS,
    BatchReport,
    CaseArrays,
    CaseError,
    PatchStoreWriter,
    build_cases,
)
from tumorchar.data.phantom import (
    DEFAULT_RULES,
    PHANTOM_NOTE,
    PhantomRules,
    case_rng,
    draw_ratings,
    render_nodule,
)
from tumorchar.data.resample import AIR_HU, crop_patch, mask_center_mm, mask_on_axes, patch_axes
from tumorchar.vocab import PSI_COLUMNS


@dataclass(frozen=True)
class PatchGeometry:
    spacing_mm: float = 0.5  # isotropic voxel size, as in the paper
    size_mm: float = 32.0  # side of the cube

    def __post_init__(self) -> None:
        if self.spacing_mm <= 0 or self.size_mm < self.spacing_mm:
            raise ValueError("need spacing_mm > 0 and size_mm ≥ spacing_mm")


def mask_axes(
    mask: ConsensusMask, offset_yx: tuple[float, float] = (0.0, 0.0)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z, y, x) coordinates (mm) of the mask's voxels: its real slice positions, and
    offset + (first row/column + index)·pixel spacing in plane."""
    nz, ny, nx = mask.mask.shape
    z = np.asarray(mask.z_mm, float)
    if z.shape != (nz,):
        raise CaseError(f"mask has {nz} slices but {z.size} slice positions")
    if nz > 1 and np.any(np.diff(z) <= 0):
        raise CaseError("mask slice positions are not strictly increasing (a repeated slice?)")
    ps = mask.pixel_spacing_mm
    y = offset_yx[0] + (mask.origin_ij[0] + np.arange(ny)) * ps
    x = offset_yx[1] + (mask.origin_ij[1] + np.arange(nx)) * ps
    return z, y, x


def _sorted_mask(mask: ConsensusMask) -> ConsensusMask:
    """The mask with its slices in increasing z (mask_axes needs increasing positions)."""
    if np.asarray(mask.z_mm).shape != mask.mask.shape[:1]:
        return mask  # mask_axes reports the mismatch
    order = np.argsort(np.asarray(mask.z_mm, float), kind="stable")
    if np.all(order == np.arange(order.size)):
        return mask
    return ConsensusMask(
        mask.mask[order], np.asarray(mask.z_mm)[order], mask.origin_ij, mask.pixel_spacing_mm
    )


def _edge_spacing(mask: ConsensusMask, row) -> tuple[float, float, float]:
    z = np.asarray(mask.z_mm, float)
    dz = float(np.median(np.diff(z))) if z.size > 1 else float(row.get("slice_thickness_mm", 1.0))
    if not np.isfinite(dz) or dz <= 0:
        dz = 1.0
    return dz, mask.pixel_spacing_mm, mask.pixel_spacing_mm


def _index_row(row, geometry: PatchGeometry, padded_fraction: float) -> dict:
    out = {
        "patient_id": str(row["patient_id"]),
        "label": str(row["label"]),
        "equivalent_diameter_mm": float(row.get("equivalent_diameter_mm", np.nan)),
        "spacing_mm": geometry.spacing_mm,
        "padded_fraction": padded_fraction,
    }
    out.update({name: float(row[name]) for name in SCORE_COLUMNS})
    # the readers' Eq. 5 inconsistency travels with the patch, for the proposed MTL's training
    out.update({name: float(row.get(name, np.nan)) for name in PSI_COLUMNS})
    return out


def _nodule(cohort: Cohort, nodule_id: str):
    rows = cohort.table.loc[cohort.table["nodule_id"] == nodule_id]
    if rows.empty:
        raise CaseError(f"case {nodule_id}: not in the cohort table")
    try:
        mask = _sorted_mask(cohort.mask(nodule_id))
    except KeyError as error:
        raise CaseError(f"case {nodule_id}: {error.args[0]}") from None
    if not mask.mask.any():
        raise CaseError(f"case {nodule_id}: empty consensus mask")
    return rows.iloc[0], mask


def _patch_mask(nodule_id, mask, axes, row, geometry: PatchGeometry):
    center = mask_center_mm(mask.mask, axes)
    out_axes = patch_axes(center, geometry.size_mm, geometry.spacing_mm)
    patch_mask = mask_on_axes(mask.mask, axes, out_axes, _edge_spacing(mask, row))
    if not patch_mask.any():
        raise CaseError(f"case {nodule_id}: the mask vanishes at {geometry.spacing_mm} mm spacing")
    return center, patch_mask


def phantom_case(
    cohort: Cohort,
    nodule_id: str,
    geometry: PatchGeometry = PatchGeometry(),
    seed: int = 0,
    rules: PhantomRules = DEFAULT_RULES,
) -> CaseArrays:
    """Render one nodule's phantom patch (see `tumorchar.data.phantom`)."""
    row, mask = _nodule(cohort, nodule_id)
    try:
        axes = mask_axes(mask)
    except CaseError as error:
        raise CaseError(f"case {nodule_id}: {error}") from None
    _, patch_mask = _patch_mask(nodule_id, mask, axes, row, geometry)
    rng = case_rng(seed, nodule_id)
    scores = draw_ratings(row, rng, rules)
    volume = render_nodule(patch_mask, scores, geometry.spacing_mm, rng, rules)
    return CaseArrays(volume=volume, mask=patch_mask, row=_index_row(row, geometry, 0.0))


def build_phantom_store(
    cohort_dir: str | os.PathLike,
    out: str | os.PathLike,
    seed: int = 0,
    geometry: PatchGeometry = PatchGeometry(),
    rules: PhantomRules = DEFAULT_RULES,
    workers: int = 2,
    show_progress: bool = True,
) -> BatchReport:
    """Phantom patches for every nodule of a cohort folder (resumable; see patches.py)."""
    from threadpoolctl import threadpool_limits

    cohort = load_cohort(cohort_dir)
    settings = {"geometry": asdict(geometry), "seed": int(seed), "rules": asdict(rules)}
    writer = PatchStoreWriter(out, "phantom", settings, is_phantom=True, note=PHANTOM_NOTE)
    # parallel over cases, not inside BLAS: small matrix products thrash with several threads
    with threadpool_limits(1):
        return build_cases(
            writer,
            cohort.nodule_ids,
            lambda nodule_id: phantom_case(cohort, nodule_id, geometry, seed, rules),
            description="phantom patches",
            workers=workers,
            show_progress=show_progress,
        )


# --- LIDC scans -------------------------------------------------------------------------------


class SeriesLocator:
    """Finds a series folder in a TCIA-layout LIDC-IDRI download by SeriesInstanceUID.

    Looks below `<root>/<patient_id>` first (the TCIA layout), else anywhere below root.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"LIDC folder {self.root} does not exist")
        self._by_patient: dict[str, dict[str, Path]] = {}
        self._everywhere: dict[str, Path] | None = None

    def find(self, patient_id: str, series_uid: str) -> Path | None:
        patient_dir = self.root / patient_id
        if patient_dir.is_dir():
            if patient_id not in self._by_patient:
                self._by_patient[patient_id] = find_series_folders(patient_dir)
            if series_uid in self._by_patient[patient_id]:
                return self._by_patient[patient_id][series_uid]
        if self._everywhere is None:
            self._everywhere = find_series_folders(self.root)
        return self._everywhere.get(series_uid)


class _ScanCache:
    """Keeps the last scan read (cases are processed grouped by scan)."""

    def __init__(self, locator: SeriesLocator):
        self.locator = locator
        self._key: str | None = None
        self._value: Volume | Exception | None = None
        self._lock = threading.Lock()

    def get(self, patient_id: str, series_uid: str, case_id: str) -> Volume:
        with self._lock:
            if self._key != series_uid:
                self._key, self._value = series_uid, self._read(patient_id, series_uid)
            value = self._value
        if isinstance(value, Exception):
            raise CaseError(f"case {case_id}: {value}")
        return value

    def _read(self, patient_id: str, series_uid: str) -> Volume | Exception:
        folder = self.locator.find(patient_id, series_uid)
        if folder is None:
            return ScanReadError(f"scan of {patient_id} not found below {self.locator.root}")
        try:
            return read_dicom_series(folder, case_id=patient_id, series_uid=series_uid)
        except ScanReadError as error:
            return error


def lidc_case(volume: Volume, row, mask: ConsensusMask, geometry: PatchGeometry) -> CaseArrays:
    """Crop one nodule from its scan (HU, air-padded) with its consensus mask."""
    nodule_id = str(row["nodule_id"])
    if not np.allclose(np.abs(np.asarray(volume.direction)), np.eye(3), atol=1e-3):
        raise CaseError(f"case {nodule_id}: the scan is not axial; LIDC masks need an axial scan")
    if not np.isclose(volume.spacing[1], mask.pixel_spacing_mm, rtol=1e-3):
        raise CaseError(
            f"case {nodule_id}: scan pixel spacing {volume.spacing[1]:.4g} mm differs from "
            f"the cohort's {mask.pixel_spacing_mm:.4g} mm"
        )
    z_scan, y_scan, x_scan = volume.axes_mm()
    axes = mask_axes(mask, offset_yx=(float(y_scan[0]), float(x_scan[0])))
    nearest = np.abs(axes[0][:, None] - z_scan[None, :]).min(axis=1)
    if np.any(nearest > 0.1 * volume.spacing[0]):
        raise CaseError(f"case {nodule_id}: mask slice positions are not slices of the scan")
    if axes[1][-1] > y_scan[-1] + 1e-6 or axes[2][-1] > x_scan[-1] + 1e-6:
        raise CaseError(f"case {nodule_id}: the mask extends past the scan's rows/columns")
    center, patch_mask = _patch_mask(nodule_id, mask, axes, row, geometry)
    crop = crop_patch(volume, center, geometry.size_mm, geometry.spacing_mm, fill=AIR_HU)
    return CaseArrays(
        volume=crop.array, mask=patch_mask, row=_index_row(row, geometry, crop.padded_fraction)
    )


def build_lidc_store(
    cohort_dir: str | os.PathLike,
    lidc_dir: str | os.PathLike,
    out: str | os.PathLike,
    geometry: PatchGeometry = PatchGeometry(),
    show_progress: bool = True,
) -> BatchReport:
    """Patches cropped from a LIDC-IDRI download for every nodule of a cohort folder."""
    cohort = load_cohort(cohort_dir)
    table = cohort.table.sort_values(["series_uid", "nodule_id"], kind="stable")
    cache = _ScanCache(SeriesLocator(lidc_dir))
    rows = {str(r["nodule_id"]): r for r in table.to_dict("records")}

    def make_case(nodule_id: str) -> CaseArrays:
        row, mask = _nodule(cohort, nodule_id)
        volume = cache.get(str(row["patient_id"]), str(row["series_uid"]), nodule_id)
        return lidc_case(volume, rows[nodule_id], mask, geometry)

    writer = PatchStoreWriter(out, "lidc", {"geometry": asdict(geometry)})
    return build_cases(
        writer,
        list(rows),
        make_case,
        description="LIDC patches",
        workers=1,
        show_progress=show_progress,
    )
