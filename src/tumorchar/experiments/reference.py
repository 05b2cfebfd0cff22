"""Reference rows: what trivial inputs achieve on a patch store, beside every method.

A method is only worth reporting when it beats what needs no learning from pixels:

- `size`: the nodule's equivalent diameter (the cohort's consensus mask, 3D);
- `size-2d` (2D stores with an outline): the circle-equivalent diameter of the outline,
  d = 2·√(A/π);
- `hu-stats`: first-order statistics of the intensities inside the mask: mean, maximum,
  and the mask's voxel (pixel) count; these are what a phantom that writes ratings into
  intensities leaks, and on real CT they measure how much density alone tells;
- `first-order`: a fuller set of first-order statistics inside the mask (mean, standard
  deviation, 10th / 50th / 90th percentiles, maximum, count, share of values above 200 HU and
  below −400 HU);
- `attributes`: the radiologists' six mean attribute ratings (calcification, lobulation,
  spiculation, sphericity, margin, texture), an upper reference that reads the annotations.

`reference_rows` evaluates each with the experiments' protocol (stratified folds grouped by
patient): benign/malignant AUC, sensitivity and specificity of a standardized logistic
regression, and, as E1 does, accuracy within ±1 and mean absolute difference of a linear
regression of the mean malignancy score; `rating_recovery` gives the cross-validated R² of
each attribute rating regressed on the HU statistics (linear) or on the first-order
statistics (random forest), the phantom-leak figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tumorchar.experiments.protocol import (
    Protocol,
    classification_metrics,
    make_folds,
    regression_metrics,
    summarize,
)
from tumorchar.vocab import LUNG_LABELS

ATTRIBUTES = ("calcification", "lobulation", "spiculation", "sphericity", "margin", "texture")
HU_STAT_NAMES = ("mean_hu", "max_hu", "mask_count")
FIRST_ORDER_NAMES = ("mean", "std", "p10", "p50", "p90", "max", "count", "above_200", "below_-400")


def hu_statistics(images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> np.ndarray:
    """(N, 3): mean and maximum intensity inside each mask, and the mask's element count.

    Works for 2D slices and 3D volumes alike (any shape, one array per case)."""
    rows = []
    for image, mask in zip(images, masks, strict=True):
        values = np.asarray(image, dtype=np.float64)[np.asarray(mask, bool)]
        if values.size == 0:
            raise ValueError("empty mask")
        rows.append((values.mean(), values.max(), values.size))
    return np.asarray(rows, dtype=np.float64)


def first_order_statistics(images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> np.ndarray:
    """(N, 9): the `FIRST_ORDER_NAMES` statistics of the intensities inside each mask."""
    rows = []
    for image, mask in zip(images, masks, strict=True):
        v = np.asarray(image, dtype=np.float64)[np.asarray(mask, bool)]
        if v.size == 0:
            raise ValueError("empty mask")
        p10, p50, p90 = np.percentile(v, (10, 50, 90))
        rows.append(
            (v.mean(), v.std(), p10, p50, p90, v.max(), v.size, (v > 200).mean(), (v < -400).mean())
        )
    return np.asarray(rows, dtype=np.float64)


@dataclass(frozen=True)
class ReferenceData:
    """Benign/malignant cases of a store with the inputs of the reference rows."""

    case_ids: np.ndarray
    labels: np.ndarray  # 0 benign, 1 malignant
    groups: np.ndarray  # patient ids
    malignancy: np.ndarray  # mean malignancy score
    features: dict[str, np.ndarray]  # reference name → (N, d)
    ratings: pd.DataFrame  # the six attributes' mean ratings


def reference_data(
    store, use_volumes: bool | None = None, case_ids: Sequence[str] | None = None
) -> ReferenceData:
    """The reference inputs of a patch store's benign and malignant cases.

    HU statistics are taken on the volumes and 3D masks of a 3D store (or, with
    `use_volumes=False`, on its central slices), on the images and 2D masks of a 2D store;
    `case_ids` gives the cases and their order (e.g. an experiment's cases, or the nodules
    another store has). Cases are read one at a time."""
    index = store.index[store.index["label"].isin(list(LUNG_LABELS))]
    if case_ids is not None:
        index = index.set_index("case_id", drop=False).loc[list(case_ids)]
    index = index.reset_index(drop=True)
    ids = index["case_id"].tolist()
    volumes = store.has_volumes if use_volumes is None else use_volumes
    hu, first = [], []
    for case_id in ids:
        patch = store.load(case_id)
        image, mask = (patch.volume, patch.mask) if volumes else (patch.slice2d, patch.mask2d)
        hu.append(hu_statistics([image], [mask])[0])
        first.append(first_order_statistics([image], [mask])[0])
    features = {
        "size": index[["equivalent_diameter_mm"]].to_numpy(float),
        "hu-stats": np.asarray(hu, dtype=np.float64).reshape(len(ids), len(HU_STAT_NAMES)),
        "first-order": np.asarray(first, dtype=np.float64).reshape(
            len(ids), len(FIRST_ORDER_NAMES)
        ),
        "attributes": index[list(ATTRIBUTES)].to_numpy(float),
    }
    if "outline_diameter_mm" in index:
        features["size-2d"] = index[["outline_diameter_mm"]].to_numpy(float)
    return ReferenceData(
        case_ids=np.asarray(ids),
        labels=index["label"].map(LUNG_LABELS).to_numpy(int),
        groups=index["patient_id"].to_numpy(),
        malignancy=index["malignancy"].to_numpy(float),
        features=features,
        ratings=index[list(ATTRIBUTES)].astype(float),
    )


def _classifier(seed: int):
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))


def _regressor():
    return make_pipeline(StandardScaler(), LinearRegression())


REFERENCE_LABELS = {
    "size": "reference: size alone (equivalent diameter)",
    "size-2d": "reference: outline diameter (2D)",
    "hu-stats": "reference: HU statistics inside the mask (mean, max, count)",
    "first-order": "reference: first-order intensity statistics",
    "attributes": "reference: the radiologists' six attributes",
}


def _fold_results(X: np.ndarray, data: ReferenceData, fold, seed: int):
    """(metrics, test score, test prediction) of one fold (models fitted on its training
    part): logistic regression for benign/malignant, linear regression for the score."""
    tr, te = fold.train, fold.test
    clf = _classifier(seed).fit(X[tr], data.labels[tr])
    score, predicted = clf.decision_function(X[te]), clf.predict(X[te])
    metrics = classification_metrics(data.labels[te], predicted, score)
    reg = _regressor().fit(X[tr], data.malignancy[tr])
    regression = regression_metrics(data.malignancy[te], reg.predict(X[te]))
    metrics["within_one"] = regression["accuracy"]
    metrics["mean_abs_diff"] = regression["mean_abs_diff"]
    return metrics, score, predicted


def evaluate_reference(
    X: np.ndarray, data: ReferenceData, protocol: Protocol = Protocol(), folds=None
) -> dict[str, list[float]]:
    """Fold values of each metric for one reference input (models fitted on training folds).

    `auc`, `sensitivity`, `specificity`: logistic regression of benign/malignant;
    `within_one`, `mean_abs_diff`: linear regression of the mean malignancy score. `folds`
    (default: `make_folds` with `protocol`) are the experiments' folds when given."""
    folds = make_folds(data.labels, data.groups, protocol) if folds is None else folds
    values: dict[str, list[float]] = {}
    for fold in folds:
        metrics, _, _ = _fold_results(X, data, fold, protocol.seed)
        for name, value in metrics.items():
            values.setdefault(name, []).append(float(value))
    return values


def run_reference(data: ReferenceData, folds, log, seed: int = 0, names=None):
    """Log every reference row's fold metrics and test predictions (method names from
    `REFERENCE_LABELS`) into a `results.ResultLog`, beside the experiments' rows."""
    for name in names or data.features:
        method = REFERENCE_LABELS.get(name, f"reference: {name}")
        for fold in folds:
            metrics, score, predicted = _fold_results(data.features[name], data, fold, seed)
            log.add_fold(
                method, fold.index, metrics, "", data.case_ids[fold.test],
                data.labels[fold.test], score, predicted,
            )  # fmt: skip
    return log


def reference_rows(
    data: ReferenceData, protocol: Protocol = Protocol(), names: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per reference input and metric: fold mean, t-interval over folds, folds."""
    rows = []
    for name in names or data.features:
        for metric, folds in evaluate_reference(data.features[name], data, protocol).items():
            summary = summarize(folds)
            rows.append(
                {
                    "reference": name,
                    "metric": metric,
                    "mean": summary.mean,
                    "ci_low": summary.ci_low,
                    "ci_high": summary.ci_high,
                    "folds": summary.n,
                }
            )
    return pd.DataFrame(rows)


def rating_recovery(
    data: ReferenceData,
    protocol: Protocol = Protocol(),
    model: str = "linear",
    n_trees: int = 200,
) -> dict[str, float]:
    """Out-of-fold R² of each attribute's mean rating regressed on the pixels' statistics:
    `model="linear"` on the three HU statistics, `"forest"` (random forest of `n_trees`
    trees) on the first-order statistics. Near 1 means the pixels carry that rating
    verbatim."""
    from sklearn.ensemble import RandomForestRegressor

    if model not in ("linear", "forest"):
        raise ValueError(f"model must be 'linear' or 'forest', got {model!r}")
    X = data.features["hu-stats" if model == "linear" else "first-order"]
    folds = make_folds(data.labels, data.groups, protocol)
    out = {}
    for name in data.ratings.columns:
        target = data.ratings[name].to_numpy(float)
        predicted = np.empty_like(target)
        for fold in folds:
            if model == "linear":
                estimator = _regressor()
            else:
                estimator = RandomForestRegressor(
                    n_trees, min_samples_leaf=3, random_state=protocol.seed, n_jobs=1
                )
            model_ = estimator.fit(X[fold.train], target[fold.train])
            predicted[fold.test] = model_.predict(X[fold.test])
        out[name] = float(r2_score(target, predicted))
    return out
