"""I3D model bundles: what a bundle stores of the fine-tuned network, how it is rebuilt, and
what it refuses (other trunk weights, missing weights)."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import tumorchar
from tumorchar.bundle.extractors import I3DFeatures, load_i3d_network, save_i3d_network
from tumorchar.bundle.format import BundleError
from tumorchar.bundle.outputs.heatmap import bundle_heatmap
from tumorchar.bundle.train import TrainingError, train_mtl
from tumorchar.data.patches import PatchStore
from tumorchar.features import i3d


@pytest.fixture(scope="module")
def finetuned():
    """Kinetics-400 I3D with its top block fine-tuned a little on 6 random clips."""
    model = i3d.load_i3d()
    rng = np.random.default_rng(0)
    volumes = [rng.uniform(-1000, 400, (16, 24, 24)).astype(np.float32) for _ in range(6)]
    scores = rng.uniform(1, 5, (6, 7))
    network = I3DFeatures(model, "cpu", seed=3)
    i3d.finetune_and_pool(
        model, lambda rows: network.clips([volumes[i] for i in rows], i3d.CT_WINDOW_HU),
        6, np.arange(6), scores, setting="cpu", epochs=2, seed=3,
    )  # fmt: skip
    return network, volumes


def test_bundle_network_stores_only_the_trained_block_and_rebuilds_exactly(finetuned, tmp_path):
    network, volumes = finetuned
    path = tmp_path / "network.safetensors"
    save_i3d_network(network, path)
    stored = load_file(str(path))
    blocks = {name.split(".")[1] for name in stored if name.startswith("blocks.")}
    assert blocks == {"Mixed_5c"} and "task_head.weight" in stored  # 11 MB, not 50
    rebuilt = load_i3d_network(path, tmp_path)
    original = network.model.state_dict()
    for name, tensor in rebuilt.model.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    clips = network.clips(volumes[:2], i3d.CT_WINDOW_HU)
    with torch.no_grad():
        assert torch.equal(rebuilt.trunk(clips), network.trunk(clips))


def test_bundle_network_refuses_other_trunk_weights(finetuned, tmp_path):
    network, _ = finetuned
    path = tmp_path / "network.safetensors"
    save_i3d_network(network, path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    for key, message in (("weights_file_sha256", "sha256"), ("frozen_sha256", "digest")):
        save_file(load_file(str(path)), str(tmp_path / "altered.safetensors"),
                  {**meta, key: "0" * 64})  # fmt: skip
        with pytest.raises(BundleError, match=message):
            load_i3d_network(tmp_path / "altered.safetensors", tmp_path)


def test_training_without_weights_says_how_to_get_them(phantom_store, tmp_path, monkeypatch):
    monkeypatch.setenv("TUMORCHAR_WEIGHTS_DIR", str(tmp_path / "empty"))
    with pytest.raises(TrainingError, match="weights fetch") as error:
        train_mtl(phantom_store, tmp_path / "model", n_folds=2)
    assert "--allow-random-init" in str(error.value)
    assert not (tmp_path / "model").exists()


@pytest.mark.slow  # uses the session's trained I3D bundle
def test_i3d_bundle_needs_its_trunk_weights_at_load(mtl_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("TUMORCHAR_WEIGHTS_DIR", str(tmp_path / "empty"))
    with pytest.raises(BundleError, match="needs the I3D weights.*weights fetch"):
        tumorchar.load_model(mtl_bundle)


@pytest.mark.slow
def test_i3d_bundle_features_match_training_and_heatmap_is_grad_cam(mtl_bundle, phantom_store):
    """The bundle's extractor (what `predict` runs) gives the features the model was fitted
    on: its predictions of the training cases equal the in-sample fit of the final model."""
    model = tumorchar.load_model(mtl_bundle)
    store = PatchStore(phantom_store)
    ids = ["case000", "case001", "case002"]
    features = model._extractor.features_of_volumes([store.load(c).volume for c in ids])
    assert features.shape == (3, 1024) and np.isfinite(features).all()
    repeat = model._extractor.features_of_volumes([store.load(c).volume for c in ids[:1]])
    np.testing.assert_allclose(repeat[0], features[0], rtol=1e-5, atol=1e-5)  # batch-free

    from tumorchar.bundle.region import RegionPatch

    volume = store.load("case001").volume
    axes = tuple(np.arange(n, dtype=float) for n in volume.shape)
    middle = volume[volume.shape[0] // 2]
    patch = RegionPatch(volume, middle, center_mm=(0.0, 0.0, 0.0), padded_fraction=0.0,
                        axes_mm=axes)  # fmt: skip
    heat = bundle_heatmap(model, patch)
    assert heat.method == "grad-cam" and heat.layer == "network.model.blocks.Mixed_4f"
    assert heat.values.shape == volume.shape and np.isfinite(heat.values).all()
    assert heat.values.max() == pytest.approx(1.0)


@pytest.mark.slow  # trains one more small bundle (~20 s)
def test_random_init_bundle_is_marked_and_rebuilt_from_its_seed(phantom_store, tmp_path,
                                                                monkeypatch):  # fmt: skip
    monkeypatch.setenv("TUMORCHAR_WEIGHTS_DIR", str(tmp_path / "empty"))
    path = train_mtl(phantom_store, tmp_path / "model", n_folds=2, epochs=1, seed=5,
                     allow_random_init=True)  # fmt: skip
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["settings"]["network"]["weights"] == "random-init"
    assert manifest["settings"]["network"]["seed"] == 5
    assert "not pretrained" in manifest["pipeline"]["features"]["label"]
    model = tumorchar.load_model(path)  # rebuilt from the seed, checked by digest
    volume = PatchStore(phantom_store).load("case000").volume
    assert np.isfinite(model._extractor.features_of_volumes([volume])).all()
