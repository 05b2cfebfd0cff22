"""Bad-input corpus, readers: each damaged scan is built small here and must be refused with
the project's error naming the case (and the file or tag at fault), never read as a
plausible image, never a traceback of another type, never a large allocation."""

from __future__ import annotations

import gzip
import struct

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from corpus_builders import (
    ct_array,
    dicom_series,
    edit_dicom,
    nrrd_bytes,
    truncate,
    write_nifti,
)

from tumorchar.bundle.scan import ScanError, read_scan
from tumorchar.data.io import DicomTagError, ScanReadError, read_dicom_series, read_image


def test_intact_files_of_every_format_still_read(tmp_path):
    array = ct_array()
    write_nifti(tmp_path / "a.nii", array)
    write_nifti(tmp_path / "a.nii.gz", array)
    (tmp_path / "a.nrrd").write_bytes(nrrd_bytes(array))
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.8, 2.0))
    sitk.WriteImage(image, str(tmp_path / "a.mha"), useCompression=True)
    for name in ("a.nii", "a.nii.gz", "a.nrrd", "a.mha"):
        volume = read_image(tmp_path / name)
        np.testing.assert_array_equal(volume.array, array)
        assert volume.spacing == pytest.approx((2.0, 0.8, 0.7))
    dicom_series(tmp_path / "series", array)
    np.testing.assert_allclose(read_dicom_series(tmp_path / "series").array, np.round(array))


# --- truncation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_truncated_file_is_refused_not_zero_filled(tmp_path, suffix):
    array = ct_array()
    path = tmp_path / f"cut{suffix}"
    if suffix == ".nrrd":
        path.write_bytes(nrrd_bytes(array))
    elif suffix == ".mha":
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((0.7, 0.8, 2.0))
        sitk.WriteImage(image, str(path))
    else:
        write_nifti(path, array)
    truncate(path, path.stat().st_size - 40)
    with pytest.raises(ScanReadError, match=r"case cut: cut.* (truncated|cut short)"):
        read_image(path, case_id="cut")


def test_gzip_nifti_cut_inside_its_stream_is_refused(tmp_path):
    path = write_nifti(tmp_path / "cut.nii.gz", ct_array(shape=(20, 30, 30)))
    truncate(path, path.stat().st_size // 2)
    with pytest.raises(ScanError, match="case cut: cut.nii.gz: .*damaged or cut short"):
        read_scan(path)


# --- non-finite voxels --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd"])
def test_nan_and_inf_voxels_are_refused_with_their_count(tmp_path, suffix):
    array = ct_array()
    array[0, 0, :3] = np.nan
    array[2, 3, 4] = np.inf
    path = tmp_path / f"nan{suffix}"
    if suffix == ".nrrd":
        path.write_bytes(nrrd_bytes(array))
    else:
        write_nifti(path, array)
    with pytest.raises(ScanError, match=r"case nan: .*has 4 non-finite voxel\(s\)"):
        read_scan(path)


def test_all_nan_image_is_refused(tmp_path):
    path = write_nifti(tmp_path / "void.nii.gz", np.full((4, 5, 6), np.nan, np.float32))
    with pytest.raises(ScanError, match="120 non-finite voxel"):
        read_scan(path)


def test_nan_in_a_dicom_float_image_or_an_in_memory_volume_is_refused():
    from tumorchar.bundle.scan import as_scan
    from tumorchar.data.io import Volume

    array = ct_array()
    array[1, 1, 1] = np.nan
    with pytest.raises(ScanError, match="case mem: .*1 non-finite"):
        as_scan(Volume(array, (2.0, 0.8, 0.7)), case_id="mem")


# --- spacing ------------------------------------------------------------------------------------


def test_nifti_with_zero_pixdim_and_no_qform_sform_is_refused(tmp_path):
    image = nib.Nifti1Image(ct_array().transpose(2, 1, 0), None)
    image.header["pixdim"][1:4] = 0
    image.header["qform_code"] = image.header["sform_code"] = 0
    nib.save(image, tmp_path / "flat.nii")
    with pytest.raises(ScanError, match="case flat: flat.nii has no usable voxel size"):
        read_scan(tmp_path / "flat.nii")


@pytest.mark.parametrize(
    "fields",
    ["spacings: 0 0 0", "spacings: nan nan nan", "space directions: (0,0,0) (0,1,0) (0,0,1)"],
)
def test_nrrd_with_zero_or_nan_spacing_is_refused(tmp_path, fields):
    (tmp_path / "z.nrrd").write_bytes(nrrd_bytes(ct_array(), fields=fields))
    with pytest.raises(ScanError, match="case z: z.nrrd has no usable voxel size"):
        read_scan(tmp_path / "z.nrrd")


def test_metaimage_without_element_spacing_is_refused(tmp_path):
    array = ct_array()
    header = "ObjectType = Image\nNDims = 3\nDimSize = 10 8 6\nElementType = MET_FLOAT\n"
    data = header + "ElementDataFile = LOCAL\n"
    (tmp_path / "m.mha").write_bytes(data.encode() + array.astype("<f4").tobytes())
    with pytest.raises(ScanError, match="case m: m.mha has no ElementSpacing"):
        read_scan(tmp_path / "m.mha")


@pytest.mark.parametrize("thickness", [0.0, None])
def test_single_dicom_slice_without_thickness_is_refused(tmp_path, thickness):
    (path,) = dicom_series(tmp_path / "s", ct_array(shape=(1, 8, 10)))
    edit_dicom(path, SliceThickness=thickness, SpacingBetweenSlices=thickness)
    with pytest.raises(ScanError, match="case one: img0000.dcm is a single slice without"):
        read_scan(path, case_id="one")
    with pytest.raises(ScanError, match="case one: img0000.dcm is a single slice without"):
        read_scan(tmp_path / "s", case_id="one")


def test_dicom_with_zero_pixel_spacing_is_refused(tmp_path):
    paths = dicom_series(tmp_path / "s", ct_array())
    edit_dicom(paths[2], PixelSpacing=[0.0, 0.0])
    with pytest.raises(DicomTagError, match=r"img0002.dcm: PixelSpacing \(0028,0030\) is zero"):
        read_dicom_series(tmp_path / "s", case_id="s")


# --- components ---------------------------------------------------------------------------------


def test_rgb_nifti_is_refused_not_collapsed(tmp_path):
    rgb = np.zeros((6, 5, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), tmp_path / "colour.nii")
    with pytest.raises(ScanError, match="case colour: colour.nii holds RGB voxels"):
        read_scan(tmp_path / "colour.nii")


def test_time_series_and_vector_images_are_refused(tmp_path):
    series = np.zeros((4, 5, 6, 3), np.float32)
    nib.save(nib.Nifti1Image(series, np.eye(4)), tmp_path / "t.nii.gz")
    with pytest.raises(ScanError, match="case t: t.nii.gz has 4 axes"):
        read_scan(tmp_path / "t.nii.gz")
    vector = sitk.Image([6, 5, 4], sitk.sitkVectorFloat32, 3)
    sitk.WriteImage(vector, str(tmp_path / "v.nrrd"))
    with pytest.raises(ScanError, match="case v: .*single-component"):
        read_scan(tmp_path / "v.nrrd")


def test_colour_dicom_is_refused_before_decoding(tmp_path):
    paths = dicom_series(tmp_path / "s", ct_array())
    edit_dicom(paths[1], SamplesPerPixel=3)
    with pytest.raises(ScanReadError, match="img0001.dcm has 3 samples per pixel"):
        read_dicom_series(tmp_path / "s", case_id="s")


# --- damaged DICOM images -----------------------------------------------------------------------


@pytest.mark.parametrize("which", [[0, 5], [2]])
def test_dicom_slices_cut_to_300_bytes_are_named_not_skipped(tmp_path, which):
    paths = dicom_series(tmp_path / "s", ct_array())
    for k in which:
        truncate(paths[k], 300)
    first = paths[which[0]].name
    with pytest.raises(ScanReadError, match=f"case s: {first} is a damaged DICOM image"):
        read_dicom_series(tmp_path / "s", case_id="s")


def test_dicom_slice_with_short_pixel_data_is_named(tmp_path):
    paths = dicom_series(tmp_path / "s", ct_array())
    ds = pydicom.dcmread(paths[3])
    ds.PixelData = ds.PixelData[:50]
    ds.save_as(paths[3])
    with pytest.raises(ScanReadError, match="case s: img0003.dcm is truncated"):
        read_dicom_series(tmp_path / "s", case_id="s")


def test_non_image_dicom_beside_the_series_is_still_skipped(tmp_path):
    paths = dicom_series(tmp_path / "s", ct_array())
    ds = pydicom.dcmread(paths[0])
    for keyword in (
        "PixelData",
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "PixelRepresentation",
    ):
        delattr(ds, keyword)  # fmt: skip
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.save_as(tmp_path / "s" / "report.dcm")
    assert read_dicom_series(tmp_path / "s").shape == (6, 8, 10)


# --- required attributes missing or malformed ---------------------------------------------------


@pytest.mark.parametrize(
    "keyword, value, problem",
    [
        ("Rows", None, "has no Rows"),
        ("PixelSpacing", "abc\\def", "PixelSpacing .* is malformed"),
        ("PixelSpacing", [0.7], "PixelSpacing .* is malformed"),
        ("ImagePositionPatient", None, "has no ImagePositionPatient"),
        ("ImagePositionPatient", ["1", "x", "2"], "ImagePositionPatient .* is malformed"),
        ("ImageOrientationPatient", [1, 0, 0, 1, 0, 0], "ImageOrientationPatient .* orthonormal"),
        ("RescaleSlope", "nan", "RescaleSlope .* malformed"),
    ],
)
def test_missing_or_malformed_attribute_names_file_and_tag(tmp_path, keyword, value, problem):
    paths = dicom_series(tmp_path / "s", ct_array())
    ds = pydicom.dcmread(paths[4])
    if value is None:
        delattr(ds, keyword)
    elif isinstance(value, str) or any(isinstance(v, str) for v in value):
        ds.add_new(keyword, "LO", value)  # text where numbers belong, as a broken writer does
    else:
        ds[keyword].value = value
    ds.save_as(paths[4])
    with pytest.raises(DicomTagError, match=f"case s: img0004.dcm.*{problem}") as caught:
        read_dicom_series(tmp_path / "s", case_id="s")
    assert caught.value.keyword == keyword and caught.value.file == "img0004.dcm"


def test_tag_with_an_unknown_vr_names_file_and_tag(tmp_path):
    paths = dicom_series(tmp_path / "s", ct_array())
    raw = paths[1].read_bytes()
    at = raw.index(b"\x28\x00\x30\x00DS")  # PixelSpacing, explicit VR little endian
    paths[1].write_bytes(raw[: at + 4] + b"ZZ" + raw[at + 6 :])
    with pytest.raises(DicomTagError, match=r"img0001.dcm: PixelSpacing \(0028,0030\) is unread"):
        read_dicom_series(tmp_path / "s", case_id="s")


# --- memory budget ------------------------------------------------------------------------------


def test_tiny_gzip_nifti_declaring_gigabytes_is_refused_without_allocating(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape((18176, 1, 28669))
    header.set_zooms((1.0, 1.0, 1.0))
    header["vox_offset"] = 352
    raw = header.binaryblock + b"\0" * 4 + b"\0" * 64
    (tmp_path / "huge.nii.gz").write_bytes(gzip.compress(raw))
    assert (tmp_path / "huge.nii.gz").stat().st_size < 300
    with pytest.raises(ScanReadError, match="case huge: huge.nii.gz is truncated"):
        read_image(tmp_path / "huge.nii.gz", case_id="huge")
    with pytest.raises(ScanReadError, match="over the memory budget of 0.50 GiB"):
        read_image(tmp_path / "huge.nii.gz", case_id="huge", max_bytes=2**29)


def test_budget_is_checked_on_headers_for_every_format(tmp_path, monkeypatch):
    monkeypatch.setenv("TUMORCHAR_MAX_SCAN_BYTES", "1000")
    write_nifti(tmp_path / "a.nii", ct_array())
    (tmp_path / "a.nrrd").write_bytes(nrrd_bytes(ct_array()))
    for name in ("a.nii", "a.nrrd"):
        with pytest.raises(ScanReadError, match="480 voxels .* over the memory budget"):
            read_image(tmp_path / name, case_id="a")
    dicom_series(tmp_path / "s", ct_array())
    with pytest.raises(ScanReadError, match="the DICOM series declares 480 voxels"):
        read_dicom_series(tmp_path / "s", case_id="a")


def test_dicom_declaring_65535_squared_pixels_is_refused_before_decoding(tmp_path):
    paths = dicom_series(tmp_path / "s", ct_array(shape=(1, 8, 10)))
    raw = paths[0].read_bytes()
    for tag in (b"\x28\x00\x10\x00US\x02\x00", b"\x28\x00\x11\x00US\x02\x00"):  # Rows, Columns
        at = raw.index(tag) + len(tag)
        raw = raw[:at] + struct.pack("<H", 65535) + raw[at + 2 :]
    paths[0].write_bytes(raw)
    with pytest.raises(ScanError, match="case big: img0000.dcm is truncated"):
        read_scan(paths[0], case_id="big")
