"""Reference rows: trivial inputs evaluated with the experiments' protocol."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tumorchar.experiments.protocol import Protocol
from tumorchar.experiments.reference import (
    ATTRIBUTES,
    ReferenceData,
    evaluate_reference,
    first_order_statistics,
    hu_statistics,
    rating_recovery,
    reference_rows,
)


def test_hu_statistics_of_2d_and_3d_cases():
    image2d = np.full((8, 8), -800.0)
    image2d[2:4, 2:4] = [[10.0, 20.0], [30.0, 40.0]]
    mask2d = np.zeros((8, 8), bool)
    mask2d[2:4, 2:4] = True
    volume = np.stack([image2d, image2d + 100.0])
    mask3d = np.stack([mask2d, mask2d])
    stats = hu_statistics([image2d, volume], [mask2d, mask3d])
    np.testing.assert_allclose(stats, [[25.0, 40.0, 4.0], [75.0, 140.0, 8.0]])
    first = first_order_statistics([image2d], [mask2d])[0]
    assert first[0] == 25.0 and first[5] == 40.0 and first[6] == 4 and first[7] == 0.0
    with pytest.raises(ValueError, match="empty"):
        hu_statistics([image2d], [np.zeros_like(mask2d)])


def _data(n=240, seed=0, informative=True) -> ReferenceData:
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n // 2)
    groups = np.array([f"P{i // 2:03d}" for i in range(n)])  # two nodules per patient
    size = rng.normal(8 + 6 * labels * informative, 2.0)[:, None]
    malignancy = np.clip(2 + 2 * labels + rng.normal(0, 0.3, n), 1, 5)
    ratings = pd.DataFrame({name: rng.uniform(1, 5, n) for name in ATTRIBUTES})
    mean_hu = 100 * ratings["calcification"].to_numpy() + rng.normal(0, 1, n)
    hu = np.c_[mean_hu, rng.normal(0, 1, (n, 2))]
    return ReferenceData(
        case_ids=np.array([f"c{i}" for i in range(n)]),
        labels=labels,
        groups=groups,
        malignancy=malignancy,
        features={"size": size, "hu-stats": hu, "first-order": np.c_[hu, hu]},
        ratings=ratings,
    )


def test_an_informative_input_separates_and_noise_does_not():
    protocol = Protocol(n_splits=5, seed=0)
    data = _data()
    good = evaluate_reference(data.features["size"], data, protocol)
    assert np.mean(good["auc"]) > 0.95 and len(good["auc"]) == 5
    noise = _data(informative=False)
    bad = evaluate_reference(noise.features["size"], noise, protocol)
    assert 0.3 < np.mean(bad["auc"]) < 0.7
    rows = reference_rows(_data(), protocol, names=["size"])
    assert set(rows["metric"]) >= {"auc", "sensitivity", "specificity", "within_one"}
    assert (rows["folds"] == 5).all()


def test_rating_recovery_finds_a_rating_written_into_the_pixels():
    data = _data()
    for model in ("linear", "forest"):
        r2 = rating_recovery(data, Protocol(n_splits=5), model=model, n_trees=20)
        assert r2["calcification"] > 0.9, model
        assert r2["texture"] < 0.2, model
    with pytest.raises(ValueError, match="model"):
        rating_recovery(data, model="svm")


def test_reference_rows_are_logged_beside_the_experiments():
    from tumorchar.experiments.protocol import make_folds
    from tumorchar.experiments.reference import run_reference
    from tumorchar.experiments.results import ResultLog

    data = _data()
    folds = make_folds(data.labels, data.groups, Protocol(n_splits=4))
    log = run_reference(data, folds, ResultLog("reference", "lung", "abc"), names=["size"])
    frame = log.metrics_frame()
    assert set(frame["method"]) == {"reference: size alone (equivalent diameter)"}
    assert set(frame["fold"]) == {0, 1, 2, 3}
    predictions = log.predictions_frame()
    assert len(predictions) == len(data.labels)  # every case once, in its test fold
    assert set(predictions["case_id"]) == set(data.case_ids)


def test_e1_two_d_rows():
    from tumorchar.experiments.e1_mtl import MTL_TITLES, two_d_methods

    methods = two_d_methods("VGG16 fc7 (random-init)")
    names = [m.name for m in methods]
    assert len(set(names)) == len(names)
    assert {m.feature for m in methods} == {"gist", "deep2d", "diameter", "hu_stats", "attributes"}
    proposed = [m for m in methods if "proposed" in m.name]
    assert len(proposed) == 1 and proposed[0].recipe.uses_psi
    # a row's name says what its recipe does (ρ by inner CV, or the paper's fixed ρ)
    for method in methods:
        if method.multitask:
            assert method.name.endswith(MTL_TITLES[method.recipe.name])
    # only the GIST rows sit beside the paper's rows: its deep rows are 3D
    assert {m.paper_row for m in methods if m.paper_row} == {"GIST + LASSO", "GIST + RR"}


def test_e1_two_d_rows_are_named_after_their_network():
    """The report names a 2D deep row by the network that made its features (the slot
    "deep2d" is shared by EfficientNet-Lite0, VGG16 and I3D static clips)."""
    from tumorchar.experiments.e1_mtl import two_d_methods
    from tumorchar.experiments.report import display_name

    for title in ("EfficientNet-Lite0 pooled", "VGG16 fc7"):
        method = next(m for m in two_d_methods(title, "imagenet") if m.feature == "deep2d")
        row = {"experiment": "E1", "method": method.name, **vars(method.labels)}
        assert display_name(row).startswith(f"{title} (2D) + ")
