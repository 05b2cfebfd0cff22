"""DICOM SR and SEG written from a prediction, read back with pydicom and highdicom."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest
from output_builders import ALLOWED, IDENTITY, make_algorithm, make_result
from pydicom.sr.codedict import codes
from pydicom.uid import SegmentationStorage

from tumorchar.bundle.outputs.algorithm import PHANTOM_WARNING
from tumorchar.bundle.outputs.seg import Segment, write_seg
from tumorchar.bundle.outputs.source import (
    ALLOWED_ATTRIBUTES,
    read_source_series,
)
from tumorchar.bundle.outputs.sr import LIDC_CONCEPTS, Finding, concept, write_sr
from tumorchar.errors import ScanError


@pytest.fixture
def written(dicom_series, result, algorithm, tmp_path):
    folder, uids, _, mask, _ = dicom_series
    source = read_source_series(folder)
    seg = write_seg(tmp_path / "seg.dcm", source, [Segment(mask, "nodule 1", False)], algorithm)
    sr = write_sr(tmp_path / "sr.dcm", source, [Finding(result, segment_number=1)], algorithm, seg)
    return seg, sr


def test_source_stand_ins_are_sorted_and_reduced(dicom_series):
    folder, uids, *_ = dicom_series
    source = read_source_series(folder)
    assert [str(ds.SOPInstanceUID) for ds in source] == uids["instances"]
    for ds in source:
        assert str(ds.PatientName) == ""  # present (type 2) but empty
        assert all(keyword not in ds or not ds[keyword].value for keyword in IDENTITY)
        assert ds.PatientID == ALLOWED["PatientID"]


def test_seg_round_trip_geometry_and_codes(dicom_series, written):
    folder, uids, _, mask, _ = dicom_series
    seg_info, _ = written
    raw = pydicom.dcmread(seg_info.path)
    assert raw.SOPClassUID == SegmentationStorage
    assert raw.StudyInstanceUID == uids["study"]
    assert raw.FrameOfReferenceUID == uids["frame_of_reference"]
    assert raw.ReferencedSeriesSequence[0].SeriesInstanceUID == uids["series"]
    seg = hd.seg.segread(seg_info.path)
    description = seg.get_segment_description(1)
    assert description.segmented_property_category == codes.SCT.MorphologicallyAbnormalStructure
    assert description.segmented_property_type == codes.SCT.Nodule
    assert description.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
    assert description.algorithm_identification[0].AlgorithmName == "tumorchar"
    # every frame lies on the source slice it names, and the voxels are the mask's
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids["instances"], segment_numbers=[1]
    )
    np.testing.assert_array_equal(pixels[..., 0].astype(bool), mask)
    positions = {uid: 40.0 + 2.0 * k for k, uid in enumerate(uids["instances"])}
    for frame in raw.PerFrameFunctionalGroupsSequence:
        source_uid = frame.DerivationImageSequence[0].SourceImageSequence[0]
        z = float(frame.PlanePositionSequence[0].ImagePositionPatient[2])
        assert z == pytest.approx(positions[source_uid.ReferencedSOPInstanceUID])
    assert raw.NumberOfFrames == int(mask.any(axis=(1, 2)).sum())  # empty frames omitted


def test_sr_measurements_codes_and_references(dicom_series, written, result):
    _, uids, *_ = dicom_series
    seg_info, sr_info = written
    sr = hd.sr.srread(sr_info.path)
    assert sr.StudyInstanceUID == uids["study"]
    assert sr.SeriesInstanceUID != uids["series"]
    assert sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED"
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    assert group.reference_type == codes.DCM.ReferencedSegment
    segment = group.referenced_segment
    assert segment[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == seg_info.sop_instance_uid
    assert segment[0].ReferencedSOPSequence[0].ReferencedSegmentNumber == 1
    assert segment.source_series_for_segmentation.value == uids["series"]
    assert group.finding_type == codes.SCT.Nodule
    expected = {"malignancy": result.malignancy, **result.attributes}
    for task, value in expected.items():
        (measurement,) = group.get_measurements(name=concept(task))
        assert measurement.value == pytest.approx(value)
        assert measurement.unit.value == "{score}"
    codes_written = {(m.name.value, m.name.scheme_designator) for m in group.get_measurements()} - {
        ("122157", "DCM")
    }
    assert codes_written == {LIDC_CONCEPTS[t][:2] for t in expected}
    (probability,) = group.get_measurements(name=codes.DCM.Probability)
    assert probability.value == pytest.approx(result.probability)
    (evaluation,) = group.get_qualitative_evaluations(name=codes.SCT.Classification)
    assert evaluation.value == codes.SCT.Malignant
    evidence = {
        (s.SeriesInstanceUID, i.ReferencedSOPInstanceUID)
        for s in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
        for i in s.ReferencedSOPSequence
    }
    evidence |= {
        (s.SeriesInstanceUID, i.ReferencedSOPInstanceUID)
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for s in study.ReferencedSeriesSequence
        for i in s.ReferencedSOPSequence
    }
    assert {(uids["series"], uid) for uid in uids["instances"]} <= evidence
    assert (seg_info.series_instance_uid, seg_info.sop_instance_uid) in evidence
    # the image library names the key image: the source slice through the finding's centre
    (library,) = [
        i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "111028"
    ]
    images = [
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for group in library.ContentSequence
        for item in group.ContentSequence
        if item.ValueType == "IMAGE"
    ]
    assert images == [uids["instances"][8]]  # centre z = 56 mm = slice 8 (40 mm + 8 · 2 mm)


def test_sr_names_the_algorithm_and_the_phantom(written):
    _, sr_info = written
    sr = hd.sr.srread(sr_info.path)
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    texts = _texts(sr)
    assert "tumorchar" in texts and "0.1.0" in texts
    assert f"bundle_sha256={'ab12' * 16}" in texts
    assert f"warning={PHANTOM_WARNING}" in texts
    assert "PHANTOM" in sr.SeriesDescription


def test_real_data_model_has_no_phantom_warning(dicom_series, result, tmp_path):
    source = read_source_series(dicom_series[0])
    path = write_sr(tmp_path / "sr.dcm", source, [Finding(result)], make_algorithm(False)).path
    sr = pydicom.dcmread(path)
    assert "warning=" not in _texts(sr) and "PHANTOM" not in sr.SeriesDescription


def test_sr_point_region_without_seg(dicom_series, tmp_path):
    folder, uids, _, _, center = dicom_series
    source = read_source_series(folder)
    result = make_result(center, kind="unsupervised", label="benign")
    path = write_sr(tmp_path / "sr.dcm", source, [Finding(result)], make_algorithm()).path
    sr = hd.sr.srread(path)
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    point = group.roi  # the volume surface: one SCOORD3D POINT
    assert point.graphic_type == hd.sr.GraphicTypeValues3D.POINT
    np.testing.assert_allclose(point.graphic_data, [center], atol=1e-4)
    assert point.frame_of_reference_uid == uids["frame_of_reference"]
    (evaluation,) = group.get_qualitative_evaluations(name=codes.SCT.Classification)
    assert evaluation.value == codes.SCT.Benign
    names = [m.name for m in group.get_measurements()]
    assert names == [codes.DCM.Probability]  # an unsupervised model scores no attributes


def test_several_findings_one_group_each(dicom_series, algorithm, tmp_path):
    folder, _, _, mask, center = dicom_series
    source = read_source_series(folder)
    second = np.roll(mask, 8, axis=2)
    seg = write_seg(
        tmp_path / "seg.dcm",
        source,
        [Segment(mask, "nodule 1", True), Segment(second, "nodule 2", True)],
        algorithm,
    )
    findings = [Finding(make_result(center, case_id=c), n) for n, c in ((1, "a"), (2, "b"))]
    sr = hd.sr.srread(write_sr(tmp_path / "sr.dcm", source, findings, algorithm, seg).path)
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert [
        g.referenced_segment[0].ReferencedSOPSequence[0].ReferencedSegmentNumber for g in groups
    ] == [1, 2]
    read = hd.seg.segread(seg.path)
    assert read.get_segment_description(2).algorithm_type == (
        hd.seg.SegmentAlgorithmTypeValues.MANUAL  # a caller's mask: tumorchar did not draw it
    )


def test_only_allow_listed_header_values_reach_the_outputs(dicom_series, written):
    for path in (written[0].path, written[1].path):
        data = path.read_bytes()
        for keyword, value in IDENTITY.items():
            assert value.encode() not in data, f"{keyword} of the source leaked into {path.name}"
        ds = pydicom.dcmread(path)
        for keyword in ALLOWED_ATTRIBUTES:
            if keyword in ALLOWED:
                assert ds[keyword].value == ALLOWED[keyword]


def test_mask_off_the_source_grid_is_refused(dicom_series, algorithm, tmp_path):
    source = read_source_series(dicom_series[0])
    with pytest.raises(ValueError, match="does not match the source series"):
        write_seg(
            tmp_path / "s.dcm", source, [Segment(np.ones((3, 4, 5), bool), "x", True)], algorithm
        )
    assert not (tmp_path / "s.dcm").exists()


def test_folder_without_images_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ScanError, match="no DICOM image"):
        read_source_series(tmp_path)


def _texts(dataset) -> str:
    """Every text value of the SR content tree, joined."""
    found = []

    def walk(items):
        for item in items:
            if "TextValue" in item:
                found.append(str(item.TextValue))
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(dataset.ContentSequence)
    return "\n".join(found)
