"""Small, valid inputs of every format that the bad-input corpus then damages one way each."""

from __future__ import annotations

import copy
import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

SPACING_ZYX = (2.0, 0.8, 0.7)


def ct_array(shape=(6, 8, 10), seed=0) -> np.ndarray:
    """A CT-like float32 (z, y, x) array in HU: air with a soft-tissue block."""
    rng = np.random.default_rng(seed)
    array = np.full(shape, -1000.0, np.float32) + rng.normal(0, 5, shape).astype(np.float32)
    array[1:-1, 2:-2, 2:-2] = 40.0
    return array


def write_nifti(path: Path, array_zyx: np.ndarray, spacing_zyx=SPACING_ZYX) -> Path:
    """A NIfTI-1 file (gzipped if the name ends in .gz) of a (z, y, x) array."""
    affine = np.diag([*spacing_zyx[::-1], 1.0])
    nib.save(nib.Nifti1Image(np.asarray(array_zyx).transpose(2, 1, 0), affine), path)
    return path


def truncate(path: Path, keep: int) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    return path


def gunzip_bytes(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


def nrrd_bytes(array_zyx: np.ndarray, fields: str | None = None) -> bytes:
    """An attached-data NRRD (float32, raw, little endian) with the given spacing fields."""
    nz, ny, nx = array_zyx.shape
    if fields is None:
        fields = "space: left-posterior-superior\nspace directions: (0.7,0,0) (0,0.8,0) (0,0,2)"
    header = (
        f"NRRD0004\ntype: float\ndimension: 3\nsizes: {nx} {ny} {nz}\n{fields}\n"
        "endian: little\nencoding: raw\n\n"
    )
    return header.encode() + np.ascontiguousarray(array_zyx, "<f4").tobytes()


def dicom_series(folder: Path, hu: np.ndarray, spacing=SPACING_ZYX, series_uid="1.2.3.4"):
    """A CT series (one file per slice, img0000.dcm ...) built on pydicom's CT_small.dcm."""
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, plane in enumerate(hu):
        ds = copy.deepcopy(template)
        ds.Rows, ds.Columns = plane.shape
        ds.PixelData = np.round(plane + 1024).astype(np.int16).tobytes()
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness = spacing[0]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-10.0, -20.0, -100.0 + k * spacing[0]]
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        path = folder / f"img{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def edit_dicom(path: Path, **changes) -> Path:
    """Set (value) or delete (None) attributes of a DICOM file, in place."""
    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path)
    return path
