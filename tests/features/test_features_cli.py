"""`tumorchar features ...` end to end on a patch store folder written by hand."""

import hashlib
import importlib
import json
import sys
import types

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import tumorchar.features
from tumorchar.cli import app
from tumorchar.features.gist import gist
from tumorchar.features.store import load_feature_folder

CASES = ["LIDC-0001_n01", "LIDC-0002_n01", "PHANTOM_n03"]


def write_patch_store(folder, n_cases=3, seed=0):
    """A store folder in the layout of docs/architecture.md (stage 2)."""
    rng = np.random.default_rng(seed)
    (folder / "arrays").mkdir(parents=True)
    rows = []
    for case_id in CASES[:n_cases]:
        volume = rng.normal(size=(6, 20, 20)).astype(np.float32)
        mask = np.zeros(volume.shape, bool)
        mask[2:4, 8:12, 8:12] = True
        np.savez(
            folder / "arrays" / f"{case_id}.npz",
            volume=volume,
            slice2d=volume[3],
            mask=mask,
            mask2d=mask[3],
        )
        rows.append(
            {
                "case_id": case_id,
                "patient_id": case_id[:9],
                "source": "phantom",
                "label": "benign",
                "content_hash": hashlib.sha256(volume.tobytes()).hexdigest(),
            }
        )
    pd.DataFrame(rows).to_parquet(folder / "index.parquet", index=False)
    store_hash = hashlib.sha256("".join(r["content_hash"] for r in rows).encode()).hexdigest()
    meta = {
        "format": 1,
        "source": "phantom",
        "is_phantom": True,
        "note": "",
        "settings": {},
        "n_cases": len(rows),
        "complete": True,
        "failures": {},
        "content_hash": store_hash,
    }
    (folder / "store.json").write_text(json.dumps(meta))
    return folder


class MinimalPatchStore:
    """Reads the contract layout; stands in until tumorchar.data.patches is merged."""

    def __init__(self, folder):
        self.folder = folder
        self.meta = json.loads((folder / "store.json").read_text())
        self.index = pd.read_parquet(folder / "index.parquet")
        self.case_ids = self.index["case_id"].tolist()
        self.content_hash = self.meta["content_hash"]
        self.source, self.is_phantom = self.meta["source"], self.meta["is_phantom"]

    def _stack(self, key, case_ids):
        ids = self.case_ids if case_ids is None else case_ids
        arrays = []
        for case_id in ids:
            with np.load(self.folder / "arrays" / f"{case_id}.npz", allow_pickle=False) as d:
                arrays.append(d[key])
        return np.stack(arrays)

    def slices(self, case_ids=None):
        return self._stack("slice2d", case_ids)

    def volumes(self, case_ids=None):
        return self._stack("volume", case_ids)


@pytest.fixture(autouse=True)
def patch_store_module(monkeypatch):
    try:
        importlib.import_module("tumorchar.data.patches")
    except ModuleNotFoundError:
        module = types.ModuleType("tumorchar.data.patches")
        module.PatchStore = MinimalPatchStore
        monkeypatch.setitem(sys.modules, "tumorchar.data.patches", module)


def only_set(out, extractor):
    (folder,) = (out / extractor).iterdir()
    return load_feature_folder(folder)


def test_gist_command_writes_and_reuses_features(tmp_path):
    patches = write_patch_store(tmp_path / "patches")
    out = tmp_path / "features"
    args = ["features", "gist", "--patches", str(patches), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    sets = only_set(out, "gist")
    fs = sets["values"]
    assert fs.case_ids == tuple(CASES) and fs.values.shape == (3, 512)
    slices = np.stack([np.load(patches / "arrays" / f"{c}.npz")["slice2d"] for c in CASES])
    np.testing.assert_allclose(fs.values, gist(slices), rtol=1e-6)
    assert fs.provenance["settings"]["orientations"] == [8, 8, 8, 8]
    assert "phantom" in result.output and "(cached)" not in result.output

    modified = (out / "gist").stat().st_mtime_ns
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and len(list((out / "gist").iterdir())) == 1
    assert (out / "gist").stat().st_mtime_ns == modified

    other = CliRunner().invoke(app, [*args, "--orientations", "4,4", "--n-blocks", "2"])
    assert other.exit_code == 0, other.output
    shapes = sorted(
        load_feature_folder(f)["values"].values.shape[1] for f in (out / "gist").iterdir()
    )
    assert shapes == [32, 512]


def test_gist_command_rejects_bad_options(tmp_path):
    patches = write_patch_store(tmp_path / "patches")
    base = ["features", "gist", "--patches", str(patches), "--out", str(tmp_path / "f")]
    assert CliRunner().invoke(app, [*base, "--orientations", "8,x"]).exit_code == 2
    missing = ["features", "gist", "--patches", str(tmp_path / "nope"), "--out", str(tmp_path)]
    result = CliRunner().invoke(app, missing)
    text = " ".join(result.output.translate({ord(c): " " for c in "│╭╮╰╯─"}).split())
    assert result.exit_code == 2 and "--patches" in text and "does not exist" in text
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(app, [*missing[:3], str(empty), *missing[4:]])
    assert result.exit_code == 2 and "cannot open the patch store" in result.output


def fake_vgg_module():
    """The contract of features/vgg.py, with a linear 'network', to test the command's wiring."""
    module = types.ModuleType("tumorchar.features.vgg")

    def load_vgg16(weights=None, allow_random_init=False, seed=0):
        import torch

        if weights is None and not allow_random_init:
            raise FileNotFoundError("no ImageNet VGG16 weights found: get vgg16-397923af.pth")
        model = torch.nn.Linear(400, 3)
        with torch.no_grad():
            model.weight.copy_(torch.from_numpy(np.random.default_rng(seed).normal(size=(3, 400))))
        return model, ("imagenet" if weights else "random-init")

    def extract_vgg(model, slices, batch_size=16, intensity_window=(-1000, 400), bf16=None):
        h = (
            np.asarray(slices, np.float32).reshape(len(slices), -1)
            @ model.weight.detach().numpy().T
        )
        return {"fc7": h, "fc7_relu": np.maximum(h, 0), "fc8": -h, "fc8_relu": np.maximum(-h, 0)}

    module.load_vgg16, module.extract_vgg = load_vgg16, extract_vgg
    module.VGG16_FILE = "vgg16-397923af.pth"
    return module


def test_vgg_command_refuses_without_weights_and_labels_random_init(tmp_path, monkeypatch):
    module = fake_vgg_module()
    monkeypatch.setitem(sys.modules, "tumorchar.features.vgg", module)
    monkeypatch.setattr(tumorchar.features, "vgg", module, raising=False)
    patches = write_patch_store(tmp_path / "patches")
    out = tmp_path / "features"
    base = ["features", "vgg", "--patches", str(patches), "--out", str(out)]
    refused = CliRunner().invoke(app, base)
    assert refused.exit_code == 2 and "vgg16-397923af.pth" in refused.output
    assert not out.exists()

    result = CliRunner().invoke(app, [*base, "--allow-random-init"])
    assert result.exit_code == 0, result.output
    assert "random-init" in result.output
    sets = only_set(out, "vgg16-random-init")
    assert set(sets) == {"fc7", "fc7_relu", "fc8", "fc8_relu"}
    assert sets["fc7"].provenance["settings"]["weights"] == "random-init"
    np.testing.assert_array_equal(sets["fc7_relu"].values, np.maximum(sets["fc7"].values, 0))

    reseeded = CliRunner().invoke(app, [*base, "--allow-random-init", "--seed", "1"])
    assert reseeded.exit_code == 0  # other weights: another key
    assert len(list((out / "vgg16-random-init").iterdir())) == 2


def fake_c3d_module():
    module = types.ModuleType("tumorchar.features.c3d")
    import torch

    class C3D(torch.nn.Module):
        def __init__(self, preset="cpu", n_tasks=7, seed=0):
            super().__init__()
            self.preset = preset
            self.fc6 = torch.nn.Linear(6 * 20 * 20, 5)

    def load_sports1m(model, path=None):
        if model.preset != "paper":
            raise ValueError("Sports-1M weights fit only the 'paper' C3D preset")
        raise FileNotFoundError("no Sports-1M C3D weights found: get c3d.pickle")

    def extract_fc6(model, volumes, intensity_window=(-1000, 400)):
        x = torch.from_numpy(np.asarray(volumes, np.float32).reshape(len(volumes), -1))
        with torch.no_grad():
            return torch.relu(model.fc6(x)).numpy()

    module.C3D, module.load_sports1m, module.extract_fc6 = C3D, load_sports1m, extract_fc6
    module.PRESETS, module.SPORTS1M_FILE = {"cpu": None, "paper": None}, "c3d.pickle"
    return module


def test_c3d_command_needs_weights_or_explicit_random_init(tmp_path, monkeypatch):
    module = fake_c3d_module()
    monkeypatch.setitem(sys.modules, "tumorchar.features.c3d", module)
    monkeypatch.setattr(tumorchar.features, "c3d", module, raising=False)
    patches = write_patch_store(tmp_path / "patches")
    out = tmp_path / "features"
    base = ["features", "c3d", "--patches", str(patches), "--out", str(out)]
    refused = CliRunner().invoke(app, [*base, "--preset", "paper"])
    assert refused.exit_code == 2 and "c3d.pickle" in refused.output
    assert CliRunner().invoke(app, [*base, "--preset", "gpu"]).exit_code == 2
    result = CliRunner().invoke(app, [*base, "--preset", "cpu", "--allow-random-init"])
    assert result.exit_code == 0, result.output
    fs = only_set(out, "c3d-cpu-random-init")["values"]
    assert fs.values.shape == (3, 5) and (fs.values >= 0).all()
    assert fs.provenance["settings"]["preset"] == "cpu"
