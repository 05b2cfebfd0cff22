"""Reading scans: a DICOM series folder, NIfTI and NRRD files, into one `Volume` type.

Pixel data are decoded by pydicom (DICOM) and SimpleITK (NIfTI, NRRD, MetaImage); nothing
here parses a file format by hand. Geometry travels with the array:

- `array` is float32 indexed `(z, y, x)` = (slice, row, column);
- `spacing` is `(dz, dy, dx)` in mm, in the array's axis order;
- `origin` is the physical position `(x, y, z)` (patient LPS, mm) of voxel `[0, 0, 0]`;
- `direction` is the 3×3 ITK direction matrix: its columns are the unit vectors of the
  column (x), row (y) and slice (z) index axes in patient space.

So voxel `[k, j, i]` sits at `origin + direction @ (i·dx, j·dy, k·dz)`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tumorchar.errors import ScanReadError  # noqa: F401  (re-exported)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
OTHER_SUFFIXES = (".mha", ".mhd")


@dataclass(frozen=True)
class Volume:
    """A 3D image with its geometry (see the module docstring for the conventions)."""

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"a Volume is 3D (z, y, x), got shape {self.array.shape}")
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"spacing must be three positive numbers, got {self.spacing}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)

    def axes_mm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coordinates (mm) of the voxel centres along each index axis, `(z, y, x)` order.

        Coordinate along axis a = ⟨origin, d_a⟩ + index·spacing_a, with d_a the axis's
        direction cosine; for an axial scan with identity direction these are the patient
        z, y, x positions (e.g. the DICOM slice positions along z).
        """
        d = np.asarray(self.direction, float)
        origin = np.asarray(self.origin, float)
        coords = []
        for axis, column in zip((0, 1, 2), (2, 1, 0), strict=True):
            start = float(origin @ d[:, column])
            coords.append(start + np.arange(self.array.shape[axis]) * self.spacing[axis])
        return coords[0], coords[1], coords[2]

    def to_sitk(self):
        """The same image as a SimpleITK image (spacing/origin in ITK's x, y, z order)."""
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        image.SetSpacing(tuple(float(s) for s in self.spacing[::-1]))
        image.SetOrigin(tuple(float(o) for o in self.origin))
        image.SetDirection(tuple(float(v) for v in np.asarray(self.direction).ravel()))
        return image

    @classmethod
    def from_sitk(cls, image, dtype=np.float32) -> Volume:
        import SimpleITK as sitk

        if image.GetDimension() != 3:
            raise ValueError(f"expected a 3D image, got {image.GetDimension()}D")
        return cls(
            array=sitk.GetArrayFromImage(image).astype(dtype, copy=False),
            spacing=tuple(float(s) for s in image.GetSpacing()[::-1]),
            origin=tuple(float(o) for o in image.GetOrigin()),
            direction=np.asarray(image.GetDirection(), float).reshape(3, 3),
        )


def read_image(path: str | os.PathLike, case_id: str | None = None) -> Volume:
    """Read a NIfTI / NRRD / MetaImage file, or a DICOM series folder, as a `Volume`."""
    path = Path(path)
    name = case_id or path.name
    if path.is_dir():
        return read_dicom_series(path, case_id=name)
    if not path.is_file():
        raise ScanReadError(f"case {name}: no image file at {path}")
    lower = path.name.lower()
    if not lower.endswith(NIFTI_SUFFIXES + NRRD_SUFFIXES + OTHER_SUFFIXES):
        raise ScanReadError(
            f"case {name}: unsupported image file {path.name!r} "
            "(expected .nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd or a DICOM series folder)"
        )
    return _read_with_sitk(path, name)


def _read_with_sitk(path: Path, name: str) -> Volume:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
        raise ScanReadError(f"case {name}: cannot read {path.name}: {first}") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ScanReadError(f"case {name}: {path.name} is not a single-channel image")
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    if image.GetDimension() != 3:
        raise ScanReadError(f"case {name}: {path.name} is {image.GetDimension()}D, not 3D")
    return Volume.from_sitk(image)


# --- DICOM series ---------------------------------------------------------------------------

# Files that sit beside the images in real downloads and are not images (LIDC puts its
# reader XML in the series folder); any other file must be a readable DICOM.
SIDE_FILES = (".xml", ".txt", ".json", ".csv", ".md", ".html", ".pdf", ".ini", ".log")
# Relative tolerance on slice gaps: a gap differing from the median by more than this is
# either a missing slice (≈ a multiple of the median) or an inconsistent spacing.
SLICE_GAP_TOLERANCE = 0.1
DUPLICATE_POSITION_MM = 1e-3


def read_dicom_series(
    folder: str | os.PathLike, case_id: str | None = None, series_uid: str | None = None
) -> Volume:
    """Read one DICOM series from `folder` (files in any order) as HU, with its geometry.

    Slices are sorted by their position along the slice normal n = r × c (r, c the row and
    column direction cosines of ImageOrientationPatient); the slice spacing is the median
    gap between consecutive positions. Pixel values become HU = slope · stored + intercept
    (RescaleSlope / RescaleIntercept, default 1 and 0). Side files (LIDC's reader XML...,
    see SIDE_FILES) are skipped by suffix. Refuses, naming the case: any other file that
    is not DICOM or is corrupt, several series (unless `series_uid` picks one), images of
    differing size / orientation / pixel spacing, duplicated slice positions, missing slices
    and inconsistent slice gaps.
    """
    import pydicom

    folder = Path(folder)
    name = case_id or folder.name
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in SIDE_FILES
    )
    if not files:
        raise ScanReadError(f"case {name}: no files in DICOM folder {folder}")
    datasets = []
    for path in files:
        try:
            ds = pydicom.dcmread(path)
        except Exception as error:  # InvalidDicomError, truncated files, bad tags...
            raise ScanReadError(
                f"case {name}: {path.name} is not a readable DICOM file ({type(error).__name__})"
            ) from None
        if "PixelData" not in ds:
            continue  # e.g. a DICOMDIR or a structured report next to the images
        if series_uid is not None and ds.get("SeriesInstanceUID") != series_uid:
            continue
        datasets.append((path, ds))
    if not datasets:
        raise ScanReadError(f"case {name}: no DICOM image of the requested series in {folder}")
    uids = {ds.get("SeriesInstanceUID") for _, ds in datasets}
    if len(uids) > 1:
        raise ScanReadError(
            f"case {name}: {len(uids)} DICOM series mixed in {folder}; pass the series uid"
        )
    return _assemble_series(datasets, name)


def _assemble_series(datasets, name: str) -> Volume:
    first = datasets[0][1]
    axial = (1, 0, 0, 0, 1, 0)
    # a lone slice (e.g. a secondary capture) may lack position tags; a series may not
    lone_position = (0.0, 0.0, 0.0) if len(datasets) == 1 else None
    orientation = _floats(first, "ImageOrientationPatient", name, default=axial)
    row_dir, col_dir = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row_dir, col_dir)
    pixel_spacing = _floats(first, "PixelSpacing", name)
    shape = (int(first.Rows), int(first.Columns))
    positions = []
    for path, ds in datasets:
        if (int(ds.Rows), int(ds.Columns)) != shape:
            raise ScanReadError(f"case {name}: slice {path.name} has a different image size")
        if not np.allclose(
            _floats(ds, "ImageOrientationPatient", name, default=axial), orientation, atol=1e-4
        ):
            raise ScanReadError(f"case {name}: slice {path.name} has a different orientation")
        if not np.allclose(_floats(ds, "PixelSpacing", name), pixel_spacing, rtol=1e-4):
            raise ScanReadError(f"case {name}: slice {path.name} has a different pixel spacing")
        position = _floats(ds, "ImagePositionPatient", name, default=lone_position)
        positions.append(float(np.dot(position, normal)))
    order = np.argsort(positions, kind="stable")
    positions = np.asarray(positions)[order]
    datasets = [datasets[i] for i in order]
    dz = _slice_spacing(positions, name, first)
    array = np.empty((len(datasets), *shape), np.float32)
    for k, (path, ds) in enumerate(datasets):
        array[k] = _hounsfield(ds, path, name)
    direction = np.column_stack([row_dir, col_dir, normal])
    return Volume(
        array=array,
        spacing=(dz, float(pixel_spacing[0]), float(pixel_spacing[1])),
        origin=tuple(_floats(datasets[0][1], "ImagePositionPatient", name, lone_position)),
        direction=direction,
    )


def _slice_spacing(positions: np.ndarray, name: str, first) -> float:
    """Median gap between sorted slice positions, after checking every gap agrees with it."""
    if len(positions) == 1:
        thickness = first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0
        return float(thickness)
    gaps = np.diff(positions)
    duplicated = np.flatnonzero(gaps < DUPLICATE_POSITION_MM)
    if duplicated.size:
        z = positions[duplicated[0]]
        raise ScanReadError(f"case {name}: duplicated slice at position {z:.2f} mm")
    dz = float(np.median(gaps))
    for k, gap in enumerate(gaps):
        if abs(gap - dz) <= SLICE_GAP_TOLERANCE * dz:
            continue
        ratio = gap / dz
        where = f"between {positions[k]:.2f} and {positions[k + 1]:.2f} mm"
        if ratio > 1.5 and abs(ratio - round(ratio)) <= SLICE_GAP_TOLERANCE:
            raise ScanReadError(
                f"case {name}: {round(ratio) - 1} missing slice(s) {where} (spacing {dz:.3g} mm)"
            )
        raise ScanReadError(
            f"case {name}: inconsistent slice spacing {gap:.3g} mm {where} (median {dz:.3g} mm)"
        )
    return dz


def _hounsfield(ds, path: Path, name: str) -> np.ndarray:
    """HU = RescaleSlope · stored value + RescaleIntercept."""
    try:
        stored = ds.pixel_array
    except Exception as error:  # pydicom raises many types for broken/compressed data
        raise ScanReadError(
            f"case {name}: cannot decode the pixels of {path.name} ({type(error).__name__})"
        ) from None
    if stored.ndim != 2:
        raise ScanReadError(f"case {name}: {path.name} is not a single-frame grayscale image")
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _floats(ds, keyword: str, name: str, default=None) -> list[float]:
    value = ds.get(keyword)
    if value is None:
        if default is not None:
            return [float(v) for v in default]
        raise ScanReadError(f"case {name}: a DICOM slice lacks {keyword}")
    return [float(v) for v in value]


def find_series_folders(root: str | os.PathLike) -> dict[str, Path]:
    """Map SeriesInstanceUID → folder for every DICOM series below `root` (headers only).

    Works for the TCIA layout `<patient>/<study>/<series>/*.dcm` whatever the folders are
    named: one file per folder is opened (without its pixels) to learn the series uid.
    """
    import pydicom

    found: dict[str, Path] = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for filename in sorted(filenames):
            try:
                ds = pydicom.dcmread(
                    Path(dirpath) / filename,
                    stop_before_pixels=True,
                    specific_tags=["SeriesInstanceUID"],
                )
            except Exception:  # not DICOM (xml, licence...): try the next file
                continue
            uid = ds.get("SeriesInstanceUID")
            if uid:
                found.setdefault(str(uid), Path(dirpath))
                break
    return found
