import numpy as np
import pytest
from data_builders import ellipsoid

from tumorchar.data.io import Volume
from tumorchar.data.resample import (
    AIR_HU,
    crop_patch,
    linear_weights,
    mask_center_mm,
    mask_on_axes,
    patch_axes,
    resample_isotropic,
)

ANISO = (2.5, 0.7, 0.7)  # (dz, dy, dx) mm, a typical thick-slice CT


def _extent_mm(mask, spacing, axis):
    others = tuple(a for a in range(3) if a != axis)
    hit = np.flatnonzero(mask.any(axis=others))
    return (hit[-1] - hit[0] + 1) * spacing


def test_linear_weights_reproduce_a_linear_function_on_uneven_grid():
    coords_in = np.array([0.0, 1.0, 2.5, 6.0])
    coords_out = np.array([-1.0, 0.0, 0.4, 2.0, 5.9, 6.0, 7.0])
    w, inside = linear_weights(coords_in, coords_out)
    np.testing.assert_array_equal(inside, [False, True, True, True, True, True, False])
    f = 3.0 * coords_in - 2.0
    np.testing.assert_allclose((w @ f)[inside], 3.0 * coords_out[inside] - 2.0)
    np.testing.assert_allclose(w.sum(axis=1), inside.astype(float))


def test_sphere_on_anisotropic_grid_stays_a_sphere_of_the_right_radius():
    radius = 6.0
    shape = (13, 41, 41)
    sphere = ellipsoid(shape, ANISO, (radius,) * 3).astype(np.float32)
    volume = Volume(sphere, ANISO, origin=(-14.0, -14.0, -15.0))
    centre = tuple(float(c[len(c) // 2]) for c in volume.axes_mm())
    crop = crop_patch(volume, centre, size_mm=20.0, spacing_mm=0.5, fill=0.0)
    mask = crop.array >= 0.5
    assert crop.padded_voxels == 0
    # equivalent radius (3V/4π)^(1/3) and the extent along each axis: a sphere of radius 6
    equivalent = (3 * mask.sum() * 0.5**3 / (4 * np.pi)) ** (1 / 3)
    assert equivalent == pytest.approx(radius, abs=0.35)
    for axis in range(3):
        assert _extent_mm(mask, 0.5, axis) == pytest.approx(2 * radius, abs=1.3)
    np.testing.assert_allclose(mask_center_mm(mask, crop.axes_mm), centre, atol=0.3)


def test_resample_isotropic_with_simpleitk_keeps_the_sphere():
    sphere = ellipsoid((13, 41, 41), ANISO, (6.0,) * 3).astype(np.float32)
    out = resample_isotropic(Volume(sphere, ANISO), spacing_mm=0.5)
    assert out.spacing == pytest.approx((0.5, 0.5, 0.5))
    assert out.shape == (65, 57, 57)
    mask = out.array >= 0.5
    equivalent = (3 * mask.sum() * 0.5**3 / (4 * np.pi)) ** (1 / 3)
    assert equivalent == pytest.approx(6.0, abs=0.35)


def test_binary_mask_resampled_with_half_voxel_edges():
    # one slice of thickness 2.5 mm and a 7×7 in-plane square of 0.7 mm pixels
    mask = np.zeros((1, 9, 9), bool)
    mask[0, 1:8, 1:8] = True
    axes_in = (np.array([10.0]), 0.7 * np.arange(9), 0.7 * np.arange(9))
    axes_out = patch_axes((10.0, 2.8, 2.8), 8.0, 0.25)
    out = mask_on_axes(mask, axes_in, axes_out, edge_spacing_mm=ANISO)
    assert _extent_mm(out, 0.25, 0) == pytest.approx(2.5, abs=0.3)
    assert _extent_mm(out, 0.25, 1) == pytest.approx(7 * 0.7, abs=0.3)


def test_crop_near_scan_border_is_padded_with_air_and_recorded():
    array = np.zeros((10, 20, 20), np.float32)
    volume = Volume(array, (1.0, 1.0, 1.0))
    crop = crop_patch(volume, (5.0, 10.0, 1.0), size_mm=8.0, spacing_mm=1.0)
    x = crop.axes_mm[2]
    outside = x < 0
    assert outside.sum() == 3  # x = 1 + (m - 3.5), m = 0..7
    assert np.all(crop.array[:, :, outside] == AIR_HU)
    assert np.all(crop.array[:, :, ~outside] == 0.0)
    assert crop.padded_voxels == 8 * 8 * 3
    assert crop.padded_fraction == pytest.approx(3 / 8)


def test_empty_mask_has_no_centre():
    with pytest.raises(ValueError, match="empty mask"):
        mask_center_mm(np.zeros((2, 2, 2), bool), (np.arange(2),) * 3)


def test_mask_smaller_than_an_output_voxel_keeps_its_peak():
    mask = np.ones((1, 1, 1), bool)
    axes_in = (np.array([0.1]), np.array([0.1]), np.array([0.1]))
    axes_out = patch_axes((0.0, 0.0, 0.0), 4.0, 1.0)  # samples at ±0.5, ±1.5
    out = mask_on_axes(mask, axes_in, axes_out, edge_spacing_mm=(1.0, 1.0, 1.0))
    assert out.sum() == 1 and out[2, 2, 2]  # the sample nearest to (0.1, 0.1, 0.1)
