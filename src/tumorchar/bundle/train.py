"""Fit a model on every case of a patch store and write it as a bundle.

- ``mtl`` (supervised, CT): I3D (Kinetics-400; or C3D) fine-tuned on the 7 tasks (malignancy
  and six attributes, binary at the mid-point pivot as in the paper) → pooled Mixed_5c (C3D:
  fc6) features, or GIST on a 2D store → the model recipe that E1's proposed row evaluates
  (`tumorchar.models.recipes.PROPOSED_MTL`: standardization → graph-regularized sparse MTL,
  paper Eq. 6, ρ1 and ρ2 by inner CV grouped by patient, or given; fitted with the training
  cases' Ψ of Eq. 5 when the store carries it) regressing the mean ratings.
- ``unsupervised`` (CT or MRI): GIST of the middle axial slice → `UnsupervisedClassifier`
  (standardization, k-means with k = 2, label-free cluster naming, ∝SVM on the clusters).

Both run an internal cross-validation split by patient (stratified by label) and store its
metrics in the manifest. For ``mtl`` the network is fine-tuned once on all cases and only
the stages after it are refitted per fold, so the figures are optimistic about the network
part; the manifest says so. The out-of-fold malignancy scores of that cross-validation fit
the logistic calibration behind the probability-like score.

The features the final estimators are fitted on are extracted on the CPU, as prediction
does, so a bundle predicts its own training cases exactly as it was fitted on them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tumorchar import __version__
from tumorchar.bundle.characterizer import ARRAYS_FILE, CLASS_NAMES, ESTIMATORS_FILE
from tumorchar.bundle.extractors import NETWORK_FILE, C3DExtractor, GistExtractor, save_network
from tumorchar.bundle.format import canonical_json, write_bundle
from tumorchar.bundle.region import MRIRegionSettings, RegionSettings
from tumorchar.bundle.state import estimators_to_state
from tumorchar.errors import TrainingError  # noqa: F401  (re-exported)
from tumorchar.features.recipes import gist_parameters
from tumorchar.models.recipes import (
    PAPER_RHO,
    PAPER_RHO_MTL,
    PROPOSED_MTL,
    UNSUPERVISED,
    psi_or_none,
)
from tumorchar.provenance import sha256_text
from tumorchar.vocab import PSI_COLUMNS, SCORE_RANGES, TASKS, clip_to_scale

GIST_SETTINGS = {**gist_parameters(), "orientations": list(gist_parameters()["orientations"])}
MTL_DEFAULTS = dict(PAPER_RHO)

Log = Callable[[str], None]


def _quiet(message: str) -> None:
    return None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def open_store(patches: str | os.PathLike, allow_incomplete: bool = False):
    """The patch store at `patches`; one whose build did not complete is refused unless
    `allow_incomplete` (`tumorchar.data.patches.PatchStore`)."""
    from tumorchar.data.patches import PatchStore

    try:
        return PatchStore(Path(patches), allow_incomplete=allow_incomplete)
    except FileNotFoundError as error:
        raise TrainingError(str(error)) from None


def store_modality(store) -> str:
    return "mri" if store.source == "mri" else "ct"


def region_settings_of(store) -> RegionSettings | MRIRegionSettings:
    """The crop/resample settings the store's patches were made with.

    MRI: the store's preprocessing/ROI settings, and for regions given by a point the
    median in-plane ROI extent of the training cases, side = pixel · roi_size / (1 + 2·margin).
    """
    from tumorchar.data.resample import AIR_HU

    if store_modality(store) == "mri":
        mri = dict(store.settings.get("mri", {}))
        if "roi_size" not in mri:
            raise TrainingError(f"MRI patch store {store.folder} does not record its settings")
        pixel = store.index["spacing_mm"].to_numpy(float)
        side = np.median(pixel) * mri["roi_size"] / (1.0 + 2.0 * mri.get("roi_margin", 0.0))
        return MRIRegionSettings(mri=mri, roi_extent_mm=float(side))
    geometry = dict(store.settings.get("geometry", {}))
    missing = {"spacing_mm", "size_mm"} - set(geometry)
    if missing:
        raise TrainingError(
            f"patch store {store.folder} does not record its crop geometry {sorted(missing)}; "
            "a model trained on it could not crop new scans the same way"
        )
    return RegionSettings(
        spacing_mm=float(geometry["spacing_mm"]),
        size_mm=float(geometry["size_mm"]),
        fill_value=float(AIR_HU),
    )


def training_cases(store, tasks: tuple[str, ...] = ()):
    """Labelled index rows (``excluded`` dropped; every score in `tasks` finite) and their
    0/1 labels (1 = malignant / IPMN)."""
    negative, positive = CLASS_NAMES[store_modality(store)]
    index = store.index
    rows = index[index["label"].isin([negative, positive])]
    if tasks:
        rows = rows[np.isfinite(rows[list(tasks)].to_numpy(float)).all(axis=1)]
    if len(rows) < 4 or rows["label"].nunique() < 2:
        raise TrainingError(
            f"patch store {store.folder} has {len(rows)} usable cases; training needs at "
            f"least 4, with both {negative} and {positive} cases"
        )
    rows = rows.reset_index(drop=True)
    return rows, (rows["label"].to_numpy() == positive).astype(int)


def _training_data(store, rows) -> dict[str, Any]:
    ids = "\n".join(rows["case_id"]).encode()
    return {
        "patch_store_hash": store.content_hash,
        "case_ids_sha256": sha256_text(ids),
        "source": store.source,
        "is_phantom": bool(store.is_phantom),
        "note": store.note,
        "n_cases": len(rows),
        "n_patients": int(rows["patient_id"].nunique()),
        "labels": {str(k): int(v) for k, v in rows["label"].value_counts().items()},
    }


def _folds(labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int):
    """Patient-grouped, label-stratified folds (`protocol.make_folds`); fewer when the data
    cannot fill them."""
    from tumorchar.experiments.protocol import Protocol, make_folds

    n_positive_groups = len(np.unique(groups[labels == 1]))
    n_negative_groups = len(np.unique(groups[labels == 0]))
    n_splits = min(n_folds, n_positive_groups, n_negative_groups)
    if n_splits < 2:
        raise TrainingError("too few patients per class for an internal cross-validation")
    folds = make_folds(labels, groups, Protocol(n_splits=n_splits, by_patient=True, seed=seed))
    return [(fold.train, fold.test) for fold in folds]


def _binary_metrics(labels: np.ndarray, predicted: np.ndarray, score: np.ndarray):
    from tumorchar.experiments.protocol import classification_metrics

    return classification_metrics(labels, predicted, score)


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


class StoreVolumes(Sequence):
    """The volumes of some store cases, read from disk on access (a whole LIDC-size store
    does not fit comfortably in memory at once); slicing gives a list of arrays."""

    def __init__(self, store, case_ids: list[str]):
        self.store, self.case_ids = store, list(case_ids)

    def __len__(self) -> int:
        return len(self.case_ids)

    def __getitem__(self, item):
        if isinstance(item, slice):
            return [self.store.load(c).volume for c in self.case_ids[item]]
        return self.store.load(self.case_ids[item]).volume


def _check_out(out: str | os.PathLike, overwrite: bool) -> None:
    """Fail before hours of work if the bundle could not be written at the end."""
    if Path(out).exists() and not overwrite:
        raise TrainingError(f"{out} already exists; choose another folder or allow overwrite")


# --- supervised -----------------------------------------------------------------------------


def train_mtl(
    patches: str | os.PathLike,
    out: str | os.PathLike,
    *,
    preset: str = "cpu",
    rho1: float | None = None,
    rho2: float | None = None,
    epochs: int | None = None,
    sports1m: str | os.PathLike | None = None,
    device: str | None = None,
    n_folds: int = 5,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
    allow_incomplete: bool = False,
    log: Log = _quiet,
    features: str = "auto",
    i3d_setting: str = "cpu",
    allow_random_init: bool = False,
) -> Path:
    """Fit a network's features + graph-regularized sparse MTL on a CT patch store; write the
    bundle at `out`.

    `features`: "i3d" (I3D, Kinetics-400, fine-tuned on the 7 tasks under `i3d_setting` →
    pooled Mixed_5c: E1's proposed 3D row), "c3d" (C3D `preset` fine-tuned → fc6; Sports-1M
    weights with `sports1m`, else from a seeded random initialization), "gist" (GIST of the
    central / only slice: E1's 2D row), or "auto" (i3d on a 3D store, gist on a 2D store
    such as the LIDC max-slice crops). I3D needs the converted weights (`tumorchar weights
    fetch`) unless `allow_random_init`. `epochs`: fine-tuning epochs (default: C3D 3, I3D
    the setting's). `device` is where the network is fine-tuned (default: CUDA when
    available); the features the model is fitted on are computed on the CPU, as prediction
    computes them.
    """
    _check_out(out, overwrite)
    store = open_store(patches, allow_incomplete)
    if store_modality(store) != "ct":
        raise TrainingError(f"patch store {store.folder} is MRI; the supervised model is CT only")

    from sklearn.linear_model import LogisticRegression

    tasks = TASKS
    region = region_settings_of(store)
    rows, labels = training_cases(store, tasks)
    ids = rows["case_id"].tolist()
    scores = rows[list(tasks)].to_numpy(np.float64)
    psi = psi_or_none(rows[list(PSI_COLUMNS)].to_numpy(float)) if PSI_COLUMNS[0] in rows else None
    kind = ("i3d" if store.has_volumes else "gist") if features == "auto" else features
    if kind not in ("i3d", "c3d", "gist"):
        raise TrainingError(f"features must be auto, i3d, c3d or gist, got {features!r}")
    if kind != "gist" and not store.has_volumes:
        raise TrainingError(
            f"patch store {store.folder} is a 2D store: {kind.upper()} needs volumes "
            "(use --features gist)"
        )
    if kind == "gist":
        log(f"{len(ids)} cases; GIST of each case's slice")
        net = _NetworkFeatures(GistExtractor(GIST_SETTINGS).features_of_slices(store.slices(ids)),
                               {"extractor": "gist", "label": "GIST (2D)",
                                "settings": GIST_SETTINGS})  # fmt: skip
    else:
        volumes = StoreVolumes(store, ids)
        common = {"seed": seed, "device": device, "progress": progress, "log": log}
        if kind == "i3d":
            net = _i3d_features(volumes, scores, i3d_setting, epochs, allow_random_init, **common)
        else:
            net = _c3d_features(volumes, scores, preset, epochs or 3, sports1m, **common)
    features = net.features

    patients = rows["patient_id"].to_numpy()
    recipe = mtl_recipe(rho1, rho2)
    folds = _folds(labels, rows["patient_id"].to_numpy(), n_folds, seed)
    log(f"internal {len(folds)}-fold cross-validation of the MTL stage")
    out_of_fold = np.empty_like(scores)
    for train, test in folds:
        fold_psi = None if psi is None else psi[train]
        fold_model = recipe.fit(
            features[train], scores[train], psi=fold_psi, groups=patients[train]
        )
        out_of_fold[test] = fold_model.predict(features[test])
    out_of_fold = clip_to_scale(out_of_fold, tasks)
    calibration = LogisticRegression(C=1e4).fit(out_of_fold[:, :1], labels)
    cv_metrics = _mtl_metrics(scores, out_of_fold, labels, calibration, tasks)

    log("fitting the final model on all cases")
    pipeline = fit_final_mtl(recipe, features, scores, psi, patients)
    scaler, final = pipeline[:-1], pipeline[-1]  # dead-unit filter + standardization, model
    manifest = {
        "package_version": __version__,
        "created_utc": _now(),
        "kind": "mtl",
        "modality": "ct",
        "tasks": list(tasks),
        "score_range": {t: list(SCORE_RANGES[t]) for t in tasks},
        "classes": list(CLASS_NAMES["ct"]),
        "training_data": _training_data(store, rows),
        "settings": {
            "patch_store": store.settings,
            **net.settings,
            "mtl": {
                "rho1": getattr(final, "rho1_", rho1),
                "rho2": getattr(final, "rho2_", rho2),
                "rho_chosen_by": "inner CV by patient"
                if rho1 is None and rho2 is None
                else "given",
                "loss": "mean" if rho1 is None and rho2 is None else "sum",
                "fit_intercept": True,
                "graph_edges": [list(edge) for edge in final.graph_edges_],
            },
            "model_recipe": {**recipe.describe(), "fitted_with_psi": psi is not None},
            "cv_folds_requested": n_folds,
        },
        "pipeline": {
            "region": region.to_dict(),
            "features": net.spec,
        },
        "cv": {
            "n_folds": len(folds),
            "split": "grouped by patient, stratified by benign/malignant",
            "note": (
                f"{net.name} fine-tuned once on all cases; standardization, MTL and "
                "calibration refitted per fold, so the figures are optimistic about the "
                "network part"
                if net.network is not None
                else "GIST (fixed, nothing learned); standardization, MTL and calibration "
                "refitted per fold"
            ),
            "metrics": cv_metrics,
        },
    }
    estimators = {"scaler": scaler, "mtl": final, "calibration": calibration}
    path = _write(out, manifest, estimators, network=net.network, overwrite=overwrite)
    log(f"model bundle written to {path}")
    return path


@dataclass
class _NetworkFeatures:
    """The training cases' features and what the bundle records about where they came from:
    the manifest's pipeline.features entry (`spec`), settings entries, the network to store."""

    features: np.ndarray
    spec: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    network: Any = None
    name: str = "GIST"


def _i3d_features(volumes, scores, setting, epochs, allow_random_init, *, seed, device,
                  progress, log) -> _NetworkFeatures:  # fmt: skip
    """I3D (Kinetics-400) fine-tuned on all cases (7 tasks, binary at the mid-point pivots),
    as E1's fine-tuned 3D rows fine-tune it on a training fold → pooled Mixed_5c."""
    from tumorchar.bundle.extractors import I3DExtractor, I3DFeatures
    from tumorchar.features import i3d
    from tumorchar.features._netutils import CT_WINDOW_HU, pick_device

    cfg = i3d.get_setting(setting)
    try:
        model = i3d.load_i3d(allow_random_init=allow_random_init, seed=seed)
    except FileNotFoundError as error:
        raise TrainingError(
            f"{error} To train from a seeded random initialization instead (features not "
            "comparable with a pretrained network's), pass --allow-random-init."
        ) from None
    initial = model.weights_label
    network = I3DFeatures(model, cfg.name, seed)
    window = {"intensity_window": list(CT_WINDOW_HU)}
    finetune = {"mode": "binary", "epochs": int(epochs or cfg.epochs), "seed": int(seed)}
    clip = f"{cfg.frames}×{cfg.size}² clips, from {cfg.start}"
    log(f"{len(volumes)} cases; fine-tuning I3D ({initial}, {cfg.name} setting: {clip}) "
        f"on {scores.shape[1]} tasks")  # fmt: skip
    features = i3d.finetune_and_pool(
        model, lambda rows: network.clips([volumes[i] for i in rows], CT_WINDOW_HU),
        len(volumes), np.arange(len(volumes)), scores, setting=cfg, device=device,
        progress=progress, **finetune,
    )  # fmt: skip
    model.cpu().eval()
    if pick_device(device).type != "cpu":  # the model is fitted on CPU features, as predicted
        log("extracting Mixed_5c features on the CPU")
        features = I3DExtractor(network, window).features_of_volumes(volumes, progress)
    record = {
        "name": "I3D",
        "setting": cfg.name,
        "weights": initial,
        "weights_file_sha256": model.weights_sha256 or None,
        "seed": int(seed) if initial == "random-init" else None,
    }
    label = "Kinetics-400" if initial == "kinetics400" else "random-init, not pretrained"
    spec = {"extractor": "i3d", "settings": window,
            "label": f"I3D Mixed_5c ({label}; fine-tuned, {cfg.name} setting)"}  # fmt: skip
    settings = {"i3d": {"setting": cfg.name, **finetune}, "network": record}
    return _NetworkFeatures(np.asarray(features, np.float64), spec, settings, network, "I3D")


def _c3d_features(volumes, scores, preset, epochs, sports1m, *, seed, device, progress,
                  log) -> _NetworkFeatures:  # fmt: skip
    """C3D (`preset`) fine-tuned on all cases from Sports-1M weights (`sports1m`) or a seeded
    random initialization → fc6."""
    from tumorchar.features import c3d
    from tumorchar.provenance import file_sha256, state_dict_sha256

    window = list(c3d.CT_WINDOW_HU)
    log(f"{len(volumes)} cases; fine-tuning C3D ({preset} preset) on {scores.shape[1]} tasks")
    network = c3d.C3D(preset=preset, n_tasks=scores.shape[1], seed=seed)
    weights_label = "random-init"
    if sports1m is not None:
        c3d.load_sports1m(network, sports1m)
        weights_label = "sports1m"
    # The network and the weights it started from, by content (a file is recorded by its
    # sha256, a seeded initialization by the digest of its tensors).
    record = {
        "name": "C3D",
        "preset": preset,
        "weights": weights_label,
        "weights_file_sha256": None if sports1m is None else file_sha256(sports1m),
        "initial_weights_sha256": state_dict_sha256(network.state_dict()),
    }
    finetune = {"mode": "binary", "epochs": int(epochs), "seed": int(seed)}
    c3d.finetune(network, volumes, scores, device=device, progress=progress, **finetune)
    network = network.cpu().eval()
    log("extracting fc6 features")
    extractor = C3DExtractor(network, {"intensity_window": window})
    features = extractor.features_of_volumes(volumes, progress=progress)
    spec = {
        "extractor": "c3d",
        "label": f"C3D fc6 ({preset} preset, fine-tuned from {weights_label})",
        "settings": {"intensity_window": window},
    }
    settings = {"c3d": {"preset": preset, "weights": weights_label, **finetune},
                "network": record}  # fmt: skip
    return _NetworkFeatures(features, spec, settings, network, "C3D")


def mtl_recipe(rho1: float | None = None, rho2: float | None = None):
    """E1's proposed recipe (ρ by inner CV grouped by patient) or, when ρ1 or ρ2 is given,
    Eq. 6 at those values on the summed loss (the paper's 1 and 10 fill a missing one)."""
    if rho1 is None and rho2 is None:
        return PROPOSED_MTL
    return PAPER_RHO_MTL.with_params(
        rho1=PAPER_RHO["rho1"] if rho1 is None else rho1,
        rho2=PAPER_RHO["rho2"] if rho2 is None else rho2,
    )


def fit_final_mtl(recipe, features: np.ndarray, scores: np.ndarray, psi: np.ndarray | None,
                  groups: np.ndarray | None = None):  # fmt: skip
    """The shipped model: ``recipe`` fitted on every case (dead-unit filter, standardization,
    MTL), exactly as E1 fits it on a training fold (``groups``: the patients)."""
    return recipe.fit(features, scores, psi=psi, groups=groups)


def _mtl_metrics(scores, predicted, labels, calibration, tasks) -> dict[str, Any]:
    """Per task: share of predictions within ±1 of the mean rating and mean absolute
    difference; benign vs malignant: metrics of the calibrated probability."""
    from tumorchar.models.scoring import accuracy_within_one, mean_absolute_score_difference

    per_task = {
        task: {
            "accuracy_within_1": float(accuracy_within_one(scores[:, i], predicted[:, i])),
            "mean_abs_difference": float(
                mean_absolute_score_difference(scores[:, i], predicted[:, i])
            ),
        }
        for i, task in enumerate(tasks)
    }
    probability = calibration.predict_proba(predicted[:, :1])[:, 1]
    binary = _binary_metrics(labels, (probability >= 0.5).astype(int), probability)
    return {"tasks": per_task, "benign_vs_malignant": binary}


# --- unsupervised ---------------------------------------------------------------------------


def naming_scores(store, rows) -> np.ndarray:
    """The label-free naming prior of `tumorchar.experiments.cases.naming_scores` (the one
    E2 / E3 use) for the training rows."""
    from tumorchar.experiments.cases import naming_scores as prior

    return prior(store, rows["case_id"].tolist(), with_size=store_modality(store) == "ct")


def _prior_doc() -> str:
    from tumorchar.experiments.cases import naming_scores as prior

    return prior.__doc__ or ""


def train_unsupervised(
    patches: str | os.PathLike,
    out: str | os.PathLike,
    *,
    n_folds: int = 5,
    seed: int = 0,
    classifier_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    allow_incomplete: bool = False,
    log: Log = _quiet,
) -> Path:
    """Fit GIST → k-means → ∝SVM on a CT or MRI patch store; write the bundle at `out`.

    `classifier_options` go to `UnsupervisedClassifier` (e.g. ``n_restarts``, ``C``).
    Labels are used only to score the internal cross-validation, never to fit.
    """
    from sklearn.base import clone

    _check_out(out, overwrite)
    store = open_store(patches, allow_incomplete)
    modality = store_modality(store)
    region = region_settings_of(store)
    rows, labels = training_cases(store)
    ids = rows["case_id"].tolist()
    log(f"{len(ids)} cases; GIST of the middle slices")
    features = GistExtractor(GIST_SETTINGS).features_of_slices(store.slices(ids))
    hints = naming_scores(store, rows)

    recipe = UNSUPERVISED.with_params(**dict(classifier_options or {}), random_state=seed)
    model = recipe.estimator()
    folds = _folds(labels, rows["patient_id"].to_numpy(), n_folds, seed)
    log(f"internal {len(folds)}-fold cross-validation (labels used for scoring only)")
    predicted = np.empty(len(ids), dtype=int)
    margins = np.empty(len(ids))
    for train, test in folds:
        fold_model = clone(model).fit(features[train], naming_score=hints[train])
        margins[test] = fold_model.decision_function(features[test])
        predicted[test] = (margins[test] > 0).astype(int)
    cv_metrics = _binary_metrics(labels, predicted, margins)

    log("fitting the final model on all cases")
    final = clone(model).fit(features, naming_score=hints)
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
            "patch_store": store.settings,
            "gist": GIST_SETTINGS,
            "classifier": final.get_params(),
            "model_recipe": recipe.describe(),
            "cluster_naming": "label-free: " + " ".join(_prior_doc().split()),
            "cv_folds_requested": n_folds,
        },
        "pipeline": {
            "region": region.to_dict(),
            "features": {"extractor": "gist", "label": "GIST", "settings": GIST_SETTINGS},
        },
        "cv": {
            "n_folds": len(folds),
            "split": "grouped by patient, stratified by label (labels used for scoring only)",
            "metrics": {"classification": cv_metrics},
        },
    }
    estimators = {"classifier": final, "margin_scale": scale}
    path = _write(out, manifest, estimators, overwrite=overwrite)
    log(f"model bundle written to {path}")
    return path
