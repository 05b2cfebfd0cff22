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


def check_finite(array: np.ndarray, name: str, what: str = "the scan") -> None:
    """Refuse non-finite voxels (NaN, ±inf), naming the case and how many there are.

    There is no policy that would make them harmless: 0 is soft tissue in CT, the minimum
    air, and any other value invents intensities, so a scan with them is refused and the
    user repairs it (e.g. in their own preprocessing) knowing what they replace them with.
    """
    n_bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if n_bad:
        raise ScanReadError(
            f"case {name}: {what} has {n_bad:,} non-finite voxel(s) (NaN or infinity) of "
            f"{array.size:,}; refusing to characterize it"
        )


def read_image(
    path: str | os.PathLike, case_id: str | None = None, max_bytes: int | None = None
) -> Volume:
    """Read a NIfTI / NRRD / MetaImage file, or a DICOM series folder, as a `Volume`.

    Every format is checked before decoding (`tumorchar.data.headers`, `read_dicom_series`):
    declared sizes against the memory budget `max_bytes`, data length, voxel sizes, one
    component per voxel; after decoding, non-finite voxels are refused (`check_finite`).
    """
    path = Path(path)
    name = case_id or path.name
    if path.is_dir():
        return read_dicom_series(path, case_id=name, max_bytes=max_bytes)
    if not path.is_file():
        raise ScanReadError(f"case {name}: no image file at {path}")
    lower = path.name.lower()
    if not lower.endswith(NIFTI_SUFFIXES + NRRD_SUFFIXES + OTHER_SUFFIXES):
        raise ScanReadError(
            f"case {name}: unsupported image file {path.name!r} "
            "(expected .nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd or a DICOM series folder)"
        )
    return _read_with_sitk(path, name, max_bytes)


# the ITK reader of each suffix, named so that no other reader (GDCM) ever sees the file
_ITK_IO = {".nii": "NiftiImageIO", ".gz": "NiftiImageIO", ".nrrd": "NrrdImageIO",
           ".nhdr": "NrrdImageIO", ".mha": "MetaImageIO", ".mhd": "MetaImageIO"}  # fmt: skip


def _read_with_sitk(path: Path, name: str, max_bytes: int | None = None) -> Volume:
    import SimpleITK as sitk

    from tumorchar.data.headers import check_header

    declared = check_header(path, name, max_bytes)
    if declared.nonfinite:
        raise ScanReadError(
            f"case {name}: {path.name} has {declared.nonfinite:,} non-finite voxel(s) (NaN or "
            f"infinity) of {declared.n_voxels:,}; refusing to characterize it"
        )
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO(_ITK_IO[path.suffix.lower()])
    reader.SetOutputPixelType(sitk.sitkFloat32)
    try:
        reader.ReadImageInformation()
        components, size = reader.GetNumberOfComponents(), tuple(reader.GetSize())
        if components != 1:
            raise ScanReadError(
                f"case {name}: {path.name} has {components} components per voxel; only "
                "single-component images are read"
            )
        if size[:3] != declared.sizes or any(s != 1 for s in size[3:]):
            raise ScanReadError(
                f"case {name}: {path.name}: its header declares sizes {list(declared.sizes)} "
                f"but SimpleITK reads {list(size)}"
            )
        image = reader.Execute()
    except RuntimeError as error:
        first = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
        raise ScanReadError(f"case {name}: cannot read {path.name}: {first[:300]}") from None
    if image.GetDimension() == 2:
        if len(declared.spacing) < 3:
            raise ScanReadError(
                f"case {name}: {path.name} is a 2D image without a slice thickness; "
                "a 3D region in mm cannot be cut from it"
            )
        image = sitk.JoinSeries(image, 0.0, declared.spacing[2])
    if image.GetDimension() != 3:
        raise ScanReadError(f"case {name}: {path.name} is {image.GetDimension()}D, not 3D")
    spacing = image.GetSpacing()
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ScanReadError(f"case {name}: {path.name} has voxel sizes {spacing}; not usable")
    volume = Volume.from_sitk(image)
    check_finite(volume.array, name, path.name)
    return volume


# --- DICOM series ---------------------------------------------------------------------------

# Files that sit beside the images in real downloads and are not images (LIDC puts its
# reader XML in the series folder); any other file must be a readable DICOM.
SIDE_FILES = (".xml", ".txt", ".json", ".csv", ".md", ".html", ".pdf", ".ini", ".log")
# Relative tolerance on slice gaps: a gap differing from the median by more than this is
# either a missing slice (≈ a multiple of the median) or an inconsistent spacing.
SLICE_GAP_TOLERANCE = 0.1
DUPLICATE_POSITION_MM = 1e-3
# A DICOM file without pixel data is a side file (DICOMDIR, structured report...) unless it
# says it is an image: an image SOP class or any attribute of the image pixel module.
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
IMAGE_KEYWORDS = ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel",
                  "PhotometricInterpretation")  # fmt: skip
# ImageOrientationPatient: row and column cosines of unit length and orthogonal, to this
DIRECTION_TOLERANCE = 1e-3


class DicomTagError(ScanReadError):
    """A required DICOM attribute is missing or malformed; names the case, file and tag."""

    def __init__(self, name: str, path: Path, keyword: str, problem: str | None = None):
        self.case_id, self.file, self.keyword = name, path.name, keyword
        tag = f"{keyword} {_tag_label(keyword)}".strip()
        if problem is None:
            super().__init__(f"case {name}: {path.name} has no {tag}")
        else:
            super().__init__(f"case {name}: {path.name}: {tag} is {problem}")


def _tag_label(keyword: str) -> str:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    return "" if tag is None else f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


@dataclass(frozen=True)
class _Slice:
    """What one DICOM image file says about its pixels and their place (checked values)."""

    path: Path
    dataset: object
    rows: int
    columns: int
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, float]
    position: tuple[float, float, float] | None
    slope: float
    intercept: float
    thickness: float | None


def read_dicom_series(
    folder: str | os.PathLike,
    case_id: str | None = None,
    series_uid: str | None = None,
    max_bytes: int | None = None,
) -> Volume:
    """Read one DICOM series from `folder` (files in any order) as HU, with its geometry.

    Slices are sorted by their position along the slice normal n = r × c (r, c the row and
    column direction cosines of ImageOrientationPatient); the slice spacing is the median
    gap between consecutive positions. Pixel values become HU = slope · stored + intercept
    (RescaleSlope / RescaleIntercept, default 1 and 0). Side files (LIDC's reader XML...,
    see SIDE_FILES, and DICOM files that are not images, e.g. a DICOMDIR) are skipped.
    Refuses, naming the case (and the file where one is at fault): any other file that is
    not DICOM, a damaged image (an image without readable pixels), a missing or malformed
    required attribute (`DicomTagError`, naming the tag), several series (unless
    `series_uid` picks one), images of differing size / orientation / pixel spacing,
    multi-frame or multi-component images, duplicated slice positions, missing slices,
    inconsistent slice gaps, a series over the memory budget (checked on the headers,
    before any pixel is decoded) and non-finite voxels.
    """
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
        ds = _read_dataset(path, name)
        if not any(keyword in ds for keyword in PIXEL_KEYWORDS):
            _refuse_damaged_image(ds, path, name)
            continue  # e.g. a DICOMDIR or a structured report next to the images
        uid = _text(ds, "SeriesInstanceUID", path, name)
        if series_uid is not None and uid != series_uid:
            continue
        datasets.append((path, ds, uid))
    if not datasets:
        raise ScanReadError(f"case {name}: no DICOM image of the requested series in {folder}")
    uids = {uid for _, _, uid in datasets}
    if len(uids) > 1:
        raise ScanReadError(
            f"case {name}: {len(uids)} DICOM series mixed in {folder}; pass the series uid"
        )
    return _assemble_series([(path, ds) for path, ds, _ in datasets], name, max_bytes)


def read_dicom_file(
    path: str | os.PathLike, case_id: str | None = None, max_bytes: int | None = None
) -> Volume:
    """One DICOM image file as a one-slice `Volume`, with the checks of `read_dicom_series`
    (decoded by pydicom; its slice thickness is the slab's, and must be given)."""
    path = Path(path)
    name = case_id or path.name
    ds = _read_dataset(path, name)
    if not any(keyword in ds for keyword in PIXEL_KEYWORDS):
        _refuse_damaged_image(ds, path, name)
        raise ScanReadError(f"case {name}: {path.name} is a DICOM file without an image")
    return _assemble_series([(path, ds)], name, max_bytes)


def _read_dataset(path: Path, name: str):
    import pydicom

    try:
        return pydicom.dcmread(path)
    except Exception as error:  # InvalidDicomError, truncated files, bad tags...
        raise ScanReadError(
            f"case {name}: {path.name} is not a readable DICOM file ({type(error).__name__})"
        ) from None


def _refuse_damaged_image(ds, path: Path, name: str) -> None:
    """A DICOM file without pixels that claims to be an image is damaged, not a side file."""
    import pydicom

    meta = getattr(ds, "file_meta", None)
    classes = [_text(ds, "SOPClassUID", path, name, required=False)]
    if meta is not None:
        classes.append(_text(meta, "MediaStorageSOPClassUID", path, name, required=False))
    image_class = next(
        (c for c in classes if c and "Image Storage" in pydicom.uid.UID(c).name), None
    )
    attributes = [keyword for keyword in IMAGE_KEYWORDS if keyword in ds]
    if image_class or attributes:
        why = (
            f"its SOP class is {pydicom.uid.UID(image_class).name}"
            if image_class
            else f"it has {attributes[0]}"
        )
        raise ScanReadError(
            f"case {name}: {path.name} is a damaged DICOM image: {why} but it holds no "
            "pixel data (truncated or corrupt file)"
        )


def _value(ds, keyword: str, path: Path, name: str, required: bool):
    """The raw value of `keyword`; None when absent or empty and not `required`."""
    try:
        value = ds[keyword].value if keyword in ds else None
    except Exception as error:  # pydicom converts on access: unknown VR, bad encoding...
        raise DicomTagError(name, path, keyword, f"unreadable ({type(error).__name__})") from None
    if value is None or (isinstance(value, str | bytes) and not value.strip()):
        if required:
            raise DicomTagError(name, path, keyword)
        return None
    return value


def _text(ds, keyword: str, path: Path, name: str, required: bool = True) -> str | None:
    value = _value(ds, keyword, path, name, required)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DicomTagError(name, path, keyword, "malformed")
    return value.strip()


def _numbers(ds, keyword, path, name, count, required=True, kind=float) -> tuple | None:
    """`count` finite numbers from a DICOM attribute (None if absent and not required)."""
    from pydicom.multival import MultiValue

    value = _value(ds, keyword, path, name, required)
    if value is None:
        return None
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    try:
        numbers = tuple(kind(item) for item in items)
    except (TypeError, ValueError, OverflowError):
        raise DicomTagError(name, path, keyword, "malformed") from None
    if len(numbers) != count or not all(np.isfinite(v) for v in numbers):
        raise DicomTagError(name, path, keyword, f"malformed (expected {count} finite values)")
    return numbers


def _slice_header(path: Path, ds, name: str, lone: bool) -> _Slice:
    """Check and collect the attributes that place one image file's pixels."""
    rows, columns = (_numbers(ds, k, path, name, 1, kind=int)[0] for k in ("Rows", "Columns"))
    if rows < 1 or columns < 1:
        raise DicomTagError(name, path, "Rows" if rows < 1 else "Columns", "malformed")
    samples = _numbers(ds, "SamplesPerPixel", path, name, 1, required=False, kind=int)
    if samples is not None and samples[0] != 1:
        raise ScanReadError(
            f"case {name}: {path.name} has {samples[0]} samples per pixel (colour); only "
            "single-component images are read"
        )
    frames = _numbers(ds, "NumberOfFrames", path, name, 1, required=False, kind=int)
    if frames is not None and frames[0] != 1:
        raise ScanReadError(f"case {name}: {path.name} is not a single-frame grayscale image")
    spacing = _numbers(ds, "PixelSpacing", path, name, 2)
    if min(spacing) <= 0:
        raise DicomTagError(name, path, "PixelSpacing", "zero or negative")
    axial = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    orientation = _numbers(ds, "ImageOrientationPatient", path, name, 6, required=False) or axial
    row_dir, col_dir = np.array(orientation[:3]), np.array(orientation[3:])
    if (
        abs(np.linalg.norm(row_dir) - 1) > DIRECTION_TOLERANCE
        or abs(np.linalg.norm(col_dir) - 1) > DIRECTION_TOLERANCE
        or abs(float(row_dir @ col_dir)) > DIRECTION_TOLERANCE
    ):
        raise DicomTagError(name, path, "ImageOrientationPatient", "not orthonormal")
    # a lone slice (e.g. a secondary capture) may lack position tags; a series may not
    position = _numbers(ds, "ImagePositionPatient", path, name, 3, required=not lone)
    slope = _numbers(ds, "RescaleSlope", path, name, 1, required=False)
    intercept = _numbers(ds, "RescaleIntercept", path, name, 1, required=False)
    thickness = None
    if lone:
        for keyword in ("SpacingBetweenSlices", "SliceThickness"):
            value = _numbers(ds, keyword, path, name, 1, required=False)
            if value is not None and value[0] > 0:
                thickness = value[0]
                break
        else:
            raise ScanReadError(
                f"case {name}: {path.name} is a single slice without a positive "
                "SliceThickness or SpacingBetweenSlices; its thickness in mm is unknown"
            )
    _check_pixel_length(ds, path, name, rows * columns)
    return _Slice(
        path=path,
        dataset=ds,
        rows=rows,
        columns=columns,
        orientation=orientation,
        pixel_spacing=spacing,
        position=position,
        slope=(slope[0] if slope and slope[0] != 0 else 1.0),
        intercept=(intercept[0] if intercept else 0.0),
        thickness=thickness,
    )


def _check_pixel_length(ds, path: Path, name: str, n_pixels: int) -> None:
    """Uncompressed pixel data must hold Rows · Columns values (a cut file holds fewer)."""
    meta = getattr(ds, "file_meta", None)
    syntax = None if meta is None else _text(meta, "TransferSyntaxUID", path, name, False)
    try:
        import pydicom

        compressed = syntax is not None and pydicom.uid.UID(syntax).is_compressed
    except ValueError:  # not a known transfer syntax: pydicom's decoder will say so
        return
    if compressed or "PixelData" not in ds:
        return
    bits = _numbers(ds, "BitsAllocated", path, name, 1, kind=int)[0]
    if bits not in (1, 8, 16, 32, 64):
        raise DicomTagError(name, path, "BitsAllocated", "malformed")
    expected = (n_pixels + 7) // 8 if bits == 1 else n_pixels * bits // 8
    found = len(_value(ds, "PixelData", path, name, True))
    if found < expected:
        raise ScanReadError(
            f"case {name}: {path.name} is truncated: its pixel data hold {found:,} bytes, "
            f"Rows × Columns × BitsAllocated need {expected:,}"
        )


def _assemble_series(datasets, name: str, max_bytes: int | None = None) -> Volume:
    from tumorchar.data.headers import check_budget

    lone = len(datasets) == 1
    slices = [_slice_header(path, ds, name, lone) for path, ds in datasets]
    first = slices[0]
    shape = (first.rows, first.columns)
    check_budget(len(slices) * first.rows * first.columns, name, "the DICOM series", max_bytes)
    for s in slices[1:]:
        if (s.rows, s.columns) != shape:
            raise ScanReadError(f"case {name}: slice {s.path.name} has a different image size")
        if not np.allclose(s.orientation, first.orientation, atol=1e-4):
            raise ScanReadError(f"case {name}: slice {s.path.name} has a different orientation")
        if not np.allclose(s.pixel_spacing, first.pixel_spacing, rtol=1e-4):
            raise ScanReadError(f"case {name}: slice {s.path.name} has a different pixel spacing")
    row_dir, col_dir = np.array(first.orientation[:3]), np.array(first.orientation[3:])
    normal = np.cross(row_dir, col_dir)
    if lone:
        dz, origin = first.thickness, first.position or (0.0, 0.0, 0.0)
    else:
        positions = np.array([float(np.dot(s.position, normal)) for s in slices])
        order = np.argsort(positions, kind="stable")
        slices = [slices[i] for i in order]
        dz, origin = _slice_spacing(positions[order], name), slices[0].position
    array = np.empty((len(slices), *shape), np.float32)
    for k, s in enumerate(slices):
        array[k] = _hounsfield(s, name)
    check_finite(array, name, "the DICOM series")
    return Volume(
        array=array,
        spacing=(float(dz), float(first.pixel_spacing[0]), float(first.pixel_spacing[1])),
        origin=tuple(float(v) for v in origin),
        direction=np.column_stack([row_dir, col_dir, normal]),
    )


def _slice_spacing(positions: np.ndarray, name: str) -> float:
    """Median gap between sorted slice positions, after checking every gap agrees with it."""
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


def _hounsfield(s: _Slice, name: str) -> np.ndarray:
    """HU = RescaleSlope · stored value + RescaleIntercept."""
    try:
        stored = s.dataset.pixel_array
    except Exception as error:  # pydicom raises many types for broken/compressed data
        raise ScanReadError(
            f"case {name}: cannot decode the pixels of {s.path.name} ({type(error).__name__})"
        ) from None
    if stored.shape != (s.rows, s.columns):
        raise ScanReadError(f"case {name}: {s.path.name} is not a single-frame grayscale image")
    return stored.astype(np.float32) * np.float32(s.slope) + np.float32(s.intercept)


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
                uid = ds.get("SeriesInstanceUID")
            except Exception:  # not DICOM (xml, licence...), or an unreadable uid: next file
                continue
            if isinstance(uid, str) and uid.strip():
                found.setdefault(str(uid), Path(dirpath))
                break
    return found
