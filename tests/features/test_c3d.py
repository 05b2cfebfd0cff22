"""C3D: presets, clips, Sports-1M import, multi-task fine-tuning, checkpoints, determinism."""

import numpy as np
import pytest
import torch

from tumorchar.features import c3d

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_weights_dir")


def toy_nodules(n=24, seed=0):
    """Two separable classes of CT-like volumes (HU): small faint vs large solid blobs, and
    their 7 mean scores (class 1 above every pivot, class 0 below)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:20, :20, :20] - 9.5
    r = np.sqrt(z**2 + y**2 + x**2)
    labels = np.arange(n) % 2
    vols = rng.normal(-850.0, 40.0, size=(n, 20, 20, 20)).astype(np.float32)
    for i, lab in enumerate(labels):
        vols[i][r < (7.0 if lab else 3.0)] = 30.0 if lab else -600.0
    scores = np.where(labels[:, None] == 1, 4.5, 1.5) * np.ones((1, 7))
    scores[:, 1] = np.where(labels == 1, 5.5, 1.5)  # calcification: 1-6 scale, pivot 3.5
    return vols, scores


def test_cpu_preset_shapes_on_mixed_sizes():
    model = c3d.C3D("cpu", n_tasks=7)
    rng = np.random.default_rng(1)
    vols = [rng.normal(-500, 200, size=s).astype(np.float32) for s in [(9, 30, 30), (24, 20, 41)]]
    clips = c3d.prepare_clips(vols, "cpu")
    assert clips.shape == (2, 3, 16, 32, 32)
    assert torch.equal(clips[:, 0], clips[:, 2])  # gray copied to the 3 channels
    model.eval()
    with torch.no_grad():
        assert model(clips).shape == (2, 7)
    feats = c3d.extract_fc6(model, vols, batch_size=1)
    assert feats.shape == (2, c3d.PRESETS["cpu"].fc_dim) and feats.dtype == np.float32


@pytest.fixture(scope="module")
def paper_model():
    return c3d.C3D("paper", n_tasks=7, seed=7)


def test_paper_preset_layout_and_fc6_shape(paper_model):
    model = paper_model
    names = list(model.state_dict())
    assert names[:2] == ["conv1.weight", "conv1.bias"]
    assert {"conv3a.weight", "conv5b.bias", "fc6.weight", "fc7.bias"} <= set(names)
    assert model.fc6.weight.shape == (4096, 8192)
    n_params = sum(p.numel() for p in model.parameters())
    assert 77e6 < n_params < 80e6
    assert model.flops_per_clip() == pytest.approx(77e9, rel=0.03)
    clips = c3d.prepare_clips(np.zeros((1, 12, 40, 40), np.float32) - 800.0, "paper")
    assert clips.shape == (1, 3, 16, 112, 112)
    feats = c3d.extract_fc6(model, np.zeros((1, 12, 40, 40), np.float32), device="cpu")
    assert feats.shape == (1, 4096)


def test_sports1m_import_round_trip(tmp_path, paper_model):
    source = paper_model
    public = {k: v for k, v in source.state_dict().items() if not k.startswith("task_head")}
    public["fc8.weight"] = torch.randn(487, 4096)  # Sports-1M classes, skipped on import
    public["fc8.bias"] = torch.randn(487)
    path = tmp_path / "c3d.pickle"
    torch.save(public, path)

    target = c3d.C3D("paper", seed=1)
    head_before = target.task_head.weight.clone()
    c3d.load_sports1m(target, path)
    for name, tensor in source.state_dict().items():
        if not name.startswith("task_head"):
            assert torch.equal(target.state_dict()[name], tensor), name
    assert torch.equal(target.task_head.weight, head_before)
    assert target.weights_label == "sports1m"

    torch.save({"conv2.weight": torch.zeros(128, 64, 3, 3, 1)}, path)
    with pytest.raises(ValueError, match=r"conv2.weight: file \(128, 64, 3, 3, 1\)"):
        c3d.load_sports1m(target, path)


def test_sports1m_refusals(empty_weights_dir):
    with pytest.raises(ValueError, match="paper"):
        c3d.load_sports1m(c3d.C3D("cpu"), empty_weights_dir / "c3d.pickle")
    with pytest.raises(FileNotFoundError, match="c3d.pickle"):
        c3d.load_sports1m(c3d.C3D("paper"))


def test_fc6_relu_is_max_zero_raw():
    vols, _ = toy_nodules(6)
    model = c3d.C3D("cpu")
    raw = c3d.extract_fc6(model, vols, relu=False)
    rect = c3d.extract_fc6(model, vols)
    assert (raw < 0).any()
    np.testing.assert_array_equal(rect, np.maximum(raw, 0.0))


def test_binary_targets_use_midpoint_pivots():
    pivots = c3d.task_pivots()
    assert pivots[c3d.TASKS.index("calcification")] == 3.5
    assert pivots[c3d.TASKS.index("malignancy")] == 3.0
    scores = np.array([[3.0, 3.6, 2.0, np.nan, 4.0, 1.0, 5.0]])
    y, keep = c3d.encode_targets(scores, "binary", pivots)
    np.testing.assert_array_equal(keep.numpy(), [[False, True, True, False, True, True, True]])
    np.testing.assert_array_equal(y.numpy()[keep.numpy()], [1, 0, 1, 0, 1])


@pytest.mark.parametrize("mode", ["binary", "regression"])
def test_finetune_lowers_training_loss(mode):
    vols, scores = toy_nodules(16)
    model = c3d.C3D("cpu", seed=0)
    history = c3d.finetune(model, vols, scores, mode=mode, epochs=5, batch_size=4, seed=0)
    assert len(history["loss"]) == 5
    assert history["loss"][-1] < 0.6 * history["loss"][0]
    if mode == "binary":
        with torch.no_grad():
            logits = model(c3d.prepare_clips(vols, "cpu"))
        assert ((logits[:, 0] > 0).numpy() == (scores[:, 0] > 3)).mean() >= 0.9


def test_checkpoint_round_trip_gives_identical_features(tmp_path):
    vols, scores = toy_nodules(8)
    model = c3d.C3D("cpu", seed=2)
    c3d.finetune(model, vols, scores, epochs=1, batch_size=4, seed=2)
    path = c3d.save_checkpoint(model, tmp_path / "c3d.safetensors")
    assert not [p.name for p in tmp_path.iterdir() if "tmp" in p.name]  # no temporary left
    loaded = c3d.load_checkpoint(path)
    assert loaded.preset == model.preset and loaded.n_tasks == 7
    assert loaded.weights_label == model.weights_label == "random-init+finetuned-binary"
    np.testing.assert_array_equal(c3d.extract_fc6(model, vols), c3d.extract_fc6(loaded, vols))


def test_same_seed_same_features_and_global_rng_untouched():
    vols, scores = toy_nodules(8)
    state = torch.random.get_rng_state()
    runs = []
    for seed in (3, 3, 4):
        model = c3d.C3D("cpu", seed=seed)
        c3d.finetune(model, vols, scores, epochs=1, batch_size=4, seed=seed)
        runs.append(c3d.extract_fc6(model, vols))
    assert torch.equal(torch.random.get_rng_state(), state)
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="preset"):
        c3d.C3D("huge")
    with pytest.raises(ValueError, match="shape"):
        c3d.finetune(c3d.C3D("cpu"), np.zeros((2, 8, 8, 8)), np.zeros((3, 7)))
    with pytest.raises(ValueError, match="volume 1"):
        c3d.prepare_clips([np.zeros((8, 8, 8)), np.zeros((8, 8))], "cpu")


@pytest.mark.slow  # two paper-size training steps on CPU (~230 GFLOP each)
def test_paper_preset_finetunes_on_cpu_at_tiny_batch():
    vols, scores = toy_nodules(2)
    model = c3d.C3D("paper", seed=0)
    before = model.conv1.weight.detach().clone()
    history = c3d.finetune(model, vols, scores, epochs=1, batch_size=1, device="cpu", seed=0)
    assert np.isfinite(history["loss"][0])
    assert not torch.equal(model.conv1.weight, before)


def test_clip_resize_keeps_a_constant_volume_constant_and_centres_the_crop():
    vol = np.full((40, 64, 64), -300.0, dtype=np.float32)  # u = 0.5 in the CT window
    clips = c3d.prepare_clips(vol, "cpu")
    torch.testing.assert_close(clips, torch.zeros_like(clips), rtol=0, atol=1e-6)
    ramp = np.broadcast_to(np.linspace(-1000, 400, 64, dtype=np.float32), (20, 64, 64))
    x = c3d.prepare_clips(ramp, "cpu")[0, 0, 8, 16]  # one row along x of the cropped clip
    assert torch.all(torch.diff(x) > 0)
    assert abs(float(x.mean())) < 0.02  # the crop is centred: the ramp's midpoint is kept
