"""A small phantom patch store and the scans that go with it, for the bundle tests."""

from __future__ import annotations

import numpy as np
import pytest

from tumorchar.data.io import Volume

SPACING_MM = 1.0
SIZE_MM = 24.0
N_CASES = 24


def ball_scene(
    n: int, radius_mm: float, density_hu: float, spacing_mm, rng, center=None, shape=None
) -> tuple[np.ndarray, np.ndarray]:
    """Lung-like noise (-850 HU) with a ball of `density_hu`; returns (volume, mask) (z, y, x)."""
    shape = shape or (n, n, n)
    center = np.asarray(center if center is not None else [(s - 1) / 2 for s in shape], float)
    grids = np.indices(shape, dtype=float)
    spacing = np.broadcast_to(np.asarray(spacing_mm, float), (3,))
    distance = np.sqrt(
        sum(((g - c) * s) ** 2 for g, c, s in zip(grids, center, spacing, strict=True))
    )
    mask = distance <= radius_mm
    volume = -850.0 + 25.0 * rng.standard_normal(shape)
    volume[mask] = density_hu + 20.0 * rng.standard_normal(int(mask.sum()))
    return volume.astype(np.float32), mask


def case_scores(i: int) -> dict[str, float]:
    """Ratings of case i: malignancy alternates low/high; attributes follow it loosely."""
    malignant = i % 2 == 1
    malignancy = (4.0 + (i % 4) * 0.25) if malignant else (1.5 + (i % 3) * 0.25)
    return {
        "malignancy": malignancy,
        "calcification": 6.0 if malignant else 5.0,
        "lobulation": 3.0 if malignant else 1.5,
        "spiculation": 2.5 if malignant else 1.2,
        "sphericity": 3.5 if malignant else 4.5,
        "margin": 3.0 if malignant else 4.5,
        "texture": 5.0 if malignant else 3.5,
    }


def ball_for(i: int) -> tuple[float, float]:
    """(radius mm, density HU): malignant cases are larger and denser."""
    return (7.0 + 0.3 * (i % 3), 30.0) if i % 2 else (3.5 + 0.3 * (i % 3), -500.0)


@pytest.fixture(scope="session")
def phantom_store(tmp_path_factory):
    return make_phantom_store(tmp_path_factory.mktemp("stores") / "phantom")


def make_phantom_store(folder):
    from tumorchar.data.patches import CaseArrays, PatchStoreWriter

    settings = {"geometry": {"spacing_mm": SPACING_MM, "size_mm": SIZE_MM}, "seed": 0}
    writer = PatchStoreWriter(folder, "phantom", settings, is_phantom=True, note="test phantom")
    n = int(round(SIZE_MM / SPACING_MM))
    for i in range(N_CASES):
        rng = np.random.default_rng(i)
        radius, density = ball_for(i)
        volume, mask = ball_scene(n, radius, density, SPACING_MM, rng)
        scores = case_scores(i)
        row = {
            "patient_id": f"P{i // 2:03d}",
            "label": "malignant" if i % 2 else "benign",
            **scores,
            "equivalent_diameter_mm": 2 * radius,
            "spacing_mm": SPACING_MM,
            "padded_fraction": 0.0,
        }
        writer.add(f"case{i:03d}", CaseArrays(volume=volume, mask=mask, row=row))
    writer.flush(complete=True)
    return folder


@pytest.fixture(scope="session")
def scan_volume():
    return make_scan


def make_scan(radius_mm=7.3, density_hu=30.0, seed=99) -> tuple[Volume, tuple[float, ...]]:
    """A CT-like scan on anisotropic voxels with one ball; returns it and the ball's centre
    (x, y, z) in mm."""
    rng = np.random.default_rng(seed)
    spacing_zyx = (2.0, 0.8, 0.8)
    shape = (30, 80, 90)
    center_kji = (14.0, 41.0, 47.0)
    array, _ = ball_scene(0, radius_mm, density_hu, spacing_zyx, rng, center_kji, shape)
    origin = (-30.0, -20.0, 50.0)
    volume = Volume(array=array, spacing=spacing_zyx, origin=origin)
    center_xyz = tuple(
        o + c * s for o, c, s in zip(origin, center_kji[::-1], spacing_zyx[::-1], strict=True)
    )
    return volume, center_xyz


@pytest.fixture(scope="session")
def mtl_bundle(phantom_store, tmp_path_factory):
    from tumorchar.bundle.train import train_mtl

    out = tmp_path_factory.mktemp("bundles") / "mtl"
    return train_mtl(phantom_store, out, epochs=1, n_folds=2, seed=0)


@pytest.fixture(scope="session")
def unsupervised_bundle(phantom_store, tmp_path_factory):
    from tumorchar.bundle.train import train_unsupervised

    out = tmp_path_factory.mktemp("bundles") / "unsupervised"
    options = {"n_restarts": 1, "n_init": 2}
    return train_unsupervised(phantom_store, out, n_folds=2, seed=0, classifier_options=options)


@pytest.fixture(scope="session")
def mri_setup(tmp_path_factory):
    """A synthetic MRI store (8 cases, N4 + diffusion) and an unsupervised bundle on it:
    (images folder, bundle folder)."""
    from tumorchar.bundle.train import train_unsupervised
    from tumorchar.data.mri import build_mri_store
    from tumorchar.data.synthetic_mri import write_synthetic_mri

    root = tmp_path_factory.mktemp("mri")
    images = write_synthetic_mri(
        root / "images", n_cases=8, shape=(8, 96, 96), roi="mask", ipmn_fraction=0.5
    )
    build_mri_store(
        images, images / "rois.csv", images / "labels.csv", root / "store", show_progress=False
    )
    options = {"n_restarts": 1, "n_init": 2}
    bundle = train_unsupervised(
        root / "store", root / "model", n_folds=2, classifier_options=options
    )
    return images, bundle
