"""A trained bundle on a DICOM series: every requested output written, valid and consistent."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from output_builders import IDENTITY
from pydicom.sr.codedict import codes

import tumorchar
from tumorchar.bundle.outputs.case import OutputRequest, predict_with_outputs
from tumorchar.bundle.outputs.sr import concept
from tumorchar.bundle.region import region_mask
from tumorchar.bundle.scan import ScanError, read_scan

pytestmark = pytest.mark.slow  # trains the two small bundles of tests/bundle/conftest.py


def _request(folder, heat_name="heat.nii.gz"):
    return OutputRequest(
        dicom_sr=folder / "sr.dcm",
        dicom_seg=folder / "seg.dcm",
        heatmap=folder / heat_name,
        html=folder / "case.html",
    )


def test_mtl_bundle_writes_consistent_outputs(mtl_bundle, dicom_series, tmp_path):
    folder, uids, _, _, center = dicom_series
    model = tumorchar.load_model(mtl_bundle)
    out = predict_with_outputs(model, folder, _request(tmp_path), at=center, case_id="c1")
    assert set(out.written) == {"dicom_sr", "dicom_seg", "heatmap", "html"}
    scan = read_scan(folder)
    cube = region_mask(scan, np.asarray(center), model.region_settings)
    # SEG: the analysed cube on the source grid
    seg = hd.seg.segread(out.written["dicom_seg"])
    pixels = seg.get_pixels_by_source_instance(uids["instances"], segment_numbers=[1])
    np.testing.assert_array_equal(pixels[..., 0].astype(bool), cube)
    # SR: the same numbers as the prediction, the region by reference to that SEG
    sr = hd.sr.srread(out.written["dicom_sr"])
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    assert group.reference_type == codes.DCM.ReferencedSegment
    (malignancy,) = group.get_measurements(name=concept("malignancy"))
    assert malignancy.value == pytest.approx(out.result.malignancy)
    for task, value in out.result.attributes.items():
        assert group.get_measurements(name=concept(task))[0].value == pytest.approx(value)
    # heatmap: on the scan's grid, inside the analysed region, max 1
    heat = sitk.ReadImage(str(out.written["heatmap"]))
    np.testing.assert_allclose(heat.GetOrigin(), scan.volume.origin)
    values = sitk.GetArrayFromImage(heat)
    assert values.shape == scan.shape_zyx and 0.99 < values.max() <= 1.0 + 1e-6
    assert values[~cube].max() == 0.0
    page = out.written["html"].read_text()
    assert "case c1" in page and "grad-cam" in page
    for path in out.written.values():
        data = path.read_bytes()
        assert not [k for k, v in IDENTITY.items() if v.encode() in data], path.name


def test_heatmap_as_parametric_map_and_a_given_mask(mtl_bundle, dicom_series, tmp_path):
    folder, uids, _, mask, _ = dicom_series
    model = tumorchar.load_model(mtl_bundle)
    out = predict_with_outputs(model, folder, _request(tmp_path, "heat.dcm"), mask=mask)
    pm = pydicom.dcmread(out.written["heatmap"])
    assert pm.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
    assert pm.FrameOfReferenceUID == uids["frame_of_reference"]
    seg = hd.seg.segread(out.written["dicom_seg"])
    assert seg.get_segment_description(1).algorithm_type.value == "MANUAL"
    pixels = seg.get_pixels_by_source_instance(uids["instances"], segment_numbers=[1])
    np.testing.assert_array_equal(pixels[..., 0].astype(bool), mask)
    for path in out.written.values():
        data = path.read_bytes()
        assert not [k for k, v in IDENTITY.items() if v.encode() in data], path.name


def test_unsupervised_bundle_gets_an_occlusion_map(unsupervised_bundle, dicom_series, tmp_path):
    folder, _, _, _, center = dicom_series
    model = tumorchar.load_model(unsupervised_bundle)
    request = OutputRequest(dicom_sr=tmp_path / "sr.dcm", html=tmp_path / "case.html")
    out = predict_with_outputs(model, folder, request, at=center)
    sr = hd.sr.srread(out.written["dicom_sr"])
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    assert [m.name for m in group.get_measurements()] == [codes.DCM.Probability]
    assert "occlusion" in out.written["html"].read_text()


def test_dicom_outputs_need_a_dicom_scan(mtl_bundle, dicom_series, tmp_path):
    folder, _, _, _, center = dicom_series
    nifti = tmp_path / "scan.nii.gz"
    sitk.WriteImage(read_scan(folder).volume.to_sitk(), str(nifti))
    model = tumorchar.load_model(mtl_bundle)
    with pytest.raises(ScanError, match="need a DICOM scan"):
        predict_with_outputs(model, nifti, OutputRequest(dicom_sr=tmp_path / "sr.dcm"), at=center)
    out = predict_with_outputs(
        model, nifti, OutputRequest(heatmap=tmp_path / "h.nrrd"), at=center, modality="ct"
    )
    assert out.written["heatmap"].is_file() and not (tmp_path / "sr.dcm").exists()


@pytest.fixture(scope="module")
def mri_dicom(mri_setup, tmp_path_factory):
    """A synthetic MRI case written as a DICOM MR series, with its ROI mask (z, y, x)."""
    from output_builders import write_series

    from tumorchar.data.io import read_image

    images, bundle = mri_setup
    volume = read_image(images / "SYNMRI-0008.nii.gz")
    roi = read_image(images / "SYNMRI-0008_roi.nii.gz").array > 0
    folder = tmp_path_factory.mktemp("mr") / "series"
    uids = write_series(
        folder, volume.array, modality="MR", spacing_zyx=volume.spacing, origin_xyz=volume.origin
    )
    return folder, uids, roi, bundle


@pytest.mark.parametrize("region", ["mask", "point"])
def test_mri_bundle_outputs(mri_dicom, tmp_path, region):
    folder, uids, roi, bundle = mri_dicom
    model = tumorchar.load_model(bundle)
    where = {"mask": roi}
    if region == "point":
        k = int(np.flatnonzero(roi.any(axis=(1, 2))).mean())
        j, i = np.argwhere(roi[k]).mean(axis=0)
        where = {"at": (i, j, k), "units": "voxel"}
    out = predict_with_outputs(model, folder, _request(tmp_path), **where)
    sr = hd.sr.srread(out.written["dicom_sr"])
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    assert group.finding_type == codes.SCT.Cyst
    (evaluation,) = group.get_qualitative_evaluations(name=codes.SCT.Classification)
    assert evaluation.value.meaning in ("Normal", "Intraductal papillary mucinous neoplasm")
    seg = hd.seg.segread(out.written["dicom_seg"])
    assert seg.get_segment_description(1).segmented_property_type == codes.SCT.Cyst
    pixels = seg.get_pixels_by_source_instance(uids["instances"], segment_numbers=[1])
    segment = pixels[..., 0].astype(bool)
    if region == "mask":
        np.testing.assert_array_equal(segment, roi)
    else:  # the square ROI on the point's slice that the model analysed
        assert segment.any(axis=(1, 2)).sum() == 1 and segment[k].sum() > 0
    heat = sitk.GetArrayFromImage(sitk.ReadImage(str(out.written["heatmap"])))
    assert heat.shape == roi.shape and np.isclose(heat.max(), 1.0)
    # GIST sees the ROI stack's middle slice: the occlusion map lies on one slice the ROI has
    (hot,) = np.flatnonzero(heat.any(axis=(1, 2)))
    assert segment[hot].any()
    assert "occlusion" in out.written["html"].read_text()
    for path in out.written.values():
        data = path.read_bytes()
        assert not [k for k, v in IDENTITY.items() if v.encode() in data], path.name


def test_grad_cam_explains_the_bundles_own_malignancy_score(mtl_bundle, dicom_series):
    """The differentiable head is the bundle's score: same value as its estimators give."""
    import torch

    from tumorchar.bundle.outputs.heatmap import malignancy_head

    folder, _, _, _, center = dicom_series
    model = tumorchar.load_model(mtl_bundle)
    patch = model.region(read_scan(folder), at=center)
    est = model._estimators
    features = model._extractor.features(patch)
    expected = est["mtl"].predict(est["scaler"].transform(features))[0, 0]
    extractor = model._extractor
    clip = extractor.network.clips(patch.volume[None], extractor.intensity_window)
    with torch.no_grad():
        score = float(malignancy_head(model)(clip)[0])
    assert model.tasks[0] == "malignancy"
    assert score == pytest.approx(float(expected), rel=1e-4, abs=1e-4)
