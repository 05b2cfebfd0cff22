"""The cases an experiment uses: the evaluation subset of the cohort, the labelled rows of a
patch store with their scores, Ψ, patients and folds, and the label-free naming prior."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tumorchar.experiments.protocol import Fold, Protocol, make_folds
from tumorchar.vocab import LUNG_LABELS, MRI_LABELS, PSI_COLUMNS, TASKS


@dataclass(frozen=True)
class Cases:
    """Labelled cases of one dataset, rows aligned everywhere; ``folds`` by `protocol`."""

    dataset: str
    table: pd.DataFrame
    labels: np.ndarray
    groups: np.ndarray
    folds: list[Fold]

    @property
    def case_ids(self) -> list[str]:
        return self.table["case_id"].tolist()

    def counts(self) -> dict[str, float]:
        return {
            "n_cases": len(self.labels),
            "n_positive": int((self.labels == 1).sum()),
            "n_negative": int((self.labels == 0).sum()),
            "n_patients": len(np.unique(self.groups)),
        }


def evaluation_table(table: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """The nodules the experiments use: benign or malignant (mean malignancy ≠ 3, as in the
    paper); with ``n``, at most ``n`` of them, class shares kept, whole patients drawn."""
    usable = table[table["label"].isin(list(LUNG_LABELS))]
    if n is None or n >= len(usable):
        return usable
    rng = np.random.default_rng(seed)
    picked = []
    for _, part in usable.groupby("label"):
        quota = round(n * len(part) / len(usable))
        chosen = []
        for patient in rng.permutation(part["patient_id"].unique()):
            if len(chosen) >= quota:
                break
            chosen.extend(part.index[part["patient_id"] == patient][: quota - len(chosen)])
        picked.extend(chosen)
    return usable.loc[sorted(picked)]


def lung_cases(store, cohort_dir: Path, protocol: Protocol) -> Cases:
    """Benign/malignant cases of the lung store, with their Eq. 5 values from the cohort."""
    index = store.index[store.index["label"].isin(list(LUNG_LABELS))].copy()
    cohort = pd.read_parquet(Path(cohort_dir) / "cohort.parquet")
    index = index.drop(columns=[c for c in PSI_COLUMNS if c in index.columns])
    index = index.join(cohort.set_index("nodule_id")[list(PSI_COLUMNS)], on="case_id")
    return _cases("lung", index.reset_index(drop=True), LUNG_LABELS, protocol)


def mri_cases(store, protocol: Protocol) -> Cases:
    index = store.index[store.index["label"].isin(list(MRI_LABELS))].reset_index(drop=True)
    return _cases("mri", index, MRI_LABELS, protocol)


def _cases(dataset, table, label_map, protocol) -> Cases:
    labels = table["label"].map(label_map).to_numpy(int)
    groups = table["patient_id"].to_numpy()
    return Cases(dataset, table, labels, groups, make_folds(labels, groups, protocol))


def scores_and_psi(cases: Cases) -> tuple[np.ndarray, np.ndarray | None]:
    """(n, 7) mean scores in `TASKS` order and their Ψ (None unless every value is known)."""
    from tumorchar.models.recipes import psi_or_none

    scores = cases.table[list(TASKS)].to_numpy(float)
    psi = cases.table[list(PSI_COLUMNS)].to_numpy(float) if PSI_COLUMNS[0] in cases.table else None
    return scores, psi_or_none(psi)


def naming_scores(store, case_ids, with_size: bool) -> np.ndarray:
    """Label-free cluster-naming prior (`size_density_score`) on the central slices and
    their masks: lung nodules, equivalent diameter × (mean intensity in the mask − slice
    minimum), larger denser nodules being more often malignant; MRI, the ROI's mean T2
    intensity above its darkest pixel (IPMN cysts hold fluid). A missing diameter is computed
    from the 3D mask, d = (6 V / π)^(1/3); an empty central mask falls back to the slice."""
    from tumorchar.models.unsupervised import size_density_score

    case_ids = list(case_ids)
    scores = np.empty(len(case_ids))
    size = None
    if with_size:
        size = store.index.set_index("case_id").loc[case_ids, "equivalent_diameter_mm"]
        size = size.to_numpy(float).copy()
    for i, case_id in enumerate(case_ids):
        patch = store.load(case_id)
        image, mask = np.asarray(patch.slice2d), np.asarray(patch.mask2d)
        if not mask.any():
            mask = np.ones_like(mask)
        if size is not None and not np.isfinite(size[i]):
            spacing = float(store.settings["geometry"]["spacing_mm"])
            size[i] = (6.0 * patch.mask.sum() * spacing**3 / np.pi) ** (1.0 / 3.0)
        one_size = None if size is None else size[i : i + 1]
        scores[i] = size_density_score(image[None], mask[None], one_size)[0]
    return scores
