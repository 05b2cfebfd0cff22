"""Bad-input corpus, bundles: a bundle whose manifest or files were changed and re-signed
(digests recomputed, so the integrity check passes) is refused at load with a BundleError
naming the field or the file, never a KeyError / TypeError, and never half-used."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import tumorchar
from tumorchar.bundle.format import BundleError, canonical_json, manifest_digest, sha256_file

_MISSING = object()
SLOW = pytest.mark.slow  # these train the session's two small bundles (~30 s of CPU)


def resign(folder, edit=None, files=None):
    """Apply `edit(manifest)`, replace data files (name → bytes), recompute every digest."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for name, data in (files or {}).items():
        (folder / name).write_bytes(data)
        manifest["files"][name] = {"bytes": len(data), "sha256": sha256_file(folder / name)}
    if edit is not None:
        edit(manifest)
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (folder / "manifest.json").write_text(canonical_json(manifest) + "\n")
    return folder


def setter(path: str, value):
    def edit(manifest):
        *parents, last = path.split("/")
        target = manifest
        for key in parents:
            target = target[key]
        if value is _MISSING:
            del target[last]
        else:
            target[last] = value

    return edit


@SLOW
@pytest.mark.parametrize(
    "path, value, field",
    [
        ("kind", _MISSING, "kind"),
        ("kind", "svm", "kind"),
        ("modality", 7, "modality"),
        ("package_version", None, "package_version"),
        ("tasks", "malignancy", "tasks"),
        ("tasks", ["spiculation", "malignancy"], "tasks"),
        ("score_range/malignancy", [5, 1], "score_range.malignancy"),
        ("score_range/spiculation", "1-5", "score_range.spiculation"),
        ("score_range/texture", _MISSING, "score_range.texture"),
        ("classes", ["benign"], "classes"),
        ("training_data", _MISSING, "training_data"),
        ("training_data/n_cases", "many", "training_data.n_cases"),
        ("training_data/is_phantom", "no", "training_data.is_phantom"),
        ("pipeline/region/size_mm", -32, "pipeline.region.size_mm"),
        ("pipeline/region/spacing_mm", "0.5", "pipeline.region.spacing_mm"),
        ("pipeline/region/shape", 64, "pipeline.region.shape"),
        ("pipeline/region/kind", "mri-roi", "pipeline.region.kind"),
        ("pipeline/features", [], "pipeline.features"),
        ("pipeline/features/extractor", "vgg", "pipeline.features.extractor"),
        ("pipeline/features/settings/intensity_window", [400, -1000],
         "pipeline.features.settings.intensity_window"),
        ("files/arrays.npz", "abc", "files.arrays.npz"),
        ("files/arrays.npz/bytes", "12", "files.arrays.npz.bytes"),
        ("files", [], "files"),
    ],
)  # fmt: skip
def test_malformed_manifest_field_is_named(mtl_bundle, tmp_path, path, value, field):
    folder = resign(shutil.copytree(mtl_bundle, tmp_path / "b"), setter(path, value))
    with pytest.raises(BundleError, match=f"manifest field '{field}'"):
        tumorchar.load_model(folder)


@SLOW
def test_malformed_unsupervised_fields_are_named(unsupervised_bundle, tmp_path):
    cases = [
        ("pipeline/features/settings/orientations", "8", "orientations"),
        ("pipeline/features/settings/cells", 4, "cells"),
        ("pipeline/features/settings/n_blocks", 0, "n_blocks"),
    ]
    for i, (path, value, key) in enumerate(cases):
        folder = resign(
            shutil.copytree(unsupervised_bundle, tmp_path / f"u{i}"), setter(path, value)
        )
        with pytest.raises(BundleError, match=f"'pipeline.features.settings.{key}'"):
            tumorchar.load_model(folder)


@SLOW
@pytest.mark.parametrize(
    "name, data, message",
    [
        ("estimators.json", b"{not json", "estimators.json is not valid JSON"),
        ("estimators.json", b"[1, 2]", "estimators.json is not a JSON object"),
        ("estimators.json", b'{"scaler": {"__estimator__": "os:system", "attributes": {}}}',
         "refusing to load class 'os:system'"),
        ("estimators.json", b'{"scaler": {"__scalar__": "not-a-dtype", "value": 1}}',
         "estimators.json has a malformed entry"),
        ("arrays.npz", b"PK\x03\x04 not a zip", "arrays.npz is not a readable array archive"),
        ("network.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
         "network.safetensors: the stored network cannot be rebuilt"),
    ],
)  # fmt: skip
def test_malformed_file_is_named(mtl_bundle, tmp_path, name, data, message):
    folder = resign(shutil.copytree(mtl_bundle, tmp_path / "b"), files={name: data})
    with pytest.raises(BundleError, match=message):
        tumorchar.load_model(folder)


@SLOW
def test_estimators_missing_a_fitted_part_are_refused(mtl_bundle, tmp_path):
    folder = shutil.copytree(mtl_bundle, tmp_path / "b")
    tree = json.loads((folder / "estimators.json").read_text())
    del tree["calibration"]
    resign(folder, files={"estimators.json": json.dumps(tree).encode()})
    with pytest.raises(BundleError, match="lacks the fitted 'calibration'"):
        tumorchar.load_model(folder)


@SLOW
def test_arrays_that_do_not_fit_together_fail_at_load(mtl_bundle, tmp_path):
    folder = shutil.copytree(mtl_bundle, tmp_path / "b")
    with np.load(folder / "arrays.npz") as data:
        arrays = {name: data[name] for name in data.files}
    arrays["mtl.coef_"] = arrays["mtl.coef_"][:-3]  # a coefficient matrix three rows short
    np.savez(tmp_path / "arrays.npz", **arrays)
    resign(folder, files={"arrays.npz": (tmp_path / "arrays.npz").read_bytes()})
    with pytest.raises(BundleError, match="the stored model cannot predict"):
        tumorchar.load_model(folder)


def test_readme_says_what_the_digest_protects_against():
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert "accidental damage" in readme and "not deliberate tampering" in readme
