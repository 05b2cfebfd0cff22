import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from tumorchar.bundle.region import RegionSettings, extract_patch
from tumorchar.bundle.scan import (
    Scan,
    ScanError,
    as_scan,
    infer_modality,
    locate_point,
    mask_center,
    read_scan,
)
from tumorchar.data.io import Volume

SPACING_ZYX = (2.0, 0.8, 0.8)
ORIGIN_XYZ = (-40.0, -30.0, 100.0)
BALL_XYZ = (0.0, 0.0, 130.0)


def ball_scan(radius_mm=6.0) -> Scan:
    """Air (-1000 HU) with a +40 HU ball centred on BALL_XYZ, on anisotropic voxels."""
    shape = (30, 90, 100)
    z, y, x = np.indices(shape, dtype=float)
    coords = [o + i * s for o, i, s in zip(ORIGIN_XYZ, (x, y, z), SPACING_ZYX[::-1], strict=True)]
    distance = np.sqrt(sum((c - b) ** 2 for c, b in zip(coords, BALL_XYZ, strict=True)))
    array = np.where(distance <= radius_mm, 40.0, -1000.0).astype(np.float32)
    return Scan(Volume(array=array, spacing=SPACING_ZYX, origin=ORIGIN_XYZ), "ct", "ball")


def test_patch_is_centred_isotropic_and_keeps_physical_size():
    patch = extract_patch(ball_scan(), np.array(BALL_XYZ), RegionSettings(0.5, 32.0))
    assert patch.volume.shape == (64, 64, 64) and patch.slice2d.shape == (64, 64)
    np.testing.assert_array_equal(patch.slice2d, patch.volume[32])
    inside = patch.volume > -480  # halfway between air and the ball
    for axis, source_spacing in enumerate(SPACING_ZYX):  # diameter 12 mm along every axis
        extent = inside.any(axis=tuple(a for a in range(3) if a != axis)).sum() * 0.5
        assert abs(extent - 12.0) <= source_spacing
    np.testing.assert_allclose(np.argwhere(inside).mean(axis=0), [31.5] * 3, atol=0.6)
    assert patch.padded_fraction == 0.0


def test_patch_leaving_the_scan_is_filled_with_air():
    corner = np.array(ORIGIN_XYZ) + 1.0
    patch = extract_patch(ball_scan(), corner, RegionSettings())
    assert 0.5 < patch.padded_fraction < 1.0
    assert patch.volume[0, 0, 0] == -1000.0


def test_single_slice_scan_is_a_slab_of_its_thickness():
    scan = ball_scan()
    one = Volume(
        array=scan.volume.array[15:16],
        spacing=SPACING_ZYX,
        origin=(ORIGIN_XYZ[0], ORIGIN_XYZ[1], 130.0),
    )
    patch = extract_patch(Scan(one, "ct", "slab"), np.array(BALL_XYZ), RegionSettings(0.5, 32.0))
    filled = np.flatnonzero((patch.volume > -1000).any(axis=(1, 2)))
    assert len(filled) == 4  # the 2 mm slab holds 4 samples at 0.5 mm
    np.testing.assert_array_equal(patch.slice2d, patch.volume[32])
    assert patch.slice2d.max() == 40.0


def test_points_in_mm_and_voxels_and_outside():
    scan = ball_scan()
    np.testing.assert_allclose(scan.index_of(np.array(BALL_XYZ)), [50.0, 37.5, 15.0])
    np.testing.assert_allclose(locate_point(scan, (50, 37.5, 15), "voxel"), BALL_XYZ)
    np.testing.assert_allclose(locate_point(scan, BALL_XYZ, "mm"), BALL_XYZ)
    with pytest.raises(ScanError, match="case ball: point .* is outside the scan"):
        locate_point(scan, (0.0, 0.0, 500.0), "mm")
    with pytest.raises(ScanError, match="outside the scan"):
        locate_point(scan, (100, 0, 0), "voxel")
    with pytest.raises(ScanError, match="three finite"):
        locate_point(scan, (1.0, np.nan, 2.0), "mm")


def test_rotated_scan_maps_points_through_its_direction():
    scan = ball_scan()
    flip = np.diag([-1.0, -1.0, 1.0])  # LPS → RAS-like in-plane flip
    rotated = Scan(Volume(scan.volume.array, SPACING_ZYX, ORIGIN_XYZ, flip), "ct", "r")
    index = np.array([10.0, 20.0, 3.0])
    np.testing.assert_allclose(rotated.index_of(rotated.point_of(index)), index)
    np.testing.assert_allclose(rotated.point_of(index), [-40 - 8.0, -30 - 16.0, 106.0])


def test_mask_centre_and_bad_masks():
    scan = ball_scan()
    mask = np.zeros(scan.shape_zyx, bool)
    mask[14:17, 36:40, 48:53] = True
    np.testing.assert_allclose(mask_center(scan, mask), BALL_XYZ)
    with pytest.raises(ScanError, match="mask is empty"):
        mask_center(scan, np.zeros_like(mask))
    with pytest.raises(ScanError, match="does not match"):
        mask_center(scan, mask[:, :, :50])


def test_nifti_and_nrrd_files_keep_their_geometry(tmp_path):
    volume = ball_scan().volume
    for name in ("case1.nii.gz", "case1.nrrd"):
        sitk.WriteImage(volume.to_sitk(), str(tmp_path / name))
        scan = read_scan(tmp_path / name)
        assert scan.case_id == "case1" and scan.modality is None
        np.testing.assert_allclose(scan.volume.spacing, SPACING_ZYX, rtol=1e-6)
        np.testing.assert_allclose(scan.volume.origin, ORIGIN_XYZ, rtol=1e-6)
        np.testing.assert_array_equal(scan.volume.array, volume.array)
        assert infer_modality(scan) == "ct"


def test_real_ct_dicom_file_reads_in_hounsfield_units(tmp_path):
    scan = read_scan(get_testdata_file("CT_small.dcm"))
    assert (scan.modality, scan.case_id, scan.shape_zyx) == ("ct", "CT_small", (1, 128, 128))
    np.testing.assert_allclose(scan.volume.spacing, [5.0, 0.661468, 0.661468])
    assert scan.volume.array.min() < -500  # rescale intercept applied: air around the body
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "1.dcm").write_bytes(open(get_testdata_file("CT_small.dcm"), "rb").read())
    series = read_scan(folder)
    assert series.modality == "ct" and series.case_id == "series"
    np.testing.assert_array_equal(series.volume.array, scan.volume.array)


def test_scans_without_spacing_are_refused(tmp_path):
    header = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del header.PixelSpacing
    header.save_as(tmp_path / "nospacing.dcm")
    with pytest.raises(ScanError, match="case nospacing: .*no PixelSpacing"):
        read_scan(tmp_path / "nospacing.dcm")
    raw = np.zeros((4, 5, 6), np.int16)
    nrrd_header = b"NRRD0004\ntype: short\ndimension: 3\nsizes: 6 5 4\nendian: little\n"
    (tmp_path / "plain.nrrd").write_bytes(nrrd_header + b"encoding: raw\n\n" + raw.tobytes())
    with pytest.raises(ScanError, match="case plain: .*neither 'space directions'"):
        read_scan(tmp_path / "plain.nrrd")
    with pytest.raises(ScanError, match="no spacing information"):
        as_scan(np.zeros((4, 5, 6)))


def test_unreadable_files_name_the_case(tmp_path):
    (tmp_path / "junk.nii.gz").write_bytes(b"not an image")
    with pytest.raises(ScanError, match="case junk: cannot read"):
        read_scan(tmp_path / "junk.nii.gz")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ScanError, match="case notes.txt: .*neither a DICOM"):
        read_scan(tmp_path / "notes.txt")


def test_mri_like_intensities_are_recognized():
    image = sitk.GetImageFromArray(np.random.default_rng(0).uniform(0, 900, (8, 16, 16)))
    assert infer_modality(as_scan(image)) == "mri"
    assert infer_modality(as_scan(image, modality="CT")) == "ct"
    with pytest.raises(ScanError, match="unknown modality"):
        as_scan(image, modality="PET")
