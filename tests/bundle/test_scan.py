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
    mask_center,
    point_to_index,
    read_scan,
)

SPACING_XYZ = (0.8, 0.8, 2.0)
ORIGIN_XYZ = (-40.0, -30.0, 100.0)


def ball_image(radius_mm=6.0, center_xyz=(0.0, 0.0, 130.0)):
    """A CT-like image: air (-1000 HU) with a solid ball (+40 HU) on anisotropic voxels."""
    size_xyz = (100, 90, 30)
    image = sitk.Image(size_xyz, sitk.sitkFloat32)
    image.SetSpacing(SPACING_XYZ)
    image.SetOrigin(ORIGIN_XYZ)
    z, y, x = np.indices(size_xyz[::-1], dtype=float)
    points = [
        np.asarray(o) + i * s for o, i, s in zip(ORIGIN_XYZ, (x, y, z), SPACING_XYZ, strict=True)
    ]
    distance = np.sqrt(sum((p - c) ** 2 for p, c in zip(points, center_xyz, strict=True)))
    array = np.where(distance <= radius_mm, 40.0, -1000.0).astype(np.float32)
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(image)
    return result


def test_patch_is_centred_isotropic_and_keeps_physical_size():
    scan = Scan(ball_image(radius_mm=6.0), "ct", "ball")
    settings = RegionSettings(spacing_mm=0.5, size_mm=32.0)
    patch = extract_patch(scan, np.array([0.0, 0.0, 130.0]), settings)
    assert patch.volume.shape == (64, 64, 64) and patch.slice2d.shape == (64, 64)
    inside = patch.volume > -480  # halfway between air and the ball
    # the ball's extent along each axis, in mm on the 0.5 mm grid, is its diameter
    for axis in range(3):
        extent = inside.any(axis=tuple(a for a in range(3) if a != axis)).sum() * 0.5
        assert abs(extent - 12.0) <= 2.0 * (2.0 if axis == 0 else 0.8)
    centroid = np.argwhere(inside).mean(axis=0)
    np.testing.assert_allclose(centroid, [31.5] * 3, atol=1.0)
    assert not patch.leaves_scan


def test_patch_leaving_the_scan_is_filled_with_air():
    scan = Scan(ball_image(), "ct", "ball")
    corner = np.array(ORIGIN_XYZ) + 1.0
    patch = extract_patch(scan, corner, RegionSettings())
    assert patch.leaves_scan
    assert patch.volume[0, 0, 0] == -1000.0


def test_points_in_mm_and_voxels_and_outside():
    scan = Scan(ball_image(), "ct", "ball")
    index = point_to_index(scan, (0.0, 0.0, 130.0), "mm")
    np.testing.assert_allclose(index, [50.0, 37.5, 15.0])
    np.testing.assert_allclose(point_to_index(scan, (50, 37.5, 15), "voxel"), index)
    with pytest.raises(ScanError, match="case ball: point .* is outside the scan"):
        point_to_index(scan, (0.0, 0.0, 500.0), "mm")
    with pytest.raises(ScanError, match="outside the scan"):
        point_to_index(scan, (100, 0, 0), "voxel")


def test_mask_centre_and_bad_masks():
    scan = Scan(ball_image(), "ct", "ball")
    mask = np.zeros((30, 90, 100), bool)
    mask[14:17, 36:40, 48:53] = True
    np.testing.assert_allclose(mask_center(scan, mask), [0.0, 0.0, 130.0])
    with pytest.raises(ScanError, match="mask is empty"):
        mask_center(scan, np.zeros_like(mask))
    with pytest.raises(ScanError, match="does not match"):
        mask_center(scan, mask[:, :, :50])


def test_nifti_and_nrrd_files_keep_their_geometry(tmp_path):
    image = ball_image()
    for name in ("case1.nii.gz", "case1.nrrd"):
        sitk.WriteImage(image, str(tmp_path / name))
        scan = read_scan(tmp_path / name)
        assert scan.case_id == "case1" and scan.modality is None
        np.testing.assert_allclose(scan.image.GetSpacing(), SPACING_XYZ, rtol=1e-6)
        np.testing.assert_allclose(scan.image.GetOrigin(), ORIGIN_XYZ, rtol=1e-6)
        assert infer_modality(scan) == "ct"


def test_real_ct_dicom_file_reads_with_hounsfield_units():
    scan = read_scan(get_testdata_file("CT_small.dcm"))
    assert scan.modality == "ct"
    assert scan.shape_zyx == (1, 128, 128)
    np.testing.assert_allclose(scan.image.GetSpacing()[:2], [0.661468, 0.661468])
    array = sitk.GetArrayViewFromImage(scan.image)
    assert array.min() < -500  # rescale intercept applied: air in the corners


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


def test_unreadable_file_names_the_case(tmp_path):
    (tmp_path / "junk.nii.gz").write_bytes(b"not an image")
    with pytest.raises(ScanError, match="case junk: cannot read"):
        read_scan(tmp_path / "junk.nii.gz")


def test_mri_like_intensities_are_recognized():
    image = sitk.GetImageFromArray(np.random.default_rng(0).uniform(0, 900, (8, 16, 16)))
    assert infer_modality(as_scan(image)) == "mri"
    assert infer_modality(as_scan(image, modality="CT")) == "ct"
