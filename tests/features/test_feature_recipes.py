"""Feature recipes: one set of settings per feature, weights by content."""

import pytest
import torch
from fake_patches import FakePatchStore

from tumorchar.features import recipes
from tumorchar.features.store import FeatureStore


def test_gist_settings_are_written_once(tmp_path):
    from tumorchar.bundle import train

    params = recipes.gist_parameters()
    assert params["fc_prefilt"] == 4.0 and isinstance(params["fc_prefilt"], float)
    assert train.GIST_SETTINGS == {**params, "orientations": list(params["orientations"])}
    settings = recipes.gist_recipe(None).settings
    assert settings["fc_prefilt"] == 4.0 and settings["orientations"] == [8, 8, 8, 8]


def test_bad_gist_options_are_refused():
    with pytest.raises(ValueError):
        recipes.gist_recipe(None, n_blocks=0)


def _vgg_file(path, seed):
    from tumorchar.features.vgg import VGG16

    with torch.device("meta"):
        model = VGG16()
    model = model.to_empty(device="cpu")
    model.init_random(seed)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.mark.slow
def test_vgg_weights_enter_the_key_by_content(tmp_path):
    a = _vgg_file(tmp_path / "a.safetensors", 1)
    b = tmp_path / "b.safetensors"
    b.write_bytes(a.read_bytes())
    c = _vgg_file(tmp_path / "c.safetensors", 2)
    store = type("S", (), {"source": "lidc", "content_hash": "h"})()
    ka, kb, kc = (recipes.vgg_recipe(store, weights=p).key(store) for p in (a, b, c))
    assert ka == kb != kc
    assert recipes.vgg_recipe(store, weights=a, bf16=True).key(store) != ka


def test_the_cli_and_reproduce_get_the_same_gist_features(tmp_path):
    store = FakePatchStore(n_cases=3, shape=(4, 32, 32))
    default = recipes.gist_recipe(store, image_size=32)
    spelled = recipes.gist_recipe(
        store, image_size=32, orientations=("8", 8, 8, 8), n_blocks=4, fc_prefilt=4
    )
    assert default.key(store) == spelled.key(store)  # 4 and 4.0 are one setting
    features = FeatureStore(tmp_path / "f")
    first = default.run(features, store, progress=False)["values"]
    assert first.values.shape == (3, 512)
    assert spelled.is_cached(features, store)


def test_c3d_random_init_is_keyed_by_its_seed():
    store = FakePatchStore(n_cases=2, shape=(8, 16, 16))
    with pytest.raises(FileNotFoundError):
        recipes.c3d_recipe(store, preset="paper", weights=None, allow_random_init=False)
    one = recipes.c3d_recipe(store, allow_random_init=True, seed=1)
    two = recipes.c3d_recipe(store, allow_random_init=True, seed=2)
    assert one.extractor == "c3d-cpu-random-init" and one.weights.value == "random-init"
    assert one.key(store) != two.key(store)
    assert one.network().weights_label == "random-init"


@pytest.mark.usefixtures("empty_weights_dir")
def test_pretrained_recipes_refuse_missing_weights_and_label_random_init(tmp_path):
    store = FakePatchStore(n_cases=3, shape=(8, 24, 24), source="lidc")
    for name in ("i3d", "i3d-static", "efficientnet"):
        with pytest.raises(FileNotFoundError, match="make weights"):
            recipes.recipe(name, store)
    features = FeatureStore(tmp_path / "f")
    r = recipes.recipe("i3d", store, allow_random_init=True, seed=1)
    assert r.weights.value == "random-init" and r.extractor == "i3d-random-init"
    out = r.run(features, store, progress=False)
    assert out["mixed_5c"].values.shape == (3, 1024) and out["logits"].values.shape == (3, 400)
    assert out["endpoint"].values.shape == (3, 832 * 2 * 2 * 2)  # cpu setting: Mixed_5b output
    assert r.network() is not r.network()
    static = recipes.recipe("i3d-static", store, allow_random_init=True).run(
        features, store, progress=False
    )
    assert set(static) == {"mixed_5c", "logits", "logits_relu"}
    eff = recipes.recipe("efficientnet", store, allow_random_init=True)
    out = eff.run(features, store, progress=False)
    assert set(out) == {"pooled_linear", "pooled", "logits", "logits_relu"}
    assert recipes.recipe("efficientnet", store, allow_random_init=True, seed=2).key(
        store
    ) != eff.key(store)


def test_pretrained_recipes_key_by_converted_weights(real_weights):
    store = type("S", (), {"source": "lidc", "content_hash": "h"})()
    r = recipes.recipe("i3d", store)
    assert r.weights.value == "kinetics400"
    assert r.settings["weights_sha256"] == recipes.file_sha256(real_weights["i3d-kinetics400-rgb"])
    e = recipes.recipe("efficientnet", store)
    assert e.weights.value == "imagenet" and e.extractor == "efficientnet-lite0"
