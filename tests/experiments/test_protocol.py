import numpy as np
import pytest

from tumorchar.experiments.protocol import (
    FoldFeatures,
    Protocol,
    classification_metrics,
    make_folds,
    patients_shared_between,
    regression_metrics,
    split_features,
    summarize,
)


def _cohort(n_patients=40, seed=0):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, n_patients)
    groups = np.repeat([f"P{i:03d}" for i in range(n_patients)], sizes)
    # patients tend to carry one class, as LIDC patients with several nodules do
    patient_class = rng.random(n_patients) < 0.4
    y = np.repeat(patient_class, sizes).astype(int)
    flip = rng.random(len(y)) < 0.1
    return np.where(flip, 1 - y, y), groups


def test_split_by_patient_keeps_each_patient_in_one_fold():
    y, groups = _cohort()
    folds = make_folds(y, groups, Protocol(n_splits=5, seed=1))
    assert patients_shared_between(folds, groups) == set()
    test = np.concatenate([f.test for f in folds])
    assert np.array_equal(np.sort(test), np.arange(len(y)))
    for fold in folds:
        assert set(groups[fold.train]).isdisjoint(groups[fold.test])
        assert 0 < y[fold.test].mean() < 1


def test_plain_stratified_split_mixes_patients_and_keeps_class_shares():
    y, groups = _cohort()
    folds = make_folds(y, groups, Protocol(n_splits=5, by_patient=False, seed=1))
    assert patients_shared_between(folds, groups)  # the leak the default avoids
    share = y.mean()
    for fold in folds:
        assert abs(y[fold.test].mean() - share) < 0.1


def test_folds_depend_on_the_seed_only():
    y, groups = _cohort()
    a = make_folds(y, groups, Protocol(n_splits=5, seed=3))
    b = make_folds(y, groups, Protocol(n_splits=5, seed=3))
    c = make_folds(y, groups, Protocol(n_splits=5, seed=4))
    assert all(np.array_equal(f.test, g.test) for f, g in zip(a, b, strict=True))
    assert any(not np.array_equal(f.test, g.test) for f, g in zip(a, c, strict=True))


def test_too_few_cases_or_patients_for_the_folds_is_an_error():
    with pytest.raises(ValueError, match="fewer than the 10 folds"):
        make_folds([0] * 20 + [1] * 5, None, Protocol(by_patient=False))
    with pytest.raises(ValueError, match="patients"):
        make_folds([0, 1] * 20, ["a", "b"] * 20, Protocol(n_splits=5))
    with pytest.raises(ValueError, match="patient id"):
        make_folds([0, 1] * 20, None, Protocol(n_splits=5))


def test_classification_metrics_by_hand():
    y = np.array([1, 1, 1, 0, 0])
    pred = np.array([1, 0, 1, 0, 1])
    m = classification_metrics(y, pred, score=np.array([0.9, 0.2, 0.8, 0.1, 0.7]))
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(1 / 2)
    assert m["auc"] == pytest.approx(5 / 6)


def test_regression_metrics_clip_to_the_score_range():
    true = np.array([1.0, 2.0, 4.5, 5.0])
    predicted = np.array([-3.0, 3.5, 3.0, 9.0])  # clipped to 1, 3.5, 3, 5
    m = regression_metrics(true, predicted, labels=np.array([0, 0, 1, 1]))
    assert m["accuracy"] == pytest.approx(2 / 4)
    assert m["mean_abs_diff"] == pytest.approx((0 + 1.5 + 1.5 + 0) / 4)
    assert m["auc"] == pytest.approx(3 / 4)  # one benign (3.5) above one malignant (3.0)


def test_summary_confidence_interval():
    s = summarize([0.8, 0.9, 1.0, np.nan])
    assert s.n == 3 and s.mean == pytest.approx(0.9)
    # t_{0.975, 2} = 4.3027; s = 0.1 → half width 0.1 * 4.3027 / √3
    assert s.ci_high - s.mean == pytest.approx(0.1 * 4.302653 / np.sqrt(3), rel=1e-4)


def test_fold_features_see_only_their_fold():
    y, groups = _cohort()
    folds = make_folds(y, groups, Protocol(n_splits=5))
    X = np.arange(len(y), dtype=float)[:, None]
    seen = []

    def learn_in_fold(fold):
        seen.append(fold.index)
        mean = X[fold.train].mean()  # something learned from the training fold
        return X[fold.train] - mean, X[fold.test] - mean

    train, test = split_features(FoldFeatures(learn_in_fold), folds[2])
    assert seen == [2] and train.shape == (len(folds[2].train), 1)
    train, test = split_features(X[:, 0], folds[1])
    assert np.array_equal(test[:, 0], folds[1].test)


def test_nadeau_bengio_interval_is_wider_than_the_t_interval_over_folds():
    values = [0.70, 0.74, 0.78, 0.72, 0.76, 0.75, 0.71, 0.77, 0.73, 0.74]
    s = summarize(values)
    assert s.nb_low < s.ci_low < s.mean < s.ci_high < s.nb_high
    # 10 folds: the half-width grows by sqrt(1 + k / (k - 1)) = sqrt(1 + 10/9)
    ratio = (s.nb_high - s.mean) / (s.ci_high - s.mean)
    assert ratio == pytest.approx(np.sqrt(1 + 10 / 9))


def test_out_of_range_predictions_are_counted_before_clipping():
    metrics = regression_metrics([2.0, 3.5, 4.0, 1.0], [0.2, 3.6, 7.0, 5.0])
    assert metrics["out_of_range"] == 2
    assert metrics["accuracy"] == pytest.approx(0.75)  # 0.2 -> 1 is within one of 2
