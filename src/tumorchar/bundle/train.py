"""Fit a model on every case of a patch store and write it as a bundle.

- ``mtl`` (supervised, CT): C3D fine-tuned on the 7 tasks (malignancy and six attributes) →
  fc6 features → standardization → graph-regularized sparse MTL (paper Eq. 6, ρ1 = 1,
  ρ2 = 10 by default) on the mean ratings.
- ``unsupervised`` (CT or MRI): GIST of the central axial slice → standardization, k-means
  (k = 2), label proportions, ∝SVM (`tumorchar.models.unsupervised`).

Both run an internal cross-validation split by patient (stratified by label) and store
its metrics in the manifest. For ``mtl`` the C3D network is fine-tuned once on all cases
and only the stages after it are refitted per fold, so its metrics are optimistic about the
network part; the manifest says so. The out-of-fold malignancy scores of that
cross-validation fit the logistic calibration behind the probability-like score.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tumorchar import __version__
from tumorchar.bundle.characterizer import ARRAYS_FILE, CLASS_NAMES, ESTIMATORS_FILE
from tumorchar.bundle.extractors import NETWORK_FILE, GistExtractor, save_network
from tumorchar.bundle.format import canonical_json, write_bundle
from tumorchar.bundle.region import RegionSettings
from tumorchar.bundle.state import estimators_to_state

TASKS = (
    "malignancy",
    "calcification",
    "lobulation",
    "spiculation",
    "sphericity",
    "margin",
    "texture",
)
SCORE_RANGE = {task: (1.0, 6.0 if task == "calcification" else 5.0) for task in TASKS}
GIST_SETTINGS = {"image_size": 128, "orientations": [8, 8, 8, 8], "n_blocks": 4, "fc_prefilt": 4}

Log = Callable[[str], None]


def _quiet(message: str) -> None:
    return None


class TrainingError(ValueError):
    """The patch store cannot train the requested model."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _open_store(patches: str | os.PathLike):
    from tumorchar.data.patches import PatchStore

    return PatchStore(Path(patches))


def store_modality(store) -> str:
    return "mri" if store.source == "mri" else "ct"


def region_settings_of(store) -> RegionSettings:
    """The crop/resample settings the store's patches were made with."""
    settings = dict(getattr(store, "settings", {}) or {})
    spacing = float(settings.get("spacing_mm", RegionSettings.spacing_mm))
    size = float(settings.get("size_mm", settings.get("patch_size_mm", RegionSettings.size_mm)))
    fill = float(settings.get("fill_value", -1000.0 if store.source != "mri" else 0.0))
    return RegionSettings(spacing_mm=spacing, size_mm=size, fill_value=fill)


def training_cases(store, kind: str):
    """Index rows used for training: labelled cases (``excluded`` dropped); for ``mtl`` also
    every task score finite."""
    index = store.index
    positive = CLASS_NAMES[store_modality(store)][1]
    negative = CLASS_NAMES[store_modality(store)][0]
    rows = index[index["label"].isin([negative, positive])]
    if kind == "mtl":
        missing = [task for task in TASKS if task not in rows.columns]
        if missing:
            raise TrainingError(f"patch store has no score columns {missing}")
        rows = rows[np.isfinite(rows[list(TASKS)].to_numpy(float)).all(axis=1)]
    if len(rows) < 4 or rows["label"].nunique() < 2:
        raise TrainingError(
            f"patch store has {len(rows)} usable cases; training needs at least 4 with both "
            f"{negative} and {positive} present"
        )
    return rows.reset_index(drop=True), (rows["label"].to_numpy() == positive).astype(int)


def _training_data(store, rows) -> dict[str, Any]:
    ids = "\n".join(rows["case_id"]).encode()
    return {
        "patch_store_hash": store.content_hash,
        "case_ids_sha256": hashlib.sha256(ids).hexdigest(),
        "source": store.source,
        "is_phantom": bool(store.is_phantom),
        "n_cases": len(rows),
        "n_patients": int(rows["patient_id"].nunique()),
        "labels": {str(k): int(v) for k, v in rows["label"].value_counts().items()},
    }


def _folds(labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int):
    """Patient-grouped, label-stratified folds; fewer when the data cannot fill them."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(np.unique(groups))
    n_splits = min(n_folds, n_groups, int(np.bincount(labels).min()))
    if n_splits < 2:
        raise TrainingError("too few patients per class for an internal cross-validation")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels, groups))


def _binary_metrics(labels: np.ndarray, predicted: np.ndarray, score: np.ndarray):
    from sklearn.metrics import roc_auc_score

    positives, negatives = labels == 1, labels == 0
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "sensitivity": float(np.mean(predicted[positives] == 1)),
        "specificity": float(np.mean(predicted[negatives] == 0)),
        "auc": float(roc_auc_score(labels, score)),
    }


def _write(out, manifest, estimators: dict[str, Any], network=None, overwrite=False) -> Path:
    tree, arrays = estimators_to_state(estimators)
    writers = {
        ESTIMATORS_FILE: lambda path: path.write_text(canonical_json(tree) + "\n"),
        ARRAYS_FILE: lambda path: _save_npz(path, arrays),
    }
    if network is not None:
        writers[NETWORK_FILE] = lambda path: save_network(network, path)
    return write_bundle(out, manifest, writers, overwrite=overwrite)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


# --- supervised -----------------------------------------------------------------------------


def train_mtl(
    patches: str | os.PathLike,
    out: str | os.PathLike,
    *,
    preset: str = "cpu",
    rho1: float = 1.0,
    rho2: float = 10.0,
    epochs: int | None = None,
    sports1m: str | os.PathLike | None = None,
    n_folds: int = 5,
    seed: int = 0,
    overwrite: bool = False,
    log: Log = _quiet,
) -> Path:
    """Fit C3D + graph-regularized sparse MTL on a CT patch store; write the bundle at `out`."""
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from tumorchar.features import c3d
    from tumorchar.models.mtl import GraphSparseMTL

    store = _open_store(patches)
    if store_modality(store) != "ct":
        raise TrainingError("the supervised model needs a CT patch store (lidc or phantom)")
    rows, labels = training_cases(store, "mtl")
    ids = rows["case_id"].tolist()
    scores = rows[list(TASKS)].to_numpy(np.float64)
    log(f"{len(ids)} cases; fine-tuning C3D ({preset} preset) on {len(TASKS)} tasks")
    volumes = store.volumes(ids)
    network = c3d.C3D(preset=preset, n_tasks=len(TASKS))
    weights_label = "random-init"
    if sports1m is not None:
        c3d.load_sports1m(network, sports1m)
        weights_label = "sports1m"
    finetune_options = {"seed": seed} | ({"epochs": epochs} if epochs else {})
    c3d.finetune(network, volumes, scores, **finetune_options)
    log("extracting fc6 features")
    features = np.asarray(c3d.extract_fc6(network, volumes), dtype=np.float64)

    model = GraphSparseMTL(rho1=rho1, rho2=rho2, fit_intercept=True)
    log("internal cross-validation of the MTL stage")
    out_of_fold = np.empty_like(scores)
    folds = _folds(labels, rows["patient_id"].to_numpy(), n_folds, seed)
    for train, test in folds:
        scaler = StandardScaler().fit(features[train])
        fold_model = clone(model).fit(scaler.transform(features[train]), scores[train])
        out_of_fold[test] = fold_model.predict(scaler.transform(features[test]))
    out_of_fold = _clip(out_of_fold)
    calibration = LogisticRegression(C=1e4).fit(out_of_fold[:, :1], labels)
    cv_metrics = _mtl_metrics(scores, out_of_fold, labels, calibration)

    log("fitting the final model on all cases")
    scaler = StandardScaler().fit(features)
    final = clone(model).fit(scaler.transform(features), scores)
    manifest = {
        "package_version": __version__,
        "created_utc": _now(),
        "kind": "mtl",
        "modality": "ct",
        "tasks": list(TASKS),
        "score_range": {t: list(r) for t, r in SCORE_RANGE.items()},
        "classes": list(CLASS_NAMES["ct"]),
        "training_data": _training_data(store, rows),
        "settings": {
            "patch_store": dict(getattr(store, "settings", {}) or {}),
            "c3d": {"preset": preset, "weights": weights_label, **finetune_options},
            "mtl": {"rho1": rho1, "rho2": rho2, "fit_intercept": True},
            "seed": seed,
        },
        "pipeline": {
            "region": region_settings_of(store).to_dict(),
            "features": {
                "extractor": "c3d",
                "label": f"C3D fc6, fine-tuned ({weights_label} start)",
                "network": {"preset": preset, "n_tasks": len(TASKS)},
            },
        },
        "cv": {
            "n_folds": len(folds),
            "split": "grouped by patient, stratified by benign/malignant",
            "note": "C3D fine-tuned once on all cases; standardization, MTL and calibration "
            "refitted per fold (network part optimistic)",
            "metrics": cv_metrics,
        },
    }
    estimators = {"scaler": scaler, "mtl": final, "calibration": calibration}
    path = _write(out, manifest, estimators, network=network, overwrite=overwrite)
    log(f"model bundle written to {path}")
    return path


def _clip(scores: np.ndarray) -> np.ndarray:
    low = np.array([SCORE_RANGE[t][0] for t in TASKS])
    high = np.array([SCORE_RANGE[t][1] for t in TASKS])
    return np.clip(scores, low, high)


def _mtl_metrics(scores, predicted, labels, calibration) -> dict[str, Any]:
    """Per task: share within ±1 of the mean rating and mean absolute difference; malignancy:
    benign/malignant metrics of the calibrated probability."""
    per_task = {
        task: {
            "accuracy_within_1": float(np.mean(np.abs(predicted[:, i] - scores[:, i]) <= 1.0)),
            "mean_abs_difference": float(np.mean(np.abs(predicted[:, i] - scores[:, i]))),
        }
        for i, task in enumerate(TASKS)
    }
    probability = calibration.predict_proba(predicted[:, :1])[:, 1]
    binary = _binary_metrics(labels, (probability >= 0.5).astype(int), probability)
    return {"tasks": per_task, "benign_vs_malignant": binary}


# --- unsupervised ---------------------------------------------------------------------------


def train_unsupervised(
    patches: str | os.PathLike,
    out: str | os.PathLike,
    *,
    n_folds: int = 5,
    seed: int = 0,
    overwrite: bool = False,
    log: Log = _quiet,
) -> Path:
    """Fit GIST → k-means → ∝SVM on a CT or MRI patch store; write the bundle at `out`.

    Labels are used only to evaluate the internal cross-validation, never to fit.
    """
    from sklearn.base import clone

    from tumorchar.models.unsupervised import UnsupervisedProportionPipeline

    store = _open_store(patches)
    modality = store_modality(store)
    rows, labels = training_cases(store, "unsupervised")
    ids = rows["case_id"].tolist()
    log(f"{len(ids)} cases; GIST of the central slices")
    extractor = GistExtractor(GIST_SETTINGS)
    features = extractor.features_of_slices(store.slices(ids))

    model = UnsupervisedProportionPipeline(random_state=seed)
    log("internal cross-validation (labels used for scoring only)")
    folds = _folds(labels, rows["patient_id"].to_numpy(), n_folds, seed)
    predicted = np.empty(len(ids), dtype=int)
    margins = np.empty(len(ids))
    for train, test in folds:
        fold_model = clone(model).fit(features[train])
        predicted[test] = fold_model.predict(features[test])
        margins[test] = fold_model.decision_function(features[test])
    cv_metrics = _binary_metrics(labels, predicted, margins)

    log("fitting the final model on all cases")
    final = clone(model).fit(features)
    scale = float(np.std(final.decision_function(features))) or 1.0
    manifest = {
        "package_version": __version__,
        "created_utc": _now(),
        "kind": "unsupervised",
        "modality": modality,
        "tasks": [],
        "score_range": {},
        "classes": list(CLASS_NAMES[modality]),
        "training_data": _training_data(store, rows),
        "settings": {
            "patch_store": dict(getattr(store, "settings", {}) or {}),
            "gist": GIST_SETTINGS,
            "pipeline": final.get_params(deep=False),
            "seed": seed,
        },
        "pipeline": {
            "region": region_settings_of(store).to_dict(),
            "features": {"extractor": "gist", "label": "GIST", "settings": GIST_SETTINGS},
        },
        "cv": {
            "n_folds": len(folds),
            "split": "grouped by patient, stratified by label (labels used for scoring only)",
            "metrics": {"classification": cv_metrics},
        },
    }
    estimators = {"pipeline": final, "margin_scale": scale}
    path = _write(out, manifest, estimators, overwrite=overwrite)
    log(f"model bundle written to {path}")
    return path
