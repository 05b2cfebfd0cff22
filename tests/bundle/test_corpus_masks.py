"""Bad-input corpus, masks: a mask must lie on the scan's grid (shape, spacing, origin and
direction) and mark one region; several regions are refused with their count unless the
caller picks one (`component="largest"` or a label value)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from tumorchar.bundle.scan import (
    Scan,
    ScanError,
    mask_array,
    mask_center,
    parse_component,
    read_scan,
)
from tumorchar.data.io import Volume

SPACING_ZYX = (2.0, 0.8, 0.7)
ORIGIN_XYZ = (-40.0, -30.0, 100.0)


def scan() -> Scan:
    array = np.full((20, 40, 50), -1000.0, np.float32)
    return Scan(Volume(array, SPACING_ZYX, ORIGIN_XYZ), "ct", "m1")


def two_blobs() -> np.ndarray:
    """Label 1: a 3×4×5 block (60 voxels); label 2: a 2×2×2 block (8 voxels), far apart."""
    mask = np.zeros((20, 40, 50), np.uint8)
    mask[2:5, 3:7, 4:9] = 1
    mask[14:16, 30:32, 40:42] = 2
    return mask


def test_mask_with_another_direction_matrix_is_refused():
    s = scan()
    flipped = np.diag([-1.0, -1.0, 1.0])
    mask = Volume(two_blobs().astype(np.float32), SPACING_ZYX, ORIGIN_XYZ, flipped)
    with pytest.raises(ScanError, match="case m1: the mask is not on the scan's grid: direction"):
        mask_array(s, mask, component="largest")


def test_mask_file_with_another_direction_or_origin_is_refused(tmp_path):
    s = scan()
    for name, origin, direction in [
        ("dir.nii.gz", ORIGIN_XYZ, (0, 1, 0, 1, 0, 0, 0, 0, 1)),
        ("origin.nii.gz", (ORIGIN_XYZ[0] + 0.7, *ORIGIN_XYZ[1:]), (1, 0, 0, 0, 1, 0, 0, 0, 1)),
    ]:
        image = sitk.GetImageFromArray((two_blobs() == 1).astype(np.uint8))
        image.SetSpacing(SPACING_ZYX[::-1])
        image.SetOrigin(origin)
        image.SetDirection(direction)
        sitk.WriteImage(image, str(tmp_path / name))
        what = name.split(".")[0].replace("dir", "direction")
        with pytest.raises(ScanError, match=f"not on the scan's grid: .*{what}"):
            mask_center(s, tmp_path / name)


def test_mask_on_the_same_grid_within_tolerance_is_accepted():
    s = scan()
    nudged = np.eye(3) + 1e-6  # float32 round-off of a header
    mask = Volume((two_blobs() == 1).astype(np.float32), SPACING_ZYX, ORIGIN_XYZ, nudged)
    assert mask_array(s, mask).sum() == 60


def test_several_components_are_refused_with_their_count():
    with pytest.raises(ScanError, match="case m1: the mask has 2 separate regions .*60, 8"):
        mask_center(scan(), two_blobs())


def test_largest_component_or_a_label_value_picks_one():
    s = scan()
    mask = two_blobs()
    largest = mask_center(s, mask, component="largest")
    np.testing.assert_allclose(largest, mask_center(s, mask == 1))
    np.testing.assert_allclose(mask_center(s, mask, component=2), mask_center(s, mask == 2))
    # the union's centroid lies on neither region: this is what the refusal prevents
    union_kji = np.round(np.argwhere(mask > 0).mean(axis=0)).astype(int)
    assert mask[tuple(union_kji)] == 0
    with pytest.raises(ScanError, match="no voxel of label 3 .*labels: \\[1, 2\\]"):
        mask_center(s, mask, component=3)


def test_a_label_that_is_itself_split_is_refused():
    mask = two_blobs()
    mask[mask == 2] = 1
    with pytest.raises(ScanError, match="label 1 of the mask has 2 separate regions"):
        mask_center(scan(), mask, component=1)


def test_component_option_is_parsed():
    assert parse_component(None) is None
    assert parse_component("Largest") == "largest"
    assert parse_component(" 3 ") == 3
    with pytest.raises(ScanError, match="'largest' or a label value"):
        parse_component("biggest")


@pytest.mark.slow  # trains the session's supervised bundle
def test_prediction_uses_the_chosen_component(mtl_bundle, scan_volume, tmp_path):
    import tumorchar

    volume, center = scan_volume()
    ball = Scan(volume, "ct", "ball")
    mask = np.zeros(volume.shape, np.uint8)
    k, j, i = np.round(ball.index_of(np.array(center))[::-1]).astype(int)
    mask[k - 2 : k + 3, j - 4 : j + 5, i - 4 : i + 5] = 1
    mask[1:3, 2:4, 2:4] = 1  # a speck far away in a corner
    model = tumorchar.load_model(mtl_bundle)
    with pytest.raises(ScanError, match="2 separate regions"):
        model.predict(volume, mask=mask, case_id="ball")
    chosen = model.predict(volume, mask=mask, case_id="ball", component="largest")
    alone = model.predict(volume, mask=(mask == 1) & (np.indices(mask.shape)[0] > 3))
    assert chosen.malignancy == pytest.approx(alone.malignancy)
    np.testing.assert_allclose(chosen.region["center_mm"], alone.region["center_mm"])


def test_mask_file_read_through_read_scan_checks_apply(tmp_path):
    s = scan()
    image = sitk.GetImageFromArray((two_blobs() == 1).astype(np.float32))
    image.SetSpacing(SPACING_ZYX[::-1])
    image.SetOrigin(ORIGIN_XYZ)
    sitk.WriteImage(image, str(tmp_path / "ok.nrrd"))
    assert read_scan(tmp_path / "ok.nrrd").shape_zyx == s.shape_zyx
    assert mask_array(s, tmp_path / "ok.nrrd").sum() == 60
