import numpy as np
import pytest
from gist_reference import create_gabor, lmgist

from tumorchar.features.gist import block_edges, gist, resize_crop, resize_matrix

RTOL = 1e-4


@pytest.fixture(scope="module")
def bank128():
    return create_gabor((8, 8, 8, 8), 128 + 64)


def assert_matches_reference(fast, reference):
    assert fast.shape == reference.shape
    np.testing.assert_allclose(fast, reference, rtol=RTOL, atol=RTOL * np.abs(reference).max())


def structured_images(size=128):
    y, x = np.mgrid[:size, :size].astype(float)
    disk = ((x - 60) ** 2 + (y - 70) ** 2 < 20**2).astype(float)
    return {
        "grating": np.cos(2 * np.pi * (x * np.cos(0.4) + y * np.sin(0.4)) / 9.0),
        "step": (x > 50).astype(float),
        "checker": ((x // 16 + y // 16) % 2).astype(float),
        "nodule": 1000 * disk - 800 + 30 * np.sin(x / 5) * np.cos(y / 7),
        "ramp": x + 2 * y,
    }


def test_random_images_match_the_float64_reference(bank128):
    images = np.random.default_rng(0).normal(size=(3, 128, 128))
    expected = np.stack([lmgist(image, g=bank128) for image in images])
    assert_matches_reference(gist(images), expected)


@pytest.mark.parametrize("name", sorted(structured_images()))
def test_structured_images_match_the_reference(name, bank128):
    image = structured_images()[name]
    assert_matches_reference(gist(image), lmgist(image, g=bank128))


@pytest.mark.parametrize("shape", [(64, 48), (200, 150), (128, 90)])
def test_resized_and_cropped_images_match_the_reference(shape, bank128):
    image = np.random.default_rng(1).random(shape) + np.linspace(0, 2, shape[1])
    assert_matches_reference(gist(image), lmgist(image, g=bank128))


def test_other_settings_match_the_reference():
    image = np.random.default_rng(2).random((70, 70))
    settings = dict(image_size=64, orientations=(6, 4, 2), n_blocks=3, fc_prefilt=3)
    bank = create_gabor(settings["orientations"], 64 + 64)
    expected = lmgist(image, g=bank, **settings)
    fast = gist(image, **settings)
    assert fast.shape == ((6 + 4 + 2) * 9,)
    assert_matches_reference(fast, expected)


def test_block_edges_follow_fix_linspace():
    assert block_edges(64, 3).tolist() == [0, 21, 42, 64]
    assert block_edges(128, 4).tolist() == [0, 32, 64, 96, 128]


def test_output_shapes_batches_and_lists_agree():
    rng = np.random.default_rng(3)
    images = rng.random((5, 128, 128))
    batch = gist(images)
    assert batch.shape == (5, 512) and batch.dtype == np.float32
    assert gist(images[2]).shape == (512,)
    np.testing.assert_allclose(gist(images[2]), batch[2], rtol=1e-6)
    mixed = gist([images[0], rng.random((100, 80))])
    assert mixed.shape == (2, 512)
    np.testing.assert_allclose(mixed[0], batch[0], rtol=1e-6)
    assert gist(np.zeros((0, 32, 32))).shape == (0, 512)


def test_gist_is_invariant_to_affine_intensity_changes():
    image = np.random.default_rng(4).random((128, 128))
    np.testing.assert_allclose(gist(3 * image - 7), gist(image), rtol=1e-4, atol=1e-6)


def test_constant_image_gives_zero_response():
    assert np.all(gist(np.full((128, 128), 42.0)) == 0)
    assert np.all(gist(np.zeros((50, 60))) == 0)


def test_grating_energy_follows_its_orientation():
    """A grating with wave vector at angle k·π/8 excites orientation channel (−k) mod 8:
    LMgist's filter j peaks at frequency angle −π(j−1)/8."""
    y, x = np.mgrid[:128, :128].astype(float)
    peaks = []
    for k in range(8):
        phi = k * np.pi / 8
        grating = np.cos(2 * np.pi * (x * np.cos(phi) + y * np.sin(phi)) / 8.0)
        energy = gist(grating).reshape(4, 8, 16).sum(axis=(0, 2))  # per orientation
        peaks.append(int(np.argmax(energy)))
        assert energy.max() > 3 * np.median(energy)
    assert peaks == [(-k) % 8 for k in range(8)]


def test_resize_crop_keeps_a_square_image_and_crops_the_centre():
    image = np.arange(128 * 128, dtype=float).reshape(1, 128, 128)
    assert np.array_equal(resize_crop(image, 128), image)
    wide = np.tile(np.arange(200, dtype=float), (128, 1))[None]
    cropped = resize_crop(wide, 128)
    assert cropped.shape == (1, 128, 128)
    assert cropped[0, 0, 0] == 36 and cropped[0, 0, -1] == 163


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="non-finite"):
        gist(np.full((3, 16, 16), np.nan))
    with pytest.raises(ValueError, match="H, W"):
        gist(np.zeros((2, 3, 16, 16)))
    with pytest.raises(ValueError, match="even image_size"):
        gist(np.zeros((16, 16)), image_size=31)
    with pytest.raises(ValueError, match="orientation"):
        gist(np.zeros((16, 16)), orientations=(8, 0))


def test_resize_follows_matlab_imresize_bilinear():
    """imresize([1 2; 3 4], [4 4], 'bilinear') and imresize(1:8, [1 4], 'bilinear')
    (antialiased when shrinking), as MATLAB computes them."""
    up = resize_matrix(2, 4) @ np.array([[1.0, 2], [3, 4]]) @ resize_matrix(2, 4).T
    np.testing.assert_allclose(
        up,
        [[1, 1.25, 1.75, 2], [1.5, 1.75, 2.25, 2.5], [2.5, 2.75, 3.25, 3.5], [3, 3.25, 3.75, 4]],
    )
    np.testing.assert_allclose(resize_matrix(8, 4) @ np.arange(1, 9.0), [1.625, 3.5, 5.5, 7.375])
