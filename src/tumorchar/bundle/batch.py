"""Characterize every case of a patch store with a model bundle (batch evaluation).

`predict_store(model, store)` feeds each stored case to the bundle exactly as a region cut
from a scan would be (`RegionPatch`: the case's volume, if the store has volumes, and its
central or only slice), so a bundle trained on one store can be evaluated on a store built
from other patients. The store must have been cut like the bundle's training data (same
spacing, and volumes when the bundle's features need them); otherwise each case would be
characterized from a region the model never saw, and the call refuses.

When the store's cases carry a benign/malignant (normal/IPMN) label, `summary` gives the
held-out figures: accuracy, sensitivity, specificity and AUC of the probability.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tumorchar.bundle.characterizer import CLASS_NAMES, Characterizer
from tumorchar.bundle.format import BundleError
from tumorchar.bundle.region import RegionPatch

VOLUME_FEATURES = ("c3d", "i3d")  # feature kinds that read the volume, not a slice


@dataclass
class StorePrediction:
    """One record per characterized case, the cases that failed, and held-out metrics."""

    cases: list[dict[str, Any]] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, model: Characterizer, store) -> dict[str, Any]:
        return {
            "model": model.provenance,
            "store": {
                "folder": str(store.folder),
                "source": store.source,
                "kind": store.kind,
                "is_phantom": store.is_phantom,
                "note": store.note,
                "content_hash": store.content_hash,
                "n_cases": len(store.case_ids),
            },
            "summary": self.summary,
            "cases": self.cases,
            "failures": self.failures,
        }


def check_compatible(model: Characterizer, store) -> None:
    """Refuse a store whose cases were not cut as the bundle's training cases were."""
    features = model.manifest["pipeline"]["features"]
    kind = str(features.get("extractor", "")).lower()
    if not store.has_volumes and any(kind.startswith(name) for name in VOLUME_FEATURES):
        raise BundleError(
            f"the model's features ({kind}) need volumes; the store {store.folder} is a 2D store"
        )
    region = model.manifest["pipeline"]["region"]
    spacing = region.get("spacing_mm")
    if spacing is not None and "spacing_mm" in store.index:
        found = set(np.round(store.index["spacing_mm"].astype(float), 6))
        if found and found != {round(float(spacing), 6)}:
            raise BundleError(
                f"the model was trained on cases at {spacing} mm; the store {store.folder} "
                f"holds cases at {sorted(found)} mm"
            )


def _region(patch, info: dict) -> RegionPatch:
    padded = info.get("padded_fraction", 0.0)
    padded = 0.0 if padded is None or not math.isfinite(float(padded)) else float(padded)
    return RegionPatch(
        volume=patch.volume,
        slice2d=patch.slice2d,
        center_mm=(math.nan, math.nan, math.nan),
        padded_fraction=padded,
    )


def predict_store(model: Characterizer, store, case_ids=None, progress=None) -> StorePrediction:
    """Characterize the store's cases (all, or `case_ids`); a failing case is listed and
    the others go on. `progress()` is called once per case."""
    check_compatible(model, store)
    out = StorePrediction()
    index = store.index.set_index("case_id", drop=False)
    for case_id in store.case_ids if case_ids is None else list(case_ids):
        try:
            patch = store.load(case_id)
            result = model.predict_patch(_region(patch, patch.info), case_id)
        except (ValueError, KeyError, RuntimeError) as error:
            out.failures[case_id] = (
                str(error) if case_id in str(error) else f"case {case_id}: {error}"
            )
        else:
            row = index.loc[case_id]
            out.cases.append(_record(result, row))
        if progress is not None:
            progress()
    out.summary = held_out_summary(out.cases, model.modality)
    return out


def _record(result, row) -> dict[str, Any]:
    scores = {} if result.malignancy is None else {"malignancy": result.malignancy}
    scores.update(result.attributes)
    label = row.get("label")
    return {
        "case_id": result.case_id,
        "patient_id": str(row.get("patient_id", "")),
        "scores": scores,
        "class": result.label,
        "probability": result.probability,
        "label": None
        if label is None or (isinstance(label, float) and math.isnan(label))
        else str(label),
    }


def held_out_summary(cases: list[dict[str, Any]], modality: str) -> dict[str, Any]:
    """Accuracy, sensitivity, specificity and AUC over the cases labelled with one of the
    model's two classes (the others, e.g. `excluded`, are counted but not scored)."""
    from tumorchar.experiments.protocol import classification_metrics

    negative, positive = CLASS_NAMES[modality]
    scored = [c for c in cases if c["label"] in (negative, positive)]
    summary: dict[str, Any] = {"cases": len(cases), "labelled": len(scored)}
    if not scored:
        return summary
    y = np.array([c["label"] == positive for c in scored], dtype=int)
    pred = np.array([c["class"] == positive for c in scored], dtype=int)
    probability = np.array([c["probability"] for c in scored], dtype=float)
    metrics = classification_metrics(y, pred, probability)
    summary.update({name: float(value) for name, value in metrics.items()})
    summary["positives"] = int(y.sum())
    return summary
