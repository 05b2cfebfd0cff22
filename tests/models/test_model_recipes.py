"""Model recipes: E1's proposed row and `tumorchar train mtl` fit one and the same model."""

import numpy as np

from tumorchar.bundle import train
from tumorchar.experiments.e1_mtl import default_methods
from tumorchar.models.inconsistency import radiologist_inconsistency
from tumorchar.models.recipes import MTL_WITHOUT_PSI, PROPOSED_MTL, RECIPES, psi_or_none


def _data(n=40, d=12, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    W = rng.normal(size=(d, 7)) * (rng.random((d, 7)) < 0.4)
    Y = np.clip(3 + X @ W * 0.3 + rng.normal(scale=0.2, size=(n, 7)), 1, 5)
    readers = np.clip(np.round(Y[:, :, None] + rng.normal(scale=0.7, size=(n, 7, 4))), 1, 5)
    return X, Y, radiologist_inconsistency(readers)


def test_train_ships_exactly_e1s_proposed_recipe():
    X, Y, psi = _data()
    (proposed,) = [m for m in default_methods() if m.paper_row == "Proposed"]
    assert proposed.recipe is PROPOSED_MTL
    evaluated = proposed.recipe.fit(X, Y, psi=psi)  # as run_e1 fits a training fold
    shipped = train.fit_final_mtl(
        PROPOSED_MTL.with_params(rho1=train.MTL_DEFAULTS["rho1"], rho2=train.MTL_DEFAULTS["rho2"]),
        X,
        Y,
        psi,
    )
    np.testing.assert_array_equal(evaluated[-1].coef_, shipped[-1].coef_)
    np.testing.assert_array_equal(evaluated[-1].intercept_, shipped[-1].intercept_)
    np.testing.assert_array_equal(evaluated[0].mean_, shipped[0].mean_)


def test_psi_changes_the_proposed_fit_and_is_ignored_without_it():
    X, Y, psi = _data()
    with_psi = PROPOSED_MTL.fit(X, Y, psi=psi)[-1].coef_
    without = PROPOSED_MTL.fit(X, Y, psi=None)[-1].coef_
    assert not np.allclose(with_psi, without)
    np.testing.assert_array_equal(MTL_WITHOUT_PSI.fit(X, Y, psi=psi)[-1].coef_, without)


def test_unknown_psi_falls_back_to_none_and_recipes_are_named():
    assert psi_or_none(np.array([[1.0, np.nan]])) is None
    assert psi_or_none(None) is None
    assert {"graph-sparse-mtl", "trace-norm-mtl", "lasso", "ridge", "unsupervised-psvm"} <= set(
        RECIPES
    )
    assert PROPOSED_MTL.describe()["params"] == {"rho1": 1.0, "rho2": 10.0}
