"""The source DICOM series of a prediction, reduced to what the outputs may carry over.

highdicom copies the whole Patient and Study modules of the source into every SR, SEG and
Parametric Map it builds. To keep everything else out (patient name, birth date, physicians,
institution...), the outputs are never built from the source headers themselves but from
*stand-ins*: one new dataset per source slice holding only

- `ALLOWED_ATTRIBUTES`, the explicit allow-list of patient / study attributes (what a PACS or
  viewer needs to file the output with the study it belongs to), copied when present;
- the references and geometry the outputs point at or are placed on (`REFERENCE_ATTRIBUTES`:
  SOP, series, study and frame-of-reference UIDs, image position / orientation, spacing);
- the type-2 patient / study attributes the output IODs require, present but empty.

The stand-ins are sorted as `tumorchar.data.io.read_dicom_series` sorts the slices (by
position along the slice normal n = r × c), so frame k of an output lies on slice k of the
`Volume` read from the same folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tumorchar.errors import ScanError

#: Patient / study attributes copied from the source into every DICOM output (if present).
ALLOWED_ATTRIBUTES = (
    "PatientID",
    "StudyInstanceUID",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
)
#: What the outputs reference or are placed on: UIDs and image geometry, never identity.
REFERENCE_ATTRIBUTES = (
    "SOPClassUID",
    "SOPInstanceUID",
    "Modality",
    "SeriesInstanceUID",
    "SeriesNumber",
    "InstanceNumber",
    "FrameOfReferenceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
)
#: Type-2 attributes of the Patient and General Study modules: present, left empty.
EMPTY_REQUIRED = (
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "ReferringPhysicianName",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
)


def read_source_series(path: str | os.PathLike, case_id: str | None = None) -> list:
    """Headers (no pixels) of the image series in a folder or of one DICOM file, as stand-ins.

    Files that are not DICOM or carry no image (side files, an SR) are skipped; no image or
    several series in one folder raise `ScanError`, as `read_dicom_series` refuses them.
    """
    import pydicom

    path = Path(path)
    name = case_id or path.name
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    headers = []
    for file in files:
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=True)
        except Exception:  # not DICOM (reader XML, a readme): not part of the series
            continue
        if "Rows" in ds and "SOPInstanceUID" in ds and "ImagePositionPatient" in ds:
            headers.append(ds)
    if not headers:
        raise ScanError(f"case {name}: no DICOM image with a position in {path}")
    series = {str(ds.SeriesInstanceUID) for ds in headers}
    if len(series) > 1:
        raise ScanError(f"case {name}: {len(series)} DICOM series mixed in {path}")
    return stand_ins(sort_by_position(headers))


def sort_by_position(headers: Sequence) -> list:
    """Slices ordered by ⟨ImagePositionPatient, n⟩, n = r × c (as the scan reader orders them)."""
    orientation = np.asarray(headers[0].ImageOrientationPatient, float)
    normal = np.cross(orientation[:3], orientation[3:])
    positions = [
        float(np.dot(np.asarray(ds.ImagePositionPatient, float), normal)) for ds in headers
    ]
    return [headers[i] for i in np.argsort(positions, kind="stable")]


def stand_ins(headers: Sequence) -> list:
    """One reduced dataset per source header (see the module docstring)."""
    return [_stand_in(ds) for ds in headers]


def _stand_in(source):
    from pydicom.dataset import Dataset

    reduced = Dataset()
    for keyword in EMPTY_REQUIRED:
        setattr(reduced, keyword, "")
    for keyword in (*ALLOWED_ATTRIBUTES, *REFERENCE_ATTRIBUTES):
        if keyword in source and source[keyword].value not in (None, ""):
            reduced[keyword] = source[keyword]
    return reduced
