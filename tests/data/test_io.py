import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
from data_builders import write_ct_series
from pydicom.data import get_testdata_file

from tumorchar.data.io import (
    ScanReadError,
    Volume,
    find_series_folders,
    read_dicom_series,
    read_image,
)


def test_real_ct_slice_in_hounsfield_units(tmp_path):
    source = get_testdata_file("CT_small.dcm")
    shutil.copy(source, tmp_path / "slice.dcm")
    ds = pydicom.dcmread(source)
    volume = read_dicom_series(tmp_path, case_id="ct")
    assert volume.shape == (1, 128, 128)
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(volume.array[0], expected)
    assert volume.spacing[1:] == pytest.approx([float(v) for v in ds.PixelSpacing])
    assert volume.origin == pytest.approx([float(v) for v in ds.ImagePositionPatient])


def test_real_mr_slice_through_read_image(tmp_path):
    source = get_testdata_file("MR_small.dcm")
    shutil.copy(source, tmp_path / "mr.dcm")
    volume = read_image(tmp_path)
    ds = pydicom.dcmread(source)
    assert volume.shape == (1, 64, 64)
    np.testing.assert_allclose(volume.array[0], ds.pixel_array)  # no rescale tags: slope 1
    assert volume.spacing[1:] == pytest.approx([0.3125, 0.3125])


def test_series_sorted_by_position_whatever_the_file_order(tmp_path):
    hu = np.stack([np.full((8, 10), -1000.0 + 100 * k) for k in range(5)])
    write_ct_series(tmp_path, hu, (1.25, 0.7, 0.7), (-5.0, 3.0, -100.0), "1.2.3", shuffle_seed=3)
    volume = read_dicom_series(tmp_path, case_id="c1")
    np.testing.assert_allclose(volume.array, hu)
    assert volume.spacing == pytest.approx((1.25, 0.7, 0.7))
    np.testing.assert_allclose(volume.axes_mm()[0], -100.0 + 1.25 * np.arange(5))


def _series(tmp_path, z_steps):
    hu = np.zeros((len(z_steps), 6, 6)) - 500
    paths = write_ct_series(tmp_path, hu, (1.0, 0.7, 0.7), (0, 0, 0), "1.2.3", shuffle_seed=None)
    for path, z in zip(paths, z_steps, strict=True):
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [0.0, 0.0, float(z)]
        ds.save_as(path)
    return tmp_path


@pytest.mark.parametrize(
    "positions, message",
    [
        ([0, 2.5, 7.5, 10], "missing slice"),
        ([0, 2.5, 2.5, 5.0], "duplicated slice"),
        ([0, 2.5, 5.0, 6.1], "inconsistent slice spacing"),
    ],
)
def test_bad_slice_positions_are_refused(tmp_path, positions, message):
    folder = _series(tmp_path, positions)
    with pytest.raises(ScanReadError, match=f"case scan-7: .*{message}"):
        read_dicom_series(folder, case_id="scan-7")


def test_non_dicom_file_in_series_is_named(tmp_path):
    write_ct_series(tmp_path, np.zeros((3, 6, 6)), (1.0, 0.7, 0.7), (0, 0, 0), "1.2.3")
    (tmp_path / "069.xml").write_text("<LidcReadMessage/>")  # LIDC's reader XML: skipped
    assert read_dicom_series(tmp_path).shape == (3, 6, 6)
    (tmp_path / "notes.dcm").write_text("this is not DICOM")
    with pytest.raises(ScanReadError, match="case scan-1: notes.dcm is not a readable DICOM"):
        read_dicom_series(tmp_path, case_id="scan-1")


def test_truncated_dicom_file_is_refused(tmp_path):
    paths = write_ct_series(tmp_path, np.zeros((3, 16, 16)), (1.0, 0.7, 0.7), (0, 0, 0), "1.2")
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) - 300])
    with pytest.raises(ScanReadError, match="case scan-2: .*img0001.dcm"):
        read_dicom_series(tmp_path, case_id="scan-2")


def test_two_series_in_one_folder_need_a_uid(tmp_path):
    write_ct_series(tmp_path / "a", np.zeros((2, 6, 6)), (1.0, 0.7, 0.7), (0, 0, 0), "1.1")
    write_ct_series(tmp_path / "b", np.zeros((3, 6, 6)), (1.0, 0.7, 0.7), (0, 0, 0), "2.2")
    for path in (tmp_path / "b").iterdir():
        shutil.move(path, tmp_path / "a" / ("b" + path.name))
    with pytest.raises(ScanReadError, match="2 DICOM series"):
        read_dicom_series(tmp_path / "a", case_id="mixed")
    assert read_dicom_series(tmp_path / "a", series_uid="2.2").shape == (3, 6, 6)


def test_find_series_folders_in_tcia_layout(tmp_path):
    series = tmp_path / "LIDC-IDRI-0001" / "1.3.6.study" / "1.3.6.series"
    write_ct_series(series, np.zeros((2, 6, 6)), (1.0, 0.7, 0.7), (0, 0, 0), "1.3.6.99")
    (series / "000001.xml").write_text("<LidcReadMessage/>")
    assert find_series_folders(tmp_path) == {"1.3.6.99": series}


def test_nifti_written_by_nibabel(tmp_path):
    data = np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)  # nibabel order (x, y, z)
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "case.nii.gz")
    volume = read_image(tmp_path / "case.nii.gz")
    np.testing.assert_array_equal(volume.array, data.transpose(2, 1, 0))
    assert volume.spacing == pytest.approx((2.5, 0.9, 0.8))


def test_nrrd_written_by_hand(tmp_path):
    data = np.arange(2 * 3 * 4, dtype="<i2").reshape(2, 3, 4)  # (z, y, x), x fastest on disk
    header = (
        "NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\n"
        "sizes: 4 3 2\nspace directions: (0.5,0,0) (0,0.6,0) (0,0,3)\n"
        "endian: little\nencoding: raw\nspace origin: (1,2,3)\n\n"
    )
    (tmp_path / "case.nrrd").write_bytes(header.encode() + data.tobytes())
    volume = read_image(tmp_path / "case.nrrd")
    np.testing.assert_array_equal(volume.array, data)
    assert volume.spacing == pytest.approx((3.0, 0.6, 0.5))
    assert volume.origin == pytest.approx((1.0, 2.0, 3.0))


def test_unsupported_or_broken_files(tmp_path):
    (tmp_path / "x.png").write_bytes(b"png")
    with pytest.raises(ScanReadError, match="case c9: unsupported image file"):
        read_image(tmp_path / "x.png", case_id="c9")
    (tmp_path / "y.nii.gz").write_bytes(b"not gzip")
    with pytest.raises(ScanReadError, match="case c8: cannot read y.nii.gz"):
        read_image(tmp_path / "y.nii.gz", case_id="c8")
    with pytest.raises(ScanReadError, match="case c7: no image file"):
        read_image(tmp_path / "missing.nii", case_id="c7")


def test_slice_with_other_pixel_spacing_is_refused(tmp_path):
    paths = write_ct_series(tmp_path, np.zeros((3, 6, 6)), (1.0, 0.7, 0.7), (0, 0, 0), "1.2")
    ds = pydicom.dcmread(paths[2])
    ds.PixelSpacing = [0.8, 0.8]
    ds.save_as(paths[2])
    with pytest.raises(ScanReadError, match="case scan-3: slice img0002.dcm has a different pixel"):
        read_dicom_series(tmp_path, case_id="scan-3")


def test_axes_follow_the_direction_matrix():
    # rows run along −y in patient space: the row axis coordinate is ⟨origin, −e_y⟩ + j·dy
    direction = np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, 1.0]])
    volume = Volume(
        np.zeros((2, 3, 4), np.float32), (2.0, 0.5, 0.25), (10.0, 20.0, 30.0), direction
    )
    z, y, x = volume.axes_mm()
    np.testing.assert_allclose(z, [30.0, 32.0])
    np.testing.assert_allclose(y, [-20.0, -19.5, -19.0])
    np.testing.assert_allclose(x, 10.0 + 0.25 * np.arange(4))
    image = volume.to_sitk()
    assert Volume.from_sitk(image).origin == pytest.approx((10.0, 20.0, 30.0))
    np.testing.assert_allclose(Volume.from_sitk(image).direction, direction)
