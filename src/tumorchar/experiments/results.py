"""Fold-level results and per-case predictions of the experiments, and their Parquet files.

`results.parquet` holds one row per (experiment, method, dataset, fold, metric); the report
reads every number it prints from it. `predictions.parquet` holds the test-fold prediction of
every case, from which the ROC curves and the predicted-vs-true score plot are drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tumorchar._io import write_parquet_atomic  # noqa: F401 (re-exported)
from tumorchar.provenance import canonical_json, package_versions, short_digest

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
]


def settings_hash(settings: dict) -> str:
    """SHA-256 (first 16 hex digits) of the settings as canonical JSON."""
    return short_digest(settings)


def versions_json() -> str:
    """JSON object of the versions of the packages that shape the numbers."""
    return canonical_json(package_versions())


@dataclass
class ResultLog:
    """Collects metric rows and test-fold predictions of one experiment run."""

    experiment: str
    dataset: str
    settings_hash: str
    rows: list[dict] = field(default_factory=list)
    predictions: list[pd.DataFrame] = field(default_factory=list)

    def add_metrics(
        self, method: str, fold: int, metrics: dict[str, float], paper_row: str | None = None
    ) -> None:
        """One row per metric; ``paper_row`` names the matching row of the paper's table."""
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
                }
            )

    def add_predictions(self, method, fold, case_ids, y_true, score, prediction) -> None:
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
            }
        )
        self.predictions.append(frame)

    def add_fold(
        self, method, fold, metrics, paper_row, case_ids, y_true, score, prediction=None
    ) -> None:
        """A method's test fold: its metric rows and its per-case predictions."""
        self.add_metrics(method, fold, metrics, paper_row)
        self.add_predictions(method, fold, case_ids, y_true, score, prediction)

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
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]
