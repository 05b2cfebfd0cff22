"""The pancreas MRI path: N4 bias correction, curvature anisotropic diffusion, ROI slices.

Inputs (`tumorchar patches mri`):

- `--images DIR`: one T2 volume per case, `<case_id>.nii.gz` / `.nii` / `.nrrd` / `.mha`
  or a DICOM series folder `<case_id>/`;
- `--rois CSV`: `case_id` and either a `mask` column (a label image, path relative to the
  CSV, on exactly the image's grid; non-zero = ROI) or a box `z0 z1 y0 y1 x0 x1` in voxel
  indices of the image array (start inclusive, stop exclusive);
- `--labels CSV`: `case_id`, `label` (`normal` | `ipmn`), optional `patient_id`.

Per case: the whole volume is bias-corrected (N4 fitted on a shrunk image, the bias field
applied at full resolution) and smoothed by curvature anisotropic diffusion (float input,
time step clamped to the stable bound min spacing / 2^(d+1)). Every axial slice the ROI
touches is cropped to one square box (the ROI's in-plane extent plus a margin) resampled to
`roi_size`² pixels. The store keeps `volume` = the stack of ROI slices (slices at the scan's
spacing; in-plane spacing in `spacing_mm`), `slice2d` = its central slice, the ROI as mask,
scores NaN. Intensities stay in the scanner's (bias-corrected) units. Images from the
synthetic generator (their folder holds `synthetic.json`) give a store flagged
`is_phantom` with a note saying the data are synthetic.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tumorchar.data.io import NIFTI_SUFFIXES, NRRD_SUFFIXES, OTHER_SUFFIXES, Volume, read_image
from tumorchar.data.patches import BatchReport, CaseArrays, CaseError, PatchStoreWriter, build_cases
from tumorchar.data.resample import mask_on_axes, resample_on_axes

MRI_LABELS = ("normal", "ipmn")
SYNTHETIC_MARKER = "synthetic.json"  # written by tumorchar.data.synthetic_mri
SYNTHETIC_NOTE = "SYNTHETIC pancreas T2 MRI from tumorchar's generator; not patient data."
BOX_COLUMNS = ("z0", "z1", "y0", "y1", "x0", "x1")


@dataclass(frozen=True)
class MRISettings:
    n4_shrink: int = 4
    n4_iterations: tuple[int, ...] = (50, 50, 50, 50)
    n4_convergence: float = 0.001
    diffusion_iterations: int = 5
    diffusion_conductance: float = 3.0
    diffusion_time_step: float = 0.0625  # clamped to the stable bound
    roi_size: int = 128  # pixels per side of the resampled ROI
    roi_margin: float = 0.1  # added to each side, as a fraction of the ROI's extent


# --- filters ----------------------------------------------------------------------------------


def n4_correct(
    image, mask=None, shrink: int = 4, iterations=(50, 50, 50, 50), convergence: float = 0.001
):
    """N4 bias-field correction: I_corrected = I / exp(log B), with log B fitted by
    SimpleITK's N4 filter on the image shrunk by `shrink` along each axis that keeps ≥ 8
    samples (else by shrink/2, else not at all) and evaluated on the full-resolution grid.

    `mask` (uint8, 1 = fit here) defaults to an Otsu foreground of the image.
    """
    import SimpleITK as sitk

    image = sitk.Cast(image, sitk.sitkFloat32)
    if mask is None:
        mask = sitk.OtsuThreshold(image, 0, 1, 200)
    mask = sitk.Cast(mask, sitk.sitkUInt8)
    factors = [_shrink_factor(n, shrink) for n in image.GetSize()]
    small, small_mask = sitk.Shrink(image, factors), sitk.Shrink(mask, factors)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([int(i) for i in iterations])
    n4.SetConvergenceThreshold(convergence)
    n4.Execute(small, small_mask)
    log_bias = n4.GetLogBiasFieldAsImage(image)
    return image / sitk.Exp(log_bias)


def _shrink_factor(n: int, shrink: int) -> int:
    for factor in (shrink, shrink // 2):
        if factor >= 1 and n >= 8 * factor:
            return factor
    return 1


def stable_time_step(spacing) -> float:
    """Largest stable explicit time step of the diffusion: min spacing / 2^(d + 1)."""
    return float(min(spacing)) / 2.0 ** (len(spacing) + 1)


def anisotropic_diffusion(
    image, iterations: int = 5, conductance: float = 3.0, time_step: float = 0.0625
):
    """Curvature anisotropic diffusion (SimpleITK), float input, time step
    min(time_step, stable_time_step(spacing))."""
    import SimpleITK as sitk

    image = sitk.Cast(image, sitk.sitkFloat32)
    smoother = sitk.CurvatureAnisotropicDiffusionImageFilter()
    smoother.SetTimeStep(min(time_step, stable_time_step(image.GetSpacing())))
    smoother.SetNumberOfIterations(int(iterations))
    smoother.SetConductanceParameter(float(conductance))
    return smoother.Execute(image)


def preprocess(volume: Volume, settings: MRISettings = MRISettings()) -> Volume:
    """N4 bias correction, then curvature anisotropic diffusion (in 2D for a single slice)."""
    import SimpleITK as sitk

    image = volume.to_sitk()
    single = volume.shape[0] == 1
    if single:
        image = image[:, :, 0]
    image = n4_correct(
        image,
        shrink=settings.n4_shrink,
        iterations=settings.n4_iterations,
        convergence=settings.n4_convergence,
    )
    image = anisotropic_diffusion(
        image,
        settings.diffusion_iterations,
        settings.diffusion_conductance,
        settings.diffusion_time_step,
    )
    if single:
        array = sitk.GetArrayFromImage(image)[None].astype(np.float32)
        return Volume(array, volume.spacing, volume.origin, volume.direction)
    return Volume.from_sitk(image)


# --- inputs -----------------------------------------------------------------------------------


def find_image(images_dir: Path, case_id: str) -> Path:
    for suffix in NIFTI_SUFFIXES + NRRD_SUFFIXES + OTHER_SUFFIXES:
        path = images_dir / f"{case_id}{suffix}"
        if path.is_file():
            return path
    if (images_dir / case_id).is_dir():
        return images_dir / case_id
    raise CaseError(
        f"case {case_id}: no image {case_id}.nii[.gz]/.nrrd/.mha or folder in {images_dir}"
    )


def read_labels(path: str | os.PathLike) -> pd.DataFrame:
    table = pd.read_csv(path, dtype={"case_id": str})
    for column in ("case_id", "label"):
        if column not in table.columns:
            raise ValueError(f"{path}: no {column!r} column")
    if table["case_id"].duplicated().any():
        duplicated = table["case_id"][table["case_id"].duplicated()].tolist()
        raise ValueError(f"{path}: duplicated case ids {duplicated[:5]}")
    table["label"] = table["label"].astype(str).str.strip().str.lower()
    return table


def read_rois(path: str | os.PathLike) -> pd.DataFrame:
    table = pd.read_csv(path, dtype={"case_id": str, "mask": str})
    if "case_id" not in table.columns:
        raise ValueError(f"{path}: no 'case_id' column")
    if "mask" not in table.columns and not set(BOX_COLUMNS) <= set(table.columns):
        raise ValueError(f"{path}: needs a 'mask' column or the box columns {BOX_COLUMNS}")
    if table["case_id"].duplicated().any():
        raise ValueError(f"{path}: one ROI row per case, duplicates found")
    table.attrs["folder"] = str(Path(path).resolve().parent)
    return table


def roi_mask(row: dict, volume: Volume, case_id: str, folder: Path) -> np.ndarray:
    """The ROI as a bool (z, y, x) array on the image's grid, from a mask file or a box."""
    mask_name = row.get("mask")
    if isinstance(mask_name, str) and mask_name.strip():
        path = Path(mask_name)
        path = path if path.is_absolute() else folder / path
        mask = read_image(path, case_id=case_id)
        _check_same_grid(mask, volume, case_id)
        roi = mask.array != 0
    else:
        box = [row.get(c) for c in BOX_COLUMNS]
        if any(v is None or not np.isfinite(float(v)) for v in box):
            raise CaseError(f"case {case_id}: ROI row has neither a mask nor a complete box")
        z0, z1, y0, y1, x0, x1 = (int(v) for v in box)
        shape = volume.shape
        if not (0 <= z0 < z1 <= shape[0] and 0 <= y0 < y1 <= shape[1] and 0 <= x0 < x1 <= shape[2]):
            raise CaseError(f"case {case_id}: ROI box {box} is empty or outside the image {shape}")
        roi = np.zeros(shape, bool)
        roi[z0:z1, y0:y1, x0:x1] = True
    if not roi.any():
        raise CaseError(f"case {case_id}: empty ROI mask")
    return roi


def _check_same_grid(mask: Volume, image: Volume, case_id: str) -> None:
    problems = []
    if mask.shape != image.shape:
        problems.append(f"size {mask.shape} vs {image.shape}")
    if not np.allclose(mask.spacing, image.spacing, rtol=1e-3):
        problems.append(f"spacing {mask.spacing} vs {image.spacing}")
    if not np.allclose(mask.origin, image.origin, atol=1e-2 * min(image.spacing)):
        problems.append("origin")
    if not np.allclose(mask.direction, image.direction, atol=1e-3):
        problems.append("direction")
    if problems:
        raise CaseError(
            f"case {case_id}: ROI mask geometry does not match its image ("
            + "; ".join(problems)
            + ")"
        )


# --- one case ---------------------------------------------------------------------------------


def roi_axes(volume: Volume, roi: np.ndarray, settings: MRISettings):
    """Sample positions (z, y, x axes, `Volume.axes_mm` coordinates) of the ROI stack: every
    axial slice the ROI touches, and one square box of roi_size² pixels around the ROI's
    in-plane extent plus the margin. Returns (axes, pixel size mm)."""
    z_idx = np.flatnonzero(roi.any(axis=(1, 2)))
    rows = np.flatnonzero(roi.any(axis=(0, 2)))
    cols = np.flatnonzero(roi.any(axis=(0, 1)))
    z_axis, y_axis, x_axis = volume.axes_mm()
    _, dy, dx = volume.spacing
    y_lo, y_hi = y_axis[rows[0]] - dy / 2, y_axis[rows[-1]] + dy / 2
    x_lo, x_hi = x_axis[cols[0]] - dx / 2, x_axis[cols[-1]] + dx / 2
    side = max(y_hi - y_lo, x_hi - x_lo) * (1.0 + 2.0 * settings.roi_margin)
    pixel = side / settings.roi_size
    offsets = (np.arange(settings.roi_size) - (settings.roi_size - 1) / 2.0) * pixel
    return (z_axis[z_idx], (y_lo + y_hi) / 2 + offsets, (x_lo + x_hi) / 2 + offsets), float(pixel)


def roi_slices(
    volume: Volume, roi: np.ndarray, settings: MRISettings
) -> tuple[np.ndarray, np.ndarray, float]:
    """Crop every axial slice the ROI touches to one square box and resample it to
    roi_size² pixels (bilinear in plane, `roi_axes`). Returns (stack, roi mask stack, pixel
    size mm)."""
    axes_out, pixel = roi_axes(volume, roi, settings)
    stack, _ = resample_on_axes(volume.array, volume.axes_mm(), axes_out, fill=0.0)
    mask = mask_on_axes(roi, volume.axes_mm(), axes_out, edge_spacing_mm=volume.spacing)
    return stack, mask, pixel


def mri_case(
    image_path: Path,
    roi_row: dict,
    label_row: dict,
    case_id: str,
    settings: MRISettings,
    roi_folder: Path,
) -> CaseArrays:
    label = str(label_row["label"])
    if label not in MRI_LABELS:
        raise CaseError(f"case {case_id}: label {label!r} is not one of {MRI_LABELS}")
    volume = read_image(image_path, case_id=case_id)
    roi = roi_mask(roi_row, volume, case_id, roi_folder)
    if volume.array.min() < 0:
        raise CaseError(f"case {case_id}: negative intensities; expected a magnitude MRI")
    corrected = preprocess(volume, settings)
    stack, mask, pixel = roi_slices(corrected, roi, settings)
    patient = label_row.get("patient_id")
    row = {
        "patient_id": patient if isinstance(patient, str) and patient else case_id,
        "label": label,
        "spacing_mm": pixel,
        "padded_fraction": 0.0,
    }
    return CaseArrays(volume=stack, mask=mask, row=row)


def build_mri_store(
    images_dir: str | os.PathLike,
    rois_csv: str | os.PathLike,
    labels_csv: str | os.PathLike,
    out: str | os.PathLike,
    settings: MRISettings = MRISettings(),
    show_progress: bool = True,
) -> BatchReport:
    """Preprocess every labelled case and store its ROI slices (resumable, see patches.py)."""
    images_dir = Path(images_dir)
    labels = read_labels(labels_csv)
    rois = read_rois(rois_csv)
    roi_folder = Path(rois.attrs["folder"])
    roi_rows = {r["case_id"]: r for r in rois.to_dict("records")}
    label_rows = {r["case_id"]: r for r in labels.to_dict("records")}

    def make_case(case_id: str) -> CaseArrays:
        label = str(label_rows[case_id]["label"])
        if label not in MRI_LABELS:
            raise CaseError(f"case {case_id}: label {label!r} is not one of {MRI_LABELS}")
        if case_id not in roi_rows:
            raise CaseError(f"case {case_id}: no ROI row in {Path(rois_csv).name}")
        return mri_case(
            find_image(images_dir, case_id),
            roi_rows[case_id],
            label_rows[case_id],
            case_id,
            settings,
            roi_folder,
        )

    # images from tumorchar's generator make a synthetic store, flagged like the CT phantom
    synthetic = (images_dir / SYNTHETIC_MARKER).is_file()
    writer = PatchStoreWriter(
        out,
        "mri",
        {"mri": json.loads(json.dumps(asdict(settings)))},
        is_phantom=synthetic,
        note=SYNTHETIC_NOTE if synthetic else "",
    )
    return build_cases(
        writer, list(label_rows), make_case, description="MRI ROIs", show_progress=show_progress
    )
