"""DICOM SR of predictions: a TID 1500 measurement report, one measurement group per finding.

Each finding is a TID 1411 volumetric ROI group whose region is either a segment of the SEG
written beside it (`outputs.seg`) or its centre point (SCOORD3D POINT in the source's frame
of reference). It holds, as TID 300 numeric measurements on the LIDC rating scales (unit
UCUM ``{score}``), the predicted malignancy and attribute scores, coded as the LIDC-IDRI
DICOM collection codes the readers' ratings (`LIDC_CONCEPTS`), so a prediction can be set
beside the readers' evaluations of the same nodule; the predicted class as a qualitative
evaluation (SCT Classification = SCT Benign / Malignant, or Normal / IPMN for MRI); the
probability-like score (DCM 122157 Probability, no units); and the algorithm identification
(TID 4019: name, version and, as parameters, the model, the bundle's manifest digest, the
training data and, for a phantom-trained model, the warning, which the series description
repeats).

The document references the source series (every source instance and the SEG in the
evidence, the slice through each finding's centre in the image library) and is built from
the source stand-ins (`outputs.source`), so only the allow-listed patient / study attributes
are copied. It is complete but neither final nor verified: no person has read it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tumorchar._io import atomic_path
from tumorchar.bundle.outputs.algorithm import Algorithm
from tumorchar.bundle.outputs.seg import WrittenSeg, segment_codes

SR_SERIES_NUMBER = 9102
LIDC_SCHEME = "99LIDCQIICR"
#: Task → (code value, coding scheme designator, code meaning), as in the LIDC DICOM collection.
LIDC_CONCEPTS = {
    "malignancy": ("RID36042", "RADLEX", "Malignancy"),
    "calcification": ("C3672", "NCIt", "Calcification"),
    "lobulation": ("C62175", "NCIt", "Lobular Pattern"),
    "margin": ("C25563", "NCIt", "Margin"),
    "spiculation": ("C28749", "NCIt", "Spiculation"),
    "texture": ("C41144", "NCIt", "Texture"),
    "subtlety": ("C45992", "NCIt", "Subtlety score"),
    "sphericity": ("400", LIDC_SCHEME, "Sphericity"),
    "internal_structure": ("200", LIDC_SCHEME, "Internal structure"),
}
SCORE_UNIT = ("{score}", "UCUM", "score")
#: Local codes for what no standard terminology at hand names (99 = private scheme).
LOCAL_SCHEME = "99TUMORCHAR"
IPMN = ("IPMN", LOCAL_SCHEME, "Intraductal papillary mucinous neoplasm")


@dataclass(frozen=True)
class Finding:
    """One prediction to report: the model's result and, if a SEG holds its region, the
    segment number there (otherwise the centre point is the region)."""

    result: Any  # tumorchar.bundle.Characterization
    segment_number: int | None = None


@dataclass(frozen=True)
class WrittenSR:
    path: Path
    sop_instance_uid: str
    series_instance_uid: str


def concept(task: str):
    """The coded concept of a rating task (`LIDC_CONCEPTS`)."""
    from highdicom.sr import CodedConcept

    value, scheme, meaning = LIDC_CONCEPTS[task]
    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def class_code(label: str):
    """The coded value of a predicted class."""
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    known = {
        "benign": codes.SCT.Benign,
        "malignant": codes.SCT.Malignant,
        "normal": codes.SCT.Normal,
    }
    if label in known:
        return known[label]
    if label == "ipmn":
        return CodedConcept(value=IPMN[0], scheme_designator=IPMN[1], meaning=IPMN[2])
    raise ValueError(f"no code for the class {label!r}")


def write_sr(
    path: str | os.PathLike,
    source: Sequence,
    findings: Sequence[Finding],
    algorithm: Algorithm,
    seg: WrittenSeg | None = None,
    series_number: int = SR_SERIES_NUMBER,
) -> WrittenSR:
    """Write a TID 1500 Comprehensive 3D SR of `findings` at `path` (atomically).

    `source` are the stand-ins of the scan's series (`outputs.source.read_source_series`);
    `seg` the SEG that holds the findings' regions, when one was written.
    """
    import highdicom as hd
    import pydicom

    if not findings:
        raise ValueError("a measurement report needs at least one finding")
    if any(f.segment_number is not None for f in findings) and seg is None:
        raise ValueError("findings name SEG segments but no SEG was given")
    groups = [
        _measurement_group(number, finding, source, algorithm, seg)
        for number, finding in enumerate(findings, start=1)
    ]
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(algorithm),
        procedure_reported=_procedure(algorithm.modality),
        imaging_measurements=groups,
        referenced_images=_key_slices(source, findings),
    )
    evidence = list(source)
    if seg is not None:
        evidence.append(pydicom.dcmread(seg.path, stop_before_pixels=True))
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=algorithm.name,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=algorithm.series_description("report"),
    )
    with atomic_path(path) as tmp:
        sr.save_as(tmp, enforce_file_format=True)
    return WrittenSR(Path(path), str(sr.SOPInstanceUID), str(sr.SeriesInstanceUID))


def _measurement_group(number, finding: Finding, source, algorithm: Algorithm, seg):
    import highdicom as hd
    import numpy as np
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    result = finding.result
    algorithm_id = _algorithm_id(algorithm)
    series = hd.sr.SourceSeriesForSegmentation(str(source[0].SeriesInstanceUID))
    region: dict[str, Any] = {}
    if finding.segment_number is not None:
        region["referenced_segment"] = hd.sr.ReferencedSegment(
            sop_class_uid=seg.sop_class_uid,
            sop_instance_uid=seg.sop_instance_uid,
            segment_number=finding.segment_number,
            source_series=series,
        )
    else:
        region["referenced_volume_surface"] = hd.sr.VolumeSurface(
            graphic_type=hd.sr.GraphicTypeValues3D.POINT,
            graphic_data=np.asarray([result.region["center_mm"]], dtype=float),
            frame_of_reference_uid=str(source[0].FrameOfReferenceUID),
            source_series=series,
        )
    unit = CodedConcept(*SCORE_UNIT[:2], meaning=SCORE_UNIT[2])
    scores = {"malignancy": result.malignancy} if result.malignancy is not None else {}
    scores |= dict(result.attributes)
    measurements = [
        hd.sr.Measurement(name=concept(task), value=float(value), unit=unit)
        for task, value in scores.items()
        if task in LIDC_CONCEPTS
    ]
    measurements.append(
        hd.sr.Measurement(
            name=codes.DCM.Probability,
            value=float(result.probability),
            unit=codes.UCUM.NoUnits,
        )
    )
    _, finding_type, site = segment_codes(algorithm.modality)
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=hd.UID(), identifier=f"finding {number}, case {result.case_id}"[:64]
        ),
        finding_type=finding_type,
        finding_sites=[hd.sr.FindingSite(site)],
        algorithm_id=algorithm_id,
        measurements=measurements,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                name=codes.SCT.Classification, value=class_code(result.label)
            )
        ],
        **region,
    )


def _key_slices(source, findings: Sequence[Finding]) -> list:
    """The source slice nearest each finding's centre, once each: the image library lists
    these key images only (every source instance is in the evidence; a library entry per
    slice of a 200-slice series costs seconds and about 1 MB)."""
    import numpy as np

    orientation = np.asarray(source[0].ImageOrientationPatient, float)
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.array(
        [np.dot(np.asarray(ds.ImagePositionPatient, float), normal) for ds in source]
    )
    picked = []
    for finding in findings:
        depth = float(np.dot(np.asarray(finding.result.region["center_mm"], float), normal))
        index = int(np.argmin(np.abs(positions - depth)))
        if index not in picked:
            picked.append(index)
    return [source[i] for i in picked]


def _algorithm_id(algorithm: Algorithm):
    import highdicom as hd

    return hd.sr.AlgorithmIdentification(
        name=algorithm.name, version=algorithm.version, parameters=algorithm.parameter_texts()
    )


def _observation_context(algorithm: Algorithm):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=hd.UID(),
        name=f"{algorithm.name} {algorithm.version}",
        manufacturer_name=algorithm.name,
        model_name=algorithm.model_name[:64],
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )


def _procedure(modality: str):
    from pydicom.sr.codedict import codes

    if modality == "ct":
        return codes.cid100.CTUnspecifiedBodyRegion
    return codes.cid100.MRIUnspecifiedBodyRegion
