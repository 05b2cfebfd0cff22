"""VGG16 fc7/fc8 extractor: weights loading, refusal, shapes and ReLU relations."""

import numpy as np
import pytest
import torch

from tumorchar.features import vgg

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_weights_dir")


@pytest.fixture(scope="module")
def random_vgg():
    return vgg.load_vgg16(allow_random_init=True, seed=0)


@pytest.fixture(scope="module")
def random_features(random_vgg, ct_slices):
    return vgg.extract_vgg(random_vgg[0], ct_slices, batch_size=2)


@pytest.fixture(scope="module")
def ct_slices():
    rng = np.random.default_rng(3)
    slices = rng.normal(-700.0, 250.0, size=(3, 40, 52)).astype(np.float32)
    slices[:, 12:28, 18:34] += 700.0  # a solid blob on lung background (HU)
    return slices


def test_refuses_without_weights_and_says_what_to_get(empty_weights_dir):
    with pytest.raises(FileNotFoundError) as err:
        vgg.load_vgg16()
    message = str(err.value)
    assert "vgg16-397923af.pth" in message
    assert str(empty_weights_dir) in message
    assert "allow_random_init" in message


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        vgg.load_vgg16(tmp_path / "nope.pth", allow_random_init=True)


def test_shapes_and_label(random_vgg, random_features):
    model, label = random_vgg
    assert label == model.weights_label == "random-init"
    assert not model.training
    feats = random_features
    assert set(feats) == {"fc7", "fc7_relu", "fc8", "fc8_relu"}
    for key, dim in [("fc7", 4096), ("fc7_relu", 4096), ("fc8", 1000), ("fc8_relu", 1000)]:
        assert feats[key].shape == (3, dim)
        assert feats[key].dtype == np.float32
        assert np.all(np.isfinite(feats[key]))


def test_relu_features_are_max_zero_raw(random_vgg, random_features):
    model, _ = random_vgg
    feats = random_features
    for raw, rect in [("fc7", "fc7_relu"), ("fc8", "fc8_relu")]:
        assert (feats[raw] < 0).any(), "raw features should have negative entries"
        np.testing.assert_array_equal(feats[rect], np.maximum(feats[raw], 0.0))
    # fc8 is computed from the rectified fc7 (torchvision's classifier order)
    fc8 = model.classifier[6]
    expected = feats["fc7_relu"] @ fc8.weight.detach().numpy().T + fc8.bias.detach().numpy()
    np.testing.assert_allclose(feats["fc8"], expected, rtol=1e-4, atol=1e-4)


def test_preprocessing_window_and_normalization():
    ct = np.full((10, 10), -1000.0)
    x = vgg.preprocess_slices(ct)
    assert x.shape == (1, 3, 224, 224)
    expected = (0.0 - np.array(vgg.IMAGENET_MEAN)) / np.array(vgg.IMAGENET_STD)
    np.testing.assert_allclose(x[0, :, 0, 0].numpy(), expected, rtol=1e-6)
    mri = np.random.default_rng(0).uniform(0, 3000, size=(30, 20))
    u = vgg.preprocess_slices(mri, intensity_window=None)
    assert torch.isfinite(u).all()


@pytest.mark.slow  # writes and reads a full-size (528 MB) state dict
def test_weight_file_round_trip_from_default_location(
    random_vgg, random_features, ct_slices, empty_weights_dir
):
    model, _ = random_vgg
    torch.save(model.state_dict(), empty_weights_dir / vgg.VGG16_FILE)
    loaded, label = vgg.load_vgg16()  # found in the default weights folder
    assert label == loaded.weights_label == "imagenet"
    for (name, a), (name_b, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert name == name_b
        assert torch.equal(a, b)
    np.testing.assert_array_equal(
        random_features["fc7"], vgg.extract_vgg(loaded, ct_slices, batch_size=2)["fc7"]
    )


def test_parameter_names_follow_torchvision_layout():
    names = list(vgg.VGG16().state_dict())
    assert names[0] == "features.0.weight"
    assert names[-1] == "classifier.6.bias"
    assert "features.28.weight" in names and "classifier.3.weight" in names
    assert len(names) == 32


def test_bad_files_are_refused_clearly(tmp_path):
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="features.0.weight"):
        vgg.load_vgg16(wrong)
    pickled = tmp_path / "object.pth"
    torch.save({"features.0.weight": _NotATensor()}, pickled)
    with pytest.raises(ValueError, match="weights-only"):
        vgg.load_vgg16(pickled)


class _NotATensor:
    pass


def test_random_init_is_seeded(random_vgg):
    model, _ = random_vgg
    again, _ = vgg.load_vgg16(allow_random_init=True, seed=0)
    for a, b in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


def test_bf16_option_stays_close_to_float32(random_vgg, random_features, ct_slices):
    model, _ = random_vgg
    fast = vgg.extract_vgg(model, ct_slices, batch_size=3, bf16=True, progress=True)
    for key in ("fc7", "fc8"):
        rel = np.linalg.norm(fast[key] - random_features[key]) / np.linalg.norm(
            random_features[key]
        )
        assert rel < 0.05
