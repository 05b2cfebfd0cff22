"""The manifest fields a model reader relies on, each checked before it is used.

`read_manifest` proves that the manifest is the one the bundle was written with (its digest)
— which detects accidental damage, not a deliberate edit, since anyone can recompute a
digest. So every field that prediction reads is checked here for its type and value, and a
malformed one is a `BundleError` naming the field (`pipeline.region.size_mm`,
`score_range.malignancy`...) instead of a KeyError or TypeError deep inside a prediction.
"""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path
from typing import Any

from tumorchar.bundle.format import BundleError

KINDS = ("mtl", "unsupervised")
MODALITIES = ("ct", "mri")
# the supervised model reads I3D Mixed_5c or C3D fc6 (3D stores) or GIST (2D stores:
# `train mtl --features`)
EXTRACTORS = {"mtl": ("i3d", "c3d", "gist"), "unsupervised": ("gist",)}
GIST_PARAMETERS = ("image_size", "orientations", "n_blocks", "fc_prefilt")


class _Checker:
    def __init__(self, folder: Path):
        self.folder = folder

    def fail(self, field: str, problem: str):
        return BundleError(f"model bundle {self.folder}: manifest field {field!r} {problem}")

    def get(self, data: dict, key: str, field: str, kind: type | tuple, optional=False):
        if key not in data:
            if optional:
                return None
            raise self.fail(field, "is missing")
        value = data[key]
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            raise self.fail(field, f"must be a number, not {value!r}")
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.fail(field, f"must be of type {names}, got {type(value).__name__}")
        return value

    def number(self, data: dict, key: str, field: str, positive=False, optional=False):
        value = self.get(data, key, field, (int, float), optional)
        if value is None:
            return None
        if not math.isfinite(value) or (positive and value <= 0):
            raise self.fail(field, f"must be a finite{' positive' if positive else ''} number")
        return value

    def choice(self, data: dict, key: str, field: str, choices) -> str:
        value = self.get(data, key, field, str)
        if value not in choices:
            raise self.fail(field, f"is {value[:40]!r}; expected one of {list(choices)}")
        return value


def check_model_manifest(manifest: dict[str, Any], folder: Path) -> None:
    """Check every field that `Characterizer` and `tumorchar predict` read."""
    c = _Checker(folder)
    for key in ("package_version", "created_utc", "manifest_sha256"):
        c.get(manifest, key, key, str)
    kind = c.choice(manifest, "kind", "kind", KINDS)
    modality = c.choice(manifest, "modality", "modality", MODALITIES)
    tasks = c.get(manifest, "tasks", "tasks", list)
    if not all(isinstance(t, str) for t in tasks) or len(set(tasks)) != len(tasks):
        raise c.fail("tasks", "must be a list of distinct task names")
    if kind == "mtl" and (not tasks or tasks[0] != "malignancy"):
        raise c.fail("tasks", "of a supervised model must start with 'malignancy'")
    ranges = c.get(manifest, "score_range", "score_range", dict)
    for task in tasks:
        field = f"score_range.{task}"
        bounds = c.get(ranges, task, field, list)
        if len(bounds) != 2 or not all(
            isinstance(b, int | float) and not isinstance(b, bool) and math.isfinite(b)
            for b in bounds
        ):
            raise c.fail(field, "must be [low, high], two finite numbers")
        if not bounds[0] < bounds[1]:
            raise c.fail(field, "must have low < high")
    classes = c.get(manifest, "classes", "classes", list)
    if len(classes) != 2 or not all(isinstance(x, str) for x in classes) or len(set(classes)) < 2:
        raise c.fail("classes", "must be two distinct class names")
    data = c.get(manifest, "training_data", "training_data", dict)
    c.get(data, "n_cases", "training_data.n_cases", int)
    c.get(data, "source", "training_data.source", str)
    c.get(data, "is_phantom", "training_data.is_phantom", bool)
    c.get(data, "note", "training_data.note", str, optional=True)
    pipeline = c.get(manifest, "pipeline", "pipeline", dict)
    _check_region(c, c.get(pipeline, "region", "pipeline.region", dict), modality)
    _check_features(c, c.get(pipeline, "features", "pipeline.features", dict), kind)


def _check_region(c: _Checker, region: dict, modality: str) -> None:
    from tumorchar.bundle.region import MRIRegionSettings, RegionSettings

    expected = "ct-cube" if modality == "ct" else "mri-roi"
    kind = c.choice(region, "kind", "pipeline.region.kind", (expected,))
    allowed = {f.name for f in fields(RegionSettings if kind == "ct-cube" else MRIRegionSettings)}
    unknown = sorted(set(region) - allowed)
    if unknown:
        raise c.fail(f"pipeline.region.{unknown[0]}", "is not a region setting")
    if kind == "ct-cube":
        for key in ("spacing_mm", "size_mm"):
            c.number(region, key, f"pipeline.region.{key}", positive=True, optional=True)
        c.number(region, "fill_value", "pipeline.region.fill_value", optional=True)
        return
    c.number(region, "roi_extent_mm", "pipeline.region.roi_extent_mm", positive=True)
    mri = c.get(region, "mri", "pipeline.region.mri", dict)
    from tumorchar.data.mri import MRISettings

    defaults = {f.name: f.default for f in fields(MRISettings)}
    for key, value in mri.items():
        field = f"pipeline.region.mri.{key}"
        if key not in defaults:
            raise c.fail(field, "is not an MRI setting")
        default = defaults[key]
        if isinstance(default, tuple):
            if not isinstance(value, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
            ):
                raise c.fail(field, "must be a list of positive integers")
        elif isinstance(default, int):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise c.fail(field, "must be a non-negative integer")
        else:
            c.number(mri, key, field)


def _check_features(c: _Checker, features: dict, kind: str) -> None:
    extractor = c.choice(features, "extractor", "pipeline.features.extractor", EXTRACTORS[kind])
    c.get(features, "label", "pipeline.features.label", str)
    settings = c.get(features, "settings", "pipeline.features.settings", dict)
    if extractor in ("i3d", "c3d"):
        window = settings.get("intensity_window")
        field = "pipeline.features.settings.intensity_window"
        if window is not None and (
            not isinstance(window, list)
            or len(window) != 2
            or not all(isinstance(v, int | float) and math.isfinite(v) for v in window)
            or not window[0] < window[1]
        ):
            raise c.fail(field, "must be null or [low, high] with low < high")
        return
    for key, value in settings.items():
        field = f"pipeline.features.settings.{key}"
        if key not in GIST_PARAMETERS:
            raise c.fail(field, "is not a GIST setting")
        if key == "orientations":
            if (
                not isinstance(value, list)
                or not value
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
            ):
                raise c.fail(field, "must be a list of positive integers")
        elif key == "fc_prefilt":
            c.number(settings, key, field, positive=True)
        elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise c.fail(field, "must be a positive integer")
