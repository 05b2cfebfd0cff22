"""`Characterizer`: a loaded model bundle applied to new scans.

For a supervised (``mtl``) bundle the chain is: region → network features (fine-tuned I3D
Mixed_5c or C3D fc6; GIST for a 2D model) → the training
standardization → graph-regularized sparse MTL, one linear predictor per task,
ŷ_t = x·w_t + b_t, clipped to the task's rating range → the malignancy score and the six
attribute scores. The probability-like malignancy score is a logistic calibration
p = σ(a·ŷ_malignancy + c), whose (a, c) were fitted during training on the out-of-fold
malignancy predictions of the internal cross-validation against the benign/malignant labels
(Platt scaling), so it reflects how well scores separated unseen cases.

For an ``unsupervised`` bundle: region → central axial slice → GIST → the k-means → ∝SVM
pipeline; the class is the ∝SVM's decision and the probability-like score is
p = σ(f(x) / s), the logistic of the ∝SVM margin f(x) in units of the standard deviation s
of the training margins. No label is used for it: it ranks cases, it is not calibrated.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tumorchar.bundle import scan as scans
from tumorchar.bundle.format import BundleContents, BundleError, read_bundle
from tumorchar.bundle.region import (
    MRIRegionSettings,
    RegionPatch,
    extract_mri_region,
    extract_patch,
    point_roi,
    region_settings_from_dict,
)
from tumorchar.bundle.state import estimators_from_state
from tumorchar.vocab import CLASS_NAMES

ESTIMATORS_FILE = "estimators.json"
ARRAYS_FILE = "arrays.npz"
NETWORK_FILE = "network.safetensors"


@dataclass(frozen=True)
class Characterization:
    """What a model says about one region of one scan.

    `malignancy` is on the 1–5 rating scale and `attributes` holds the six attribute
    scores on their rating scales (supervised CT models; None / empty otherwise).
    `label` is ``benign``/``malignant`` (CT) or ``normal``/``ipmn`` (MRI) and `probability`
    the probability-like score of the second class, derived as `probability_method` says.
    """

    case_id: str
    kind: str
    modality: str
    label: str
    probability: float
    probability_method: str
    malignancy: float | None
    attributes: dict[str, float]
    region: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Characterizer:
    """A model bundle ready to characterize regions of new scans (see `load_model`)."""

    def __init__(self, contents: BundleContents):
        self.folder = contents.folder
        self.manifest = contents.manifest
        self.kind: str = self.manifest["kind"]
        self.modality: str = self.manifest["modality"]
        self.tasks: list[str] = list(self.manifest.get("tasks", []))
        self.score_range = {t: tuple(r) for t, r in self.manifest.get("score_range", {}).items()}
        self.region_settings = region_settings_from_dict(self.manifest["pipeline"]["region"])
        self._estimators = _load_estimators(contents)
        self._extractor = _load_extractor(contents)

    def __repr__(self) -> str:
        return f"Characterizer(kind={self.kind!r}, modality={self.modality!r}, path={self.folder})"

    def self_check(self) -> None:
        """Run the fitted model once on a zero feature row: a bundle whose stored arrays do
        not fit together (shapes, missing attributes) fails here, at load, as a BundleError."""
        try:
            n_features = self._n_features()
            patch_features = np.zeros((1, n_features))
            if self.kind == "mtl":
                scores = self._estimators["mtl"].predict(
                    self._estimators["scaler"].transform(patch_features)
                )
                if np.shape(scores) != (1, len(self.tasks)):
                    raise ValueError(f"{np.shape(scores)} scores for {len(self.tasks)} tasks")
                self._estimators["calibration"].predict_proba([[3.0]])
                width = network_width(getattr(self._extractor, "network", None), n_features)
                if width != n_features:
                    raise ValueError(f"the network gives {width} features, the model takes "
                                     f"{n_features}")  # fmt: skip
            else:
                self._estimators["classifier"].decision_function(patch_features)
        except BundleError:
            raise
        except Exception as error:  # noqa: BLE001 - any inconsistency of the stored model
            raise BundleError(
                f"model bundle {self.folder}: the stored model cannot predict "
                f"({type(error).__name__}: {str(error)[:200]})"
            ) from None

    def _n_features(self) -> int:
        first = self._estimators["scaler" if self.kind == "mtl" else "classifier"]
        n = getattr(first, "n_features_in_", None)
        if n is None:
            n = getattr(getattr(first, "scaler_", None), "n_features_in_", None)
        if not isinstance(n, int | np.integer) or n < 1:
            raise BundleError(f"model bundle {self.folder}: the stored model has no input size")
        return int(n)

    @property
    def provenance(self) -> dict[str, Any]:
        """Where the model comes from: versions, training data, settings digest."""
        m = self.manifest
        return {
            "bundle": str(self.folder),
            "bundle_sha256": m["manifest_sha256"],
            "package_version": m["package_version"],
            "created_utc": m["created_utc"],
            "training_data": m["training_data"],
            "features": m["pipeline"]["features"]["label"],
        }

    def predict(
        self,
        scan: Any,
        at: tuple[float, float, float] | None = None,
        mask: Any = None,
        units: str = "mm",
        case_id: str | None = None,
        modality: str | None = None,
        component: str | int | None = None,
    ) -> Characterization:
        """Characterize the region of `scan` around the point `at` or inside `mask`.

        `scan` is a path (DICOM series folder or file, NIfTI, NRRD), a
        `tumorchar.data.io.Volume` or a SimpleITK image; `at` is ``(x, y, z)`` in `units` (``"mm"``:
        world coordinates; ``"voxel"``: column, row, slice index); `mask` an array, image or
        file on the scan's grid whose centroid is used; a mask of several separate regions
        needs `component` (``"largest"`` or a label value, see `scan.mask_array`).
        `modality` overrides the scan's.
        """
        scan = scans.as_scan(scan, case_id=case_id, modality=modality)
        self.check_modality(scan)
        region = self.region(scan, at=at, mask=mask, units=units, component=component)
        return self.predict_patch(region, scan.case_id)

    def region(
        self, scan: scans.Scan, at=None, mask=None, units: str = "mm", component=None
    ) -> RegionPatch:
        """The region of `scan` cut as the training cases were (see `tumorchar.bundle.region`)."""
        if (at is None) == (mask is None):
            raise scans.ScanError(f"case {scan.case_id}: give exactly one of a point or a mask")
        settings = self.region_settings
        if isinstance(settings, MRIRegionSettings):
            if mask is not None:
                roi = scans.mask_array(scan, mask, component)
            else:
                center = self.locate(scan, at=at, units=units)
                roi = point_roi(scan, center, settings.roi_extent_mm)
            return extract_mri_region(scan, roi, settings)
        center = self.locate(scan, at=at, mask=mask, units=units, component=component)
        return extract_patch(scan, center, settings)

    def check_modality(self, scan: scans.Scan) -> None:
        found = scans.infer_modality(scan)
        if found != self.modality:
            how = "its header says" if scan.modality else "its intensities suggest"
            raise scans.ScanError(
                f"case {scan.case_id}: this model was trained on {self.modality.upper()} but "
                f"{how} {found.upper()}; use a {found.upper()} model (or pass the modality "
                "explicitly if the guess is wrong)"
            )

    def locate(
        self, scan: scans.Scan, at=None, mask=None, units: str = "mm", component=None
    ) -> np.ndarray:
        """World coordinates (x, y, z) of the region's centre."""
        if mask is not None:
            return scans.mask_center(scan, mask, component)
        return scans.locate_point(scan, at, units)

    def predict_patch(self, patch: RegionPatch, case_id: str) -> Characterization:
        """Characterize an already extracted region."""
        features = self._extractor.features(patch)
        if self.kind == "mtl":
            return self._predict_mtl(features, patch, case_id)
        return self._predict_unsupervised(features, patch, case_id)

    def _region_info(self, patch: RegionPatch) -> dict[str, Any]:
        """Where the region was and how it was cut (the settings in the bundle)."""
        info = {"center_mm": list(patch.center_mm), "padded_fraction": patch.padded_fraction}
        settings = self.region_settings.to_dict()
        if isinstance(self.region_settings, MRIRegionSettings):
            settings.pop("mri")  # preprocessing settings: in the manifest
            info["n_slices"] = int(patch.volume.shape[0])
        return info | settings

    def _predict_mtl(self, features: np.ndarray, patch: RegionPatch, case_id: str):
        est = self._estimators
        scores = np.asarray(est["mtl"].predict(est["scaler"].transform(features)))[0]
        clipped = {
            task: float(np.clip(value, *self.score_range[task]))
            for task, value in zip(self.tasks, scores, strict=True)
        }
        malignancy = clipped["malignancy"]
        probability = float(est["calibration"].predict_proba([[malignancy]])[0, 1])
        negative, positive = CLASS_NAMES[self.modality]
        return Characterization(
            case_id=case_id,
            kind=self.kind,
            modality=self.modality,
            label=positive if probability >= 0.5 else negative,
            probability=probability,
            probability_method="logistic calibration of the malignancy score, fitted on the "
            "training cross-validation's out-of-fold predictions",
            malignancy=malignancy,
            attributes={t: v for t, v in clipped.items() if t != "malignancy"},
            region=self._region_info(patch),
            provenance=self.provenance,
        )

    def _predict_unsupervised(self, features: np.ndarray, patch: RegionPatch, case_id: str):
        est = self._estimators
        margin = float(np.ravel(est["classifier"].decision_function(np.atleast_2d(features)))[0])
        probability = float(1.0 / (1.0 + np.exp(-margin / float(est["margin_scale"]))))
        negative, positive = CLASS_NAMES[self.modality]
        return Characterization(
            case_id=case_id,
            kind=self.kind,
            modality=self.modality,
            label=positive if margin > 0 else negative,
            probability=probability,
            probability_method="logistic of the proportion-SVM margin in units of the training "
            "margins' standard deviation (no labels used; a ranking score, not calibrated)",
            malignancy=None,
            attributes={},
            region=self._region_info(patch),
            provenance=self.provenance,
        )


# what each kind of bundle must hold in estimators.json, and the method used of each
_ESTIMATORS = {
    "mtl": {"scaler": "transform", "mtl": "predict", "calibration": "predict_proba"},
    "unsupervised": {"classifier": "decision_function"},
}


def _load_estimators(contents: BundleContents) -> dict[str, Any]:
    """The fitted estimators; a malformed file is a BundleError naming it."""
    folder = contents.folder
    try:
        tree = json.loads(contents.path(ESTIMATORS_FILE).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BundleError(f"model bundle {folder}: {ESTIMATORS_FILE} is not valid JSON") from None
    if not isinstance(tree, dict):
        raise BundleError(f"model bundle {folder}: {ESTIMATORS_FILE} is not a JSON object")
    try:
        with np.load(contents.path(ARRAYS_FILE), allow_pickle=False) as arrays:
            stored = {name: arrays[name] for name in arrays.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise BundleError(
            f"model bundle {folder}: {ARRAYS_FILE} is not a readable array archive "
            f"({type(error).__name__})"
        ) from None
    try:
        estimators = estimators_from_state(tree, stored)
    except BundleError as error:
        raise BundleError(f"model bundle {folder}: {ESTIMATORS_FILE}: {error}") from None
    except Exception as error:  # noqa: BLE001 - any malformed entry of the file
        raise BundleError(
            f"model bundle {folder}: {ESTIMATORS_FILE} has a malformed entry "
            f"({type(error).__name__}: {str(error)[:200]})"
        ) from None
    kind = contents.manifest["kind"]
    for name, method in _ESTIMATORS[kind].items():
        if not hasattr(estimators.get(name), method):
            raise BundleError(
                f"model bundle {folder}: {ESTIMATORS_FILE} lacks the fitted '{name}' "
                f"(an object with {method})"
            )
    if kind == "unsupervised":
        scale = estimators.get("margin_scale")
        if not isinstance(scale, int | float) or not np.isfinite(scale) or scale <= 0:
            raise BundleError(
                f"model bundle {folder}: {ESTIMATORS_FILE} field 'margin_scale' must be a "
                "finite positive number"
            )
    return estimators


def network_width(network: Any, default: int) -> int:
    """Features per case of a bundle's network (I3D: 1024, C3D: its preset's fc6); `default`
    for GIST bundles, which have no network."""
    if network is None:
        return default
    return getattr(network, "n_features", None) or network.preset.fc_dim


def _load_extractor(contents: BundleContents):
    from tumorchar.bundle.extractors import extractor_from_manifest

    return extractor_from_manifest(contents.manifest["pipeline"]["features"], contents)


def load_model(path: str | os.PathLike) -> Characterizer:
    """Load a model bundle written by `tumorchar train`, after checking it completely.

    Raises `BundleError` when the folder is not a bundle, comes from an incompatible format
    version, or has a missing or altered file.
    """
    from tumorchar.bundle.schema import check_model_manifest

    contents = read_bundle(Path(path))
    check_model_manifest(contents.manifest, contents.folder)
    required = {ESTIMATORS_FILE, ARRAYS_FILE}
    if contents.manifest["pipeline"]["features"]["extractor"] in ("i3d", "c3d"):
        required.add(NETWORK_FILE)  # a GIST-based supervised bundle (2D stores) has none
    missing = required - set(contents.manifest["files"])
    if missing:
        raise BundleError(f"model bundle {path} lacks {sorted(missing)}")
    model = Characterizer(contents)
    model.self_check()
    return model
