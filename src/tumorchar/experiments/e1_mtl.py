"""Experiment E1 (paper Table II): malignancy score regression of lung nodules.

Eight methods of the paper (GIST or C3D fc6 features with Lasso / Ridge, trace-norm MTL, and
the proposed graph-regularized sparse MTL, Eq. 6) and rows the paper does not have: the
proposed model without Ψ, with the paper's fixed ρ1 = 1, ρ2 = 10 on its summed loss (round 1's
"proposed" row), with ρ1 = 0 at its chosen ρ2 (what the graph term adds), nodule size alone
(equivalent diameter) and the radiologists' own six mean attribute ratings. The proposed model
solves Eq. 6 on the mean loss with (ρ1, ρ2) chosen by inner cross-validation
(`GraphSparseMTLCV`; the paper's values translate to 0.00097 and 0.0097 there, where the graph
term is negligible on standardised features). Each is scored on the test fold by

- accuracy: share of predictions (clipped to [1, 5]) within ±1 of the mean malignancy score,
- mean absolute score difference,
- AUC of the predicted score for benign (mean < 3) vs malignant (mean > 3),
- out_of_range: number of predictions outside [1, 5] before clipping,

plus diagnostic rows of the fitted model (`model_diagnostics`: features kept, graph edges with
their correlations, chosen ρ).

Every learned step (dropping near-constant units, standardization, Lasso / Ridge / MTL
strengths chosen by inner cross-validation grouped by patient, the MTL task graph, C3D
fine-tuning inside `FoldFeatures`) sees the training fold only.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from tumorchar.experiments.protocol import Fold, regression_metrics, split_features
from tumorchar.experiments.results import MethodLabels, ResultLog
from tumorchar.models.mtl_cv import GraphSparseMTLCV
from tumorchar.models.recipes import (
    LASSO,
    LINEAR,
    MTL_WITHOUT_PSI,
    PAPER_RHO_MTL,
    PROPOSED_MTL,
    RIDGE,
    TRACE_NORM_MTL,
    ModelRecipe,
)
from tumorchar.models.taskgraph import GRAPH_THRESHOLD
from tumorchar.vocab import ATTRIBUTES, TASKS, Weights  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class E1Data:
    """Per-case inputs of E1 (rows aligned with every feature array).

    scores: (n, 7) mean radiologist ratings in `TASKS` order (malignancy first);
    labels: (n,) 1 = malignant, 0 = benign; groups: patient ids; psi: optional (n, 7)
    inconsistency values of paper Eq. 5, used by the proposed model in training only.
    """

    case_ids: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    psi: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.case_ids)
        if self.scores.shape != (n, len(TASKS)):
            raise ValueError(f"scores must be (n, {len(TASKS)}), got {self.scores.shape}")
        for name in ("labels", "groups"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows, expected {n}")
        if self.psi is not None and self.psi.shape != self.scores.shape:
            raise ValueError("psi must have the shape of scores")


@dataclass(frozen=True)
class E1Method:
    """A row of Table II: which feature array and which model recipe
    (`tumorchar.models.recipes`); a multi-task recipe is fitted on all 7 scores and its
    malignancy column is evaluated."""

    name: str
    feature: str
    recipe: ModelRecipe
    paper_row: str | None = None
    weights: str = ""  # the network weights behind the feature (C3D features only)

    @property
    def multitask(self) -> bool:
        return self.recipe.multitask

    @property
    def labels(self) -> MethodLabels:
        return MethodLabels(feature=self.feature, estimator=self.recipe.name, weights=self.weights)


PROPOSED = "graph-regularized sparse MTL (proposed, ρ by inner CV)"
#: How a row names each multi-task recipe (`models.recipes`), after its feature's name.
MTL_TITLES = {
    TRACE_NORM_MTL.name: "trace-norm MTL",
    PROPOSED_MTL.name: PROPOSED,
    MTL_WITHOUT_PSI.name: "graph-regularized sparse MTL without Ψ (ρ by inner CV)",
    PAPER_RHO_MTL.name: "graph-regularized sparse MTL, paper's ρ1=1, ρ2=10 on the summed loss",
}
RHO1_ZERO_VARIANT = "ρ1 = 0, same ρ2"
RHO1_ZERO_SUFFIX = f" [{RHO1_ZERO_VARIANT}]"
#: E1's 3D networks: feature-slot prefix → how a row names the network's features.
NETWORKS_3D = {"i3d": "I3D Mixed_5c", "c3d": "C3D fc6"}


def default_methods(c3d_label: str = "random-init", network: str = "c3d") -> list[E1Method]:
    """Table II's eight methods (the proposed one with ρ chosen by inner cross-validation
    on the mean loss), the proposed model without the Eq. 5 term Ψ, the paper's fixed
    ρ1 = 1, ρ2 = 10 on its summed loss, and the size-only and six-attribute reference rows.
    `run_e1` adds the ρ1 = 0 sensitivity row of every `GraphSparseMTLCV` method.

    The paper's 3D CNN rows use the features of ``network`` (`NETWORKS_3D`): "i3d"
    (Kinetics-400, the default of `tumorchar reproduce`; features "i3d_pretrained",
    "i3d_finetuned") or "c3d" (Sports-1M with the user's weights file; "c3d_pretrained",
    "c3d_finetuned"). ``c3d_label`` names its weights before fine-tuning (value or display
    name); "random-init" (the seeded initialization, only when asked for) marks the rows as
    not comparable with the paper's pretrained network."""
    if network not in NETWORKS_3D:
        raise ValueError(f"network must be one of {sorted(NETWORKS_3D)}, got {network!r}")
    title = NETWORKS_3D[network]
    w_pre = _weights_value(c3d_label)
    w_fine = f"{w_pre}+finetuned"
    if w_pre == "random-init":
        pre = f"{title} (random-init, not fine-tuned; not comparable with the paper)"
        fine = f"{title} (random-init, fine-tuned; not comparable with the paper)"
    else:
        pre = f"{title} ({c3d_label}, not fine-tuned)"
        fine = f"{title} ({c3d_label}, fine-tuned)"
    f_pre, f_fine = f"{network}_pretrained", f"{network}_finetuned"
    return [
        E1Method("GIST + Lasso", "gist", LASSO, "GIST + LASSO"),
        E1Method("GIST + Ridge", "gist", RIDGE, "GIST + RR"),
        E1Method(f"{pre} + Lasso", f_pre, LASSO, "3D CNN + LASSO (pre)", w_pre),
        E1Method(f"{pre} + Ridge", f_pre, RIDGE, "3D CNN + RR (pre)", w_pre),
        E1Method(f"{fine} + Lasso", f_fine, LASSO, "3D CNN + LASSO (fine)", w_fine),
        E1Method(f"{fine} + Ridge", f_fine, RIDGE, "3D CNN + RR (fine)", w_fine),
        *_mtl_methods(
            fine,
            f_fine,
            w_fine,
            {TRACE_NORM_MTL.name: "3D CNN MTL trace norm", PROPOSED_MTL.name: "Proposed"},
        ),  # fmt: skip
        E1Method("Reference: size only (equivalent diameter) + linear", "diameter", LINEAR),
        E1Method("Reference: radiologists' six mean attributes + linear", "attributes", LINEAR),
    ]


def _mtl_methods(
    feature_title: str, feature: str, weights: str, paper_rows: Mapping | None = None
) -> list[E1Method]:
    """The multi-task rows on one feature: trace-norm MTL, the proposed model, the proposed
    model without Ψ and with the paper's fixed ρ; ``paper_rows`` maps a recipe's name to
    the paper's row it reproduces."""
    paper_rows = paper_rows or {}
    recipes = (TRACE_NORM_MTL, PROPOSED_MTL, MTL_WITHOUT_PSI, PAPER_RHO_MTL)
    return [
        E1Method(
            f"{feature_title} + {MTL_TITLES[recipe.name]}",
            feature,
            recipe,
            paper_rows.get(recipe.name),
            weights,
        )  # fmt: skip
        for recipe in recipes
    ]


def model_diagnostics(model) -> dict[str, float]:
    """Result rows describing a fitted E1 pipeline (metric names in docs/architecture.md):
    ``features_kept`` (after `NearConstantFilter`), and for graph-regularized MTL
    ``graph_edges``, ``graph_edge:<task a>-<task b>`` (the edge's coefficient correlation),
    ``graph_margin`` (closest pair correlation to the threshold), ``graph_duality_gap``,
    and with inner CV ``rho1_chosen``, ``rho2_chosen``."""
    rows: dict[str, float] = {}
    steps = dict(model.steps) if hasattr(model, "steps") else {}
    if "nearconstantfilter" in steps:
        rows["features_kept"] = float(steps["nearconstantfilter"].support_.sum())
    final = model[-1] if hasattr(model, "steps") else model
    if getattr(final, "graph_edges_", None) is not None:
        rows["graph_edges"] = float(len(final.graph_edges_))
        corr = final.graph_correlation_
        for a, b in final.graph_edges_:
            value = float(corr[a, b]) if corr is not None else float("nan")
            rows[f"graph_edge:{TASKS[a]}-{TASKS[b]}"] = value
        if corr is not None:
            upper = corr[np.triu_indices(corr.shape[0], k=1)]
            rows["graph_margin"] = float(np.min(np.abs(upper - GRAPH_THRESHOLD)))
            rows["graph_duality_gap"] = float(final.graph_duality_gap_)
    if isinstance(final, GraphSparseMTLCV):
        rows["rho1_chosen"] = final.rho1_
        rows["rho2_chosen"] = final.rho2_
    return rows


def rho1_zero_refit(model, X_train, Y_train, X_test, psi) -> np.ndarray:
    """Malignancy predictions of the fitted proposed pipeline refitted with ρ1 = 0 at its
    chosen ρ2 (same cleaning, scaling and Ψ): what the graph term adds is the difference."""
    final = model[-1]
    front = model[:-1]
    # warm-started from the chosen model: a cold start stops at max_iter on these designs
    refit = copy.deepcopy(final.estimator_).set_params(rho1=0.0, warm_start=True)
    refit.fit(front.transform(X_train), Y_train, psi=psi)
    return refit.predict(front.transform(X_test))[:, 0]


def _weights_value(label: str) -> str:
    """The `Weights` value of a label given as value or display name ("Sports-1M")."""
    for weights in Weights:
        if label in (weights.value, weights.display):
            return weights.value
    return label


def two_d_methods(deep_label: str, weights: str = "") -> list[E1Method]:
    """E1's rows that 2D data supports (one slice per nodule, e.g. the LIDC max-slice crops):
    GIST + Lasso / Ridge (the paper's 2D rows), deep 2D features (`deep_label` names the
    network and its weights) + Lasso / Ridge / trace-norm / the proposed MTL with and without
    Ψ (no paper row: the paper's deep rows are 3D; `weights` is their `Weights` value), and
    the reference rows: size, the HU statistics inside the outline, the six attributes."""
    deep = f"{deep_label} (2D)"
    return [
        E1Method("GIST + Lasso", "gist", LASSO, "GIST + LASSO"),
        E1Method("GIST + Ridge", "gist", RIDGE, "GIST + RR"),
        E1Method(f"{deep} + Lasso", "deep2d", LASSO, None, weights),
        E1Method(f"{deep} + Ridge", "deep2d", RIDGE, None, weights),
        *_mtl_methods(deep, "deep2d", weights),
        E1Method("Reference: size only (equivalent diameter) + linear", "diameter", LINEAR),
        E1Method(
            "Reference: HU statistics inside the outline (mean, max, count) + linear",
            "hu_stats",
            LINEAR,
        ),
        E1Method("Reference: radiologists' six mean attributes + linear", "attributes", LINEAR),
    ]


def run_e1(
    data: E1Data,
    features: Mapping[str, object],
    folds: list[Fold],
    log: ResultLog,
    methods: list[E1Method] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> ResultLog:
    """Cross-validate every method whose feature is available; add its fold metrics and
    test predictions to ``log``. ``features`` maps a feature name to an (n, d) array or a
    `FoldFeatures`; the "attributes" feature defaults to the six mean ratings in
    ``data.scores``. Methods whose feature is missing are skipped."""
    methods = default_methods() if methods is None else methods
    features = dict(features)
    features.setdefault("attributes", data.scores[:, 1:])
    usable = [m for m in methods if m.feature in features]
    malignancy = data.scores[:, 0]
    for fold in folds:
        splits = {}
        psi_train = None if data.psi is None else data.psi[fold.train]
        groups_train = np.asarray(data.groups)[fold.train]
        truth, labels = malignancy[fold.test], data.labels[fold.test]
        for method in usable:
            if on_step:
                on_step(f"E1 fold {fold.index + 1}/{len(folds)}: {method.name}")
            if method.feature not in splits:
                splits[method.feature] = split_features(features[method.feature], fold)
            X_train, X_test = splits[method.feature]
            targets = data.scores[fold.train] if method.multitask else malignancy[fold.train]
            with warnings.catch_warnings():
                # the weakest penalties of the inner-CV Lasso path on correlated features may
                # stop short of the tolerance; those points are rarely the ones selected
                warnings.simplefilter("ignore", ConvergenceWarning)
                model = method.recipe.fit(X_train, targets, psi=psi_train, groups=groups_train)
                predicted = np.asarray(model.predict(X_test))
            predicted = predicted[:, 0] if method.multitask else predicted.ravel()
            metrics = regression_metrics(truth, predicted, labels)
            metrics.update(model_diagnostics(model))
            ids = data.case_ids[fold.test]
            log.add_fold(method.name, fold.index, metrics, method.paper_row, ids, truth, predicted,
                         labels=method.labels)  # fmt: skip
            if isinstance(model[-1], GraphSparseMTLCV):
                psi = psi_train if method.recipe.uses_psi else None
                zero = rho1_zero_refit(model, X_train, targets, X_test, psi)
                metrics = regression_metrics(truth, zero, labels)
                twin = replace(method.labels, variant=RHO1_ZERO_VARIANT)
                log.add_fold(method.name + RHO1_ZERO_SUFFIX, fold.index, metrics, None, ids, truth,
                             zero, labels=twin)  # fmt: skip
    return log
