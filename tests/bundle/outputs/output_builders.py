"""Small synthetic DICOM CT series for the output tests, written with pydicom.

Every identifying header value is distinctive, so a test can search an output's bytes for
each one: `IDENTITY` holds values that must never be copied, `ALLOWED` those that are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from tumorchar.bundle.characterizer import Characterization
from tumorchar.bundle.outputs.algorithm import Algorithm

#: Header values of the source that no output may contain (keyword → value).
IDENTITY = {
    "PatientName": "Zyxquor^Hepzibah",
    "PatientBirthDate": "19010203",
    "InstitutionName": "Qwertyvale Infirmary",
    "InstitutionAddress": "9 Plumtree Crescent Ozmby",
    "ReferringPhysicianName": "Vondracek^Ulfberht",
    "PerformingPhysicianName": "Marchpane^Isolde",
    "OperatorsName": "Tattersall^Griselda",
    "StationName": "SCANROOMQX7",
    "OtherPatientIDs": "OTHER-ID-77123",
    "PatientAddress": "14 Quillon Lane Brindlemoor",
    "StudyDescription": "WALRUSCHEST STUDY",
    "SeriesDescription": "BLUEBELLSERIES",
    "DeviceSerialNumber": "SN-QQ-4471",
}
#: Allow-listed header values that the outputs carry over.
ALLOWED = {
    "PatientID": "TCHAR-0042",
    "AccessionNumber": "ACC77801",
    "StudyID": "ST9931",
    "StudyDate": "20250102",
    "StudyTime": "101112",
}
SPACING_ZYX = (2.0, 0.75, 0.75)
ORIGIN_XYZ = (-12.0, -10.0, 40.0)


def ball_volume(shape=(16, 32, 32), center_kji=(8.0, 15.0, 17.0), radius_mm=4.0, seed=0):
    """Lung-like noise (−850 HU) with a soft-tissue ball (30 HU); returns (HU, mask)."""
    rng = np.random.default_rng(seed)
    grids = np.indices(shape, dtype=float)
    distance = np.sqrt(
        sum(((g - c) * s) ** 2 for g, c, s in zip(grids, center_kji, SPACING_ZYX, strict=True))
    )
    mask = distance <= radius_mm
    volume = -850.0 + 20.0 * rng.standard_normal(shape)
    volume[mask] = 30.0 + 15.0 * rng.standard_normal(int(mask.sum()))
    return volume.astype(np.float32), mask


def center_xyz(center_kji) -> tuple[float, float, float]:
    k, j, i = center_kji
    dz, dy, dx = SPACING_ZYX
    return (ORIGIN_XYZ[0] + i * dx, ORIGIN_XYZ[1] + j * dy, ORIGIN_XYZ[2] + k * dz)


def write_series(
    folder: Path,
    volume_hu: np.ndarray,
    shuffle_seed: int = 1,
    modality: str = "CT",
    spacing_zyx=SPACING_ZYX,
    origin_xyz=ORIGIN_XYZ,
) -> dict:
    """Write `volume_hu` (z, y, x) as a CT (HU) or MR series (files in shuffled order);
    returns the study / series / frame-of-reference UIDs and each slice k's SOP instance UID."""
    folder.mkdir(parents=True, exist_ok=True)
    uids = {
        "study": generate_uid(),
        "series": generate_uid(),
        "frame_of_reference": generate_uid(),
        "instances": [generate_uid() for _ in range(volume_hu.shape[0])],
    }
    order = np.random.default_rng(shuffle_seed).permutation(volume_hu.shape[0])
    for n, k in enumerate(order):
        ds = _slice(volume_hu[k], int(k), uids, modality, spacing_zyx, origin_xyz)
        ds.save_as(folder / f"file{n:03d}.dcm", enforce_file_format=True)
    (folder / "readme.txt").write_text("not DICOM\n")
    return uids


def _slice(hu: np.ndarray, k: int, uids: dict, modality, spacing_zyx, origin_xyz) -> Dataset:
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uids["instances"][k]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uids["instances"][k]
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.FrameOfReferenceUID = uids["frame_of_reference"]
    ds.Modality = modality
    ds.Manufacturer = "SyntheticScanner"
    ds.SeriesNumber = 3
    ds.InstanceNumber = k + 1
    ds.PatientSex = "O"
    ds.ContentDate, ds.ContentTime = ALLOWED["StudyDate"], ALLOWED["StudyTime"]
    for keyword, value in {**IDENTITY, **ALLOWED}.items():
        setattr(ds, keyword, value)
    dz, dy, dx = spacing_zyx
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [origin_xyz[0], origin_xyz[1], origin_xyz[2] + k * dz]
    ds.PixelSpacing = [dy, dx]
    ds.SliceThickness = dz
    ds.PositionReferenceIndicator = ""
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    if modality == "CT":
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.KVP = 120
        ds.PixelData = np.round(hu + 1024).astype(np.int16).tobytes()
    else:  # magnitude MR: stored values are the intensities
        ds.PixelData = np.round(np.clip(hu, 0, 32767)).astype(np.int16).tobytes()
    return ds


def all_text(path: Path) -> bytes:
    """The file's bytes, for searching header values in any element, nested or not."""
    return Path(path).read_bytes()


def read(path: Path):
    return pydicom.dcmread(path)


def make_result(center_mm, kind="mtl", label="malignant", case_id="case007"):
    attributes = {
        "calcification": 5.6,
        "spiculation": 2.2,
        "sphericity": 3.9,
        "lobulation": 2.6,
        "margin": 3.4,
        "texture": 4.7,
    }
    return Characterization(
        case_id=case_id,
        kind=kind,
        modality="ct",
        label=label,
        probability=0.8125 if label == "malignant" else 0.25,
        probability_method="logistic calibration (test)",
        malignancy=4.25 if kind == "mtl" else None,
        attributes=attributes if kind == "mtl" else {},
        region={
            "center_mm": list(center_mm),
            "padded_fraction": 0.0,
            "kind": "ct-cube",
            "size_mm": 24.0,
            "spacing_mm": 1.0,
            "fill_value": -1000.0,
        },
    )


def make_algorithm(is_phantom=True, kind="mtl") -> Algorithm:
    return Algorithm(
        version="0.1.0",
        bundle_sha256="ab12" * 16,
        kind=kind,
        features="C3D fc6 (cpu preset, fine-tuned from random-init)",
        modality="ct",
        training_source="phantom" if is_phantom else "lidc",
        n_training_cases=24,
        is_phantom=is_phantom,
        created_utc="2026-12-02T06:00:00Z",
    )
