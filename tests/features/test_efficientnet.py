"""EfficientNet-Lite0: layer shapes, outputs and their relations, preprocessing, ImageNet
weights, determinism."""

import numpy as np
import pytest
import torch

from tumorchar.features import efficientnet as ef

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_weights_dir")


@pytest.fixture(scope="module")
def random_net():
    return ef.init_random(ef.EfficientNetLite0(), seed=0).eval()


@pytest.fixture(scope="module")
def imagenet_net(real_weights):
    return ef.load_efficientnet_lite0(weights=real_weights[ef.WEIGHTS_NAME])


def test_layer_by_layer_shapes_and_size(random_net):
    shapes = []
    hooks = [b.register_forward_hook(lambda _m, _i, o: shapes.append(tuple(o.shape[1:])))
             for b in random_net._blocks]  # fmt: skip
    with torch.no_grad():
        z = random_net.head_map(torch.zeros((1, 3, 224, 224)))
    for h in hooks:
        h.remove()
    stage_ends = [shapes[i] for i in (0, 2, 4, 7, 10, 14, 15)]
    assert stage_ends == [(16, 112, 112), (24, 56, 56), (40, 28, 28), (80, 14, 14),
                          (112, 14, 14), (192, 7, 7), (320, 7, 7)]  # fmt: skip
    assert z.shape == (1, 1280, 7, 7)
    n_params = sum(p.numel() for p in random_net.parameters())
    assert n_params == pytest.approx(4.652e6, rel=1e-3)  # EfficientNet-Lite0: 4.65 M
    assert len(random_net.state_dict()) == 296  # the package's state dict, tensor for tensor


def test_outputs_and_their_relations(random_net):
    x = torch.rand((2, 3, 96, 80)) * 2 - 1
    with torch.no_grad():
        out = random_net(x)
        z = random_net.head_map(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "pooled_linear": (2, 1280), "pooled": (2, 1280), "logits": (2, 1000),
        "logits_relu": (2, 1000)}  # fmt: skip
    torch.testing.assert_close(out["pooled_linear"], z.mean(dim=(2, 3)))
    torch.testing.assert_close(out["pooled"], z.clamp(0, 6).mean(dim=(2, 3)))
    torch.testing.assert_close(out["logits_relu"], out["logits"].clamp_min(0))
    assert set(ef.VGG_ANALOGUE) == set(ef.FEATURE_KEYS)


def test_preprocessing_window_resize_and_lite_normalization():
    sl = np.full((40, 50), -1000.0, np.float32)
    sl[:, 25:] = 400.0
    x = ef.preprocess_slices([sl, sl[:30]])
    assert x.shape == (2, 3, 224, 224)
    assert torch.equal(x[:, 0], x[:, 1])
    assert float(x.min()) == pytest.approx(-127 / 128)
    assert float(x.max()) == pytest.approx(128 / 128)
    with pytest.raises(ValueError, match="slice 1"):
        ef.preprocess_slices([sl, np.zeros((2, 2, 2))])


def test_imagenet_weights_give_confident_predictions(imagenet_net):
    """Horizontal stripes (a window blind / shade pattern): a correctly loaded ImageNet
    network gives a peaked distribution; random or mis-normalized weights stay flat."""
    yy = np.mgrid[:224, :224][0]
    stripes = np.where(yy % 40 < 20, 400.0, -1000.0).astype(np.float32)
    out = ef.extract_efficientnet(imagenet_net, stripes[None])
    p = torch.from_numpy(out["logits"]).softmax(-1)[0]
    assert p.max() > 10 / 1000
    assert -(p * p.log()).sum() < 0.95 * np.log(1000)
    assert np.all(out["pooled"] >= 0) and np.all(out["pooled"] <= 6)


def test_features_are_deterministic_and_batch_independent(imagenet_net):
    rng = np.random.default_rng(0)
    slices = rng.normal(-700, 250, (5, 64, 64)).astype(np.float32)
    a = ef.extract_efficientnet(imagenet_net, slices, batch_size=5)
    b = ef.extract_efficientnet(imagenet_net, slices, batch_size=2)
    for k in ef.FEATURE_KEYS:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert imagenet_net.weights_label == "imagenet" and len(imagenet_net.weights_sha256) == 64


def test_empty_input_and_random_init_label(empty_weights_dir):
    net = ef.load_efficientnet_lite0(allow_random_init=True, seed=2)
    assert net.weights_label == "random-init"
    out = ef.extract_efficientnet(net, np.zeros((0, 8, 8), np.float32))
    assert out["pooled"].shape == (0, 1280) and out["logits"].shape == (0, 1000)
