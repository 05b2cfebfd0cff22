"""Fold-level results and per-case predictions of the experiments, and their Parquet files.

`results.parquet` holds one row per (experiment, method, dataset, fold, metric); the report
reads every number it prints from it. ``method`` is the row's identifier; what the method is
lives in structured columns (`LABEL_COLUMNS`: feature, estimator, cluster naming, network
weights, variant, data source), from which the report builds display names when it renders.
`predictions.parquet` holds the test-fold prediction of every case, from which the ROC curves
and the predicted-vs-true score plot are drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tumorchar._io import write_parquet_atomic  # noqa: F401 (re-exported)
from tumorchar.provenance import canonical_json, package_versions, short_digest

#: What a result row's method is, as data (empty string where a label does not apply).
LABEL_COLUMNS = ["feature", "estimator", "naming", "weights", "variant", "data_source"]
RESULT_COLUMNS = [
    "experiment",
    "method",
    "dataset",
    "fold",
    "metric",
    "value",
    "settings_hash",
    "versions",
    "paper_row",
    *LABEL_COLUMNS,
]
PREDICTION_COLUMNS = [
    "experiment",
    "method",
    "dataset",
    "fold",
    "case_id",
    "y_true",
    "score",
    "prediction",
    "settings_hash",
    *LABEL_COLUMNS,
]


def settings_hash(settings: dict) -> str:
    """SHA-256 (first 16 hex digits) of the settings as canonical JSON."""
    return short_digest(settings)


def versions_json() -> str:
    """JSON object of the versions of the packages that shape the numbers."""
    return canonical_json(package_versions())


@dataclass(frozen=True)
class MethodLabels:
    """What a method is: its feature (``gist``, ``c3d_finetuned``, ``fc7_relu`` ...), its
    estimator (a model recipe or classifier name), how clusters were named (``label_free`` |
    ``labels``), the network weights behind the feature (`tumorchar.vocab.Weights` values,
    ``+finetuned`` appended after fine-tuning) and a variant (``adasyn``, ...)."""

    feature: str = ""
    estimator: str = ""
    naming: str = ""
    weights: str = ""
    variant: str = ""

    def as_row(self) -> dict[str, str]:
        return {
            "feature": self.feature,
            "estimator": self.estimator,
            "naming": self.naming,
            "weights": self.weights,
            "variant": self.variant,
        }


@dataclass
class ResultLog:
    """Collects metric rows and test-fold predictions of one experiment run.

    ``data_source`` says where the cases come from (``phantom``, ``synthetic``, ``real``)."""

    experiment: str
    dataset: str
    settings_hash: str
    rows: list[dict] = field(default_factory=list)
    predictions: list[pd.DataFrame] = field(default_factory=list)
    data_source: str = ""

    def _labels(self, labels: MethodLabels | None) -> dict[str, str]:
        return {**(labels or MethodLabels()).as_row(), "data_source": self.data_source}

    def add_metrics(
        self,
        method: str,
        fold: int,
        metrics: dict[str, float],
        paper_row: str | None = None,
        labels: MethodLabels | None = None,
    ) -> None:
        """One row per metric; ``paper_row`` names the matching row of the paper's table."""
        structured = self._labels(labels)
        for metric, value in metrics.items():
            self.rows.append(
                {
                    "experiment": self.experiment,
                    "method": method,
                    "dataset": self.dataset,
                    "fold": int(fold),
                    "metric": metric,
                    "value": float(value),
                    "settings_hash": self.settings_hash,
                    "paper_row": paper_row or "",
                    **structured,
                }
            )

    def add_predictions(
        self, method, fold, case_ids, y_true, score, prediction, labels=None
    ) -> None:
        n = len(case_ids)
        score = np.full(n, np.nan) if score is None else np.asarray(score, float)
        prediction = np.full(n, np.nan) if prediction is None else np.asarray(prediction, float)
        frame = pd.DataFrame(
            {
                "experiment": self.experiment,
                "method": method,
                "dataset": self.dataset,
                "fold": int(fold),
                "case_id": np.asarray(case_ids).astype(str),
                "y_true": np.asarray(y_true, float),
                "score": score,
                "prediction": prediction,
                "settings_hash": self.settings_hash,
                **self._labels(labels),
            }
        )
        self.predictions.append(frame)

    def add_fold(
        self,
        method,
        fold,
        metrics,
        paper_row,
        case_ids,
        y_true,
        score,
        prediction=None,
        labels: MethodLabels | None = None,
    ) -> None:
        """A method's test fold: its metric rows and its per-case predictions."""
        self.add_metrics(method, fold, metrics, paper_row, labels)
        self.add_predictions(method, fold, case_ids, y_true, score, prediction, labels)

    def metrics_frame(self) -> pd.DataFrame:
        columns = [c for c in RESULT_COLUMNS if c != "versions"]
        frame = pd.DataFrame(self.rows, columns=columns)
        frame["versions"] = versions_json()
        return frame[RESULT_COLUMNS]

    def predictions_frame(self) -> pd.DataFrame:
        if not self.predictions:
            return pd.DataFrame(columns=PREDICTION_COLUMNS)
        return pd.concat(self.predictions, ignore_index=True)[PREDICTION_COLUMNS]


def combine(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    """Rows of ``frames`` with ``columns`` (a label column a frame lacks is left empty)."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=columns)
    joined = pd.concat(frames, ignore_index=True).reindex(columns=columns)
    for column in LABEL_COLUMNS:
        if column in joined:
            joined[column] = joined[column].fillna("").astype(str)
    return joined
