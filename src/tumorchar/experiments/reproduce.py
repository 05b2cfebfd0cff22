"""`tumorchar reproduce`: cohort → patches → features → E1–E4 → report, with cached stages.

Output folder layout::

    OUT/cohort/            the LIDC cohort (tumorchar cohort)
    OUT/cohort-eval/       its benign and malignant nodules (with --max-cases, a subset)
    OUT/patches/lung/      lung patch store (phantom or real LIDC CT)
    OUT/synthetic-mri/     without --mri: the synthetic generator's images and CSVs
    OUT/patches/mri/       MRI patch store (the user's MRI or the synthetic images)
    OUT/features/          FeatureStore folders; c3d_finetuned/fold<k>.npz + .json keys
    OUT/experiments/       per-experiment metric and prediction tables with their keys
    OUT/results.parquet    every metric of every fold, stage times, dataset counts
    OUT/predictions.parquet
    OUT/run.json           data source, protocol, weights labels, notes
    OUT/report.md, OUT/report.html, OUT/figures/

A stage is reused when its key (a hash of its settings and of its inputs' hashes) is
unchanged; anything else is recomputed. Every learned step is fitted inside the training
folds (see `protocol`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from tumorchar.experiments.e1_mtl import TASKS, E1Data, default_methods, run_e1
from tumorchar.experiments.e2_unsupervised import run_e2
from tumorchar.experiments.e3_deep_features import run_e3
from tumorchar.experiments.e4_upper_bound import ClassData, run_e4
from tumorchar.experiments.protocol import Fold, FoldFeatures, Protocol, make_folds
from tumorchar.experiments.results import (
    PREDICTION_COLUMNS,
    RESULT_COLUMNS,
    ResultLog,
    combine,
    settings_hash,
    write_parquet_atomic,
)

EXPERIMENTS = ("E1", "E2", "E3", "E4")
LUNG_LABELS = {"benign": 0, "malignant": 1}
MRI_LABELS = {"normal": 0, "ipmn": 1}
# E1 methods rerun with the other split (by patient ↔ plain stratified) to show what splitting
# a patient's nodules across folds does; the features that need no fine-tuning keep it cheap.
SPLIT_COMPARISON_FEATURES = ("gist", "c3d_pretrained", "diameter", "attributes")


@dataclass(frozen=True)
class ReproduceSettings:
    """Everything that shapes a reproduction run (hashed into the stage keys)."""

    out: Path
    lung: str = "phantom"  # "phantom" | "lidc" | "none"
    lidc_dir: Path | None = None
    mri: str = "synthetic"  # "synthetic" | "dir" | "none"
    mri_dir: Path | None = None
    protocol: Protocol = field(default_factory=Protocol)
    experiments: tuple[str, ...] = EXPERIMENTS
    max_cases: int | None = None  # stratified subset of the lung cohort (tests, quick looks)
    mri_cases: int | None = None  # synthetic MRI subjects (default: the paper's 171)
    mri_shape: tuple[int, int, int] | None = None  # synthetic volume (z, y, x); None: default
    c3d_preset: str = "cpu"
    c3d_epochs: int = 3
    c3d_weights: Path | None = None  # Sports-1M c3d.pickle; None → seeded random init
    vgg_weights: Path | None = None  # torchvision VGG16 state dict; None → random init
    vgg_batch_size: int = 16
    vgg_bf16: bool = False  # bfloat16 autocast for VGG on CPU (~1 % feature error, faster)
    rf_trees: int = 100
    psvm_restarts: int = 10
    seed: int = 0

    def key(self, *parts) -> str:
        return settings_hash({"parts": parts})


class StageClock:
    """Wall time of each stage, whether its output was reused from the cache, and whether it
    ran inside another stage (C3D fine-tuning runs inside E1; its time is part of E1's)."""

    def __init__(self, console=None):
        self.console = console
        self.records: list[tuple[str, float, bool, bool]] = []
        self._depth = 0

    @contextmanager
    def stage(self, name: str):
        state = {"cached": False}
        nested = self._depth > 0
        if self.console:
            if nested:
                self.console.print(f"[bold]{name}")
            else:
                self.console.rule(f"[bold]{name}")
        start = time.perf_counter()
        slot = len(self.records)  # a stage is listed before the stages it runs
        self.records.append((name, 0.0, False, nested))
        self._depth += 1
        try:
            yield state
        finally:
            self._depth -= 1
        seconds = time.perf_counter() - start
        self.records[slot] = (name, seconds, state["cached"], nested)
        if self.console:
            how = "reused from cache" if state["cached"] else "done"
            self.console.print(f"[green]{name}: {how} in {seconds:.1f} s")

    def log(self, digest: str) -> ResultLog:
        log = ResultLog("stage", "all", digest)
        for name, seconds, cached, nested in self.records:
            metrics = {"seconds": seconds, "cached": float(cached), "nested": float(nested)}
            log.add_metrics(name, -1, metrics)
        return log


# --- caching helpers -------------------------------------------------------------------------


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def _read_key(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("key")
    except (OSError, ValueError):
        return None


def cached_arrays(
    folder: Path, name: str, key: str, compute: Callable[[], dict[str, np.ndarray]], state=None
) -> dict[str, np.ndarray]:
    """Arrays saved as `name.npz` beside `name.json` holding ``key``; recomputed when the key
    differs or a file is missing."""
    npz, meta = folder / f"{name}.npz", folder / f"{name}.json"
    if npz.is_file() and _read_key(meta) == key:
        with np.load(npz, allow_pickle=False) as data:
            if state is not None:
                state["cached"] = True
            return {k: data[k] for k in data.files}
    arrays = compute()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = npz.with_name(npz.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, npz)
    _write_json(meta, {"key": key, "arrays": sorted(arrays)})
    if state is not None:
        state["cached"] = False
    return arrays


# --- stages 1–2: cohort and patch stores -----------------------------------------------------


def _invoke(args: list[str], partial_ok: bool = False) -> None:
    """Run a `tumorchar` command in-process (its own caching and progress bars apply).

    With ``partial_ok`` an exit code of 1 (a batch that wrote its store but listed failed
    cases) lets the run go on; the store's own failure list ends up in run.json."""
    import typer

    from tumorchar.cli import app

    try:
        code = app(args, standalone_mode=False)  # returns the exit code of typer.Exit
    except typer.Exit as exc:
        code = exc.exit_code
    if code and not (partial_ok and code == 1):
        raise RuntimeError(f"`tumorchar {' '.join(args)}` failed (exit code {code})")


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


def build_cohort(settings: ReproduceSettings, clock: StageClock) -> Path:
    """The full LIDC cohort (`tumorchar cohort`), then the evaluation cohort folder holding
    only the benign and malignant nodules (optionally a stratified subset), so that patches
    and features are made for the cases the experiments use."""
    from tumorchar.data.cohort_store import load_cohort, write_cohort

    full = settings.out / "cohort"
    with clock.stage("cohort") as state:
        _invoke(["cohort", "--out", str(full)])
        evaluation = settings.out / "cohort-eval"
        cohort = load_cohort(full)
        table = evaluation_table(cohort.table, settings.max_cases, settings.seed)
        key = settings.key(
            "cohort-eval", settings.max_cases, settings.seed, table["nodule_id"].tolist()
        )
        if _read_key(evaluation / "evaluation.json") == key:
            state["cached"] = True
        else:
            masks = {nodule: cohort.mask(nodule) for nodule in table["nodule_id"]}
            write_cohort(table.reset_index(drop=True), masks, evaluation)
            _write_json(evaluation / "evaluation.json", {"key": key, "n": len(table)})
    return evaluation


def _store_hash(folder: Path) -> str | None:
    try:
        return json.loads((folder / "store.json").read_text()).get("content_hash")
    except (OSError, ValueError):
        return None


def build_lung_store(settings: ReproduceSettings, cohort_dir: Path, clock: StageClock) -> Path:
    out = settings.out / "patches" / "lung"
    with clock.stage(f"patches: lung ({settings.lung})") as state:
        before = _store_hash(out)
        if settings.lung == "phantom":
            _invoke(
                ["patches", "phantom", "--cohort", str(cohort_dir), "--out", str(out)],
                partial_ok=True,
            )
        else:
            _invoke(
                [
                    "patches",
                    "lidc",
                    "--cohort",
                    str(cohort_dir),
                    "--lidc-dir",
                    str(settings.lidc_dir),
                    "--out",
                    str(out),
                ],
                partial_ok=True,
            )
        state["cached"] = before is not None and before == _store_hash(out)
    return out


DEFAULT_MRI_CASES = 171  # the paper's cohort size (38 normal, 133 IPMN)


def build_mri_store(settings: ReproduceSettings, clock: StageClock) -> Path:
    """The MRI patch store: from ``settings.mri_dir`` (images in ``images/`` or the folder
    itself, plus ``rois.csv`` and ``labels.csv``), or from the synthetic generator."""
    out = settings.out / "patches" / "mri"
    with clock.stage(f"patches: MRI ({settings.mri})") as state:
        before = _store_hash(out)
        if settings.mri == "dir":
            source = Path(settings.mri_dir)
        else:
            source = settings.out / "synthetic-mri"
            n_cases = settings.mri_cases or DEFAULT_MRI_CASES
            key = settings.key("synthetic-mri", n_cases, settings.seed, settings.mri_shape)
            if _read_key(source / "reproduce.json") != key:
                from tumorchar.data.synthetic_mri import SYNTHETIC_NOTE, write_synthetic_mri

                shape = {} if settings.mri_shape is None else {"shape": settings.mri_shape}
                write_synthetic_mri(source, n_cases=n_cases, seed=settings.seed, **shape)
                _write_json(source / "reproduce.json", {"key": key, "note": SYNTHETIC_NOTE})
        images = source / "images" if (source / "images").is_dir() else source
        for name in ("rois.csv", "labels.csv"):
            if not (source / name).is_file():
                raise FileNotFoundError(f"MRI folder {source} has no {name}")
        args = ["patches", "mri", "--images", str(images), "--rois", str(source / "rois.csv")]
        _invoke(args + ["--labels", str(source / "labels.csv"), "--out", str(out)], True)
        state["cached"] = before is not None and before == _store_hash(out)
    return out


# --- stage 3: features -----------------------------------------------------------------------


def _slices(store, case_ids) -> np.ndarray | list[np.ndarray]:
    try:
        return store.slices(case_ids)
    except ValueError:  # MRI ROIs of different sizes
        return [store.load(case_id).slice2d for case_id in case_ids]


def _window(store) -> tuple[dict, str]:
    """CT stores keep the extractors' HU window; MRI slices get a per-slice window."""
    if store.source == "mri":
        return {"intensity_window": None}, "per-slice"
    return {}, "ct-default"


def _aligned(outputs: dict, case_ids: list[str]) -> dict[str, np.ndarray]:
    """Rows of each `FeatureSet` in the order of ``case_ids`` (all must be present)."""
    aligned = {}
    for name, feature_set in outputs.items():
        row = {case_id: i for i, case_id in enumerate(feature_set.case_ids)}
        missing = [c for c in case_ids if c not in row]
        if missing:
            raise ValueError(f"{name}: no features for case(s) {', '.join(missing[:5])}")
        aligned[name] = feature_set.values[[row[c] for c in case_ids]]
    return aligned


def gist_features(settings, store, case_ids, clock, dataset: str) -> np.ndarray:
    from tumorchar.features.gist import gist
    from tumorchar.features.store import FeatureStore

    feature_settings = {
        "image_size": 128,
        "orientations": [8, 8, 8, 8],
        "n_blocks": 4,
        "fc_prefilt": 4.0,
        "algorithm": "LMgist",
    }
    with clock.stage(f"features: GIST ({dataset})") as state:
        features = FeatureStore(settings.out / "features")
        state["cached"] = features.load("gist", feature_settings, store) is not None
        outputs = features.get_or_compute_outputs(
            "gist", feature_settings, store, lambda ids: gist(_slices(store, ids)), 64
        )
    return next(iter(_aligned(outputs, case_ids).values()))


def vgg_features(settings, store, case_ids, clock, dataset: str) -> tuple[dict, str]:
    """fc7, fc7_relu, fc8, fc8_relu of the central slices, and the weights label."""
    from tumorchar.features.store import FeatureStore
    from tumorchar.features.vgg import extract_vgg, load_vgg16

    model, label = load_vgg16(settings.vgg_weights, allow_random_init=True, seed=settings.seed)
    window_kw, window = _window(store)
    feature_settings = {
        "weights": label,
        "seed": settings.seed,
        "intensity_window": window,
        "weights_file": str(settings.vgg_weights or ""),
        "bf16": settings.vgg_bf16,
    }
    extractor = "vgg16" if label != "random-init" else "vgg16-random-init"

    def compute(ids):
        return extract_vgg(
            model,
            _slices(store, ids),
            settings.vgg_batch_size,
            bf16=settings.vgg_bf16 or None,
            **window_kw,
        )

    with clock.stage(f"features: VGG16 fc7/fc8 ({dataset})") as state:
        features = FeatureStore(settings.out / "features")
        state["cached"] = features.load(extractor, feature_settings, store) is not None
        outputs = features.get_or_compute_outputs(extractor, feature_settings, store, compute, 32)
    return _aligned(outputs, case_ids), label


def _c3d_model(settings, n_tasks: int):
    from tumorchar.features import c3d

    model = c3d.C3D(settings.c3d_preset, n_tasks=n_tasks, seed=settings.seed)
    if settings.c3d_weights is not None:
        c3d.load_sports1m(model, settings.c3d_weights)
        return model, "Sports-1M"
    return model, "random-init"


def c3d_pretrained_features(settings, store, case_ids, clock) -> tuple[np.ndarray, str]:
    """fc6 of C3D before fine-tuning (Sports-1M weights, or the seeded initialization)."""
    from tumorchar.features import c3d
    from tumorchar.features.store import FeatureStore

    model, label = _c3d_model(settings, len(TASKS))
    feature_settings = {
        "preset": settings.c3d_preset,
        "weights": label,
        "seed": settings.seed,
        "weights_file": str(settings.c3d_weights or ""),
    }
    suffix = "" if label == "Sports-1M" else "-random-init"
    extractor = f"c3d-{settings.c3d_preset}{suffix}"
    with clock.stage(f"features: C3D fc6, {label} (lung)") as state:
        features = FeatureStore(settings.out / "features")
        state["cached"] = features.load(extractor, feature_settings, store) is not None
        outputs = features.get_or_compute_outputs(
            extractor,
            feature_settings,
            store,
            lambda ids: c3d.extract_fc6(model, store.volumes(ids)),
            64,
        )
    return next(iter(_aligned(outputs, case_ids).values())), label


def c3d_finetuned_features(settings, store, case_ids, scores, clock) -> FoldFeatures:
    """`FoldFeatures` that fine-tune C3D on the training fold's volumes and 7 mean scores
    (binary at the mid-point pivot, as in the paper) and extract fc6 of both sides; each fold
    is cached on its own, keyed by its training cases."""
    from tumorchar.features import c3d

    weights = None if settings.c3d_weights is None else str(settings.c3d_weights)
    volumes: list[np.ndarray] = []

    def compute(fold: Fold):
        train_ids = [case_ids[i] for i in fold.train]
        key = settings.key(
            "c3d-fine",
            settings.c3d_preset,
            settings.c3d_epochs,
            weights,
            store.content_hash,
            train_ids,
            case_ids,
            settings.seed,
        )

        def run():
            if not volumes:  # loaded once, on the first fold that is not cached
                volumes.extend(store.load(case_id).volume for case_id in case_ids)
            model, _ = _c3d_model(settings, len(TASKS))
            c3d.finetune(
                model,
                [volumes[i] for i in fold.train],
                scores[fold.train],
                mode="binary",
                epochs=settings.c3d_epochs,
                seed=settings.seed + fold.index,
            )
            return {"fc6": c3d.extract_fc6(model, volumes)}

        with clock.stage(f"C3D fine-tuning, fold {fold.index + 1} (lung)") as state:
            fc6 = cached_arrays(
                settings.out / "features" / "c3d_finetuned", f"fold{fold.index}", key, run, state
            )["fc6"]
        return fc6[fold.train], fc6[fold.test]

    return FoldFeatures(compute, "fine-tuned")


# --- case tables -----------------------------------------------------------------------------


def lung_cases(store, cohort_dir: Path) -> pd.DataFrame:
    """Benign/malignant cases of the lung store, with their Eq. 5 values from the cohort."""
    index = store.index[store.index["label"].isin(list(LUNG_LABELS))].copy()
    cohort = pd.read_parquet(cohort_dir / "cohort.parquet")
    psi = cohort.set_index("nodule_id")[[f"psi_{t}" for t in TASKS]]
    index = index.join(psi, on="case_id")
    return index.reset_index(drop=True)


def naming_scores(store, case_ids, with_size: bool) -> np.ndarray:
    """Label-free cluster-naming prior (`size_density_score`, docs/architecture.md) on the
    central slices and their masks: lung nodules, equivalent diameter × density; MRI, the
    T2 brightness of the ROI (IPMN cysts hold fluid)."""
    from tumorchar.models.unsupervised import size_density_score

    slices = [np.asarray(store.load(c).slice2d) for c in case_ids]
    masks = [np.asarray(store.load(c).mask2d) for c in case_ids]
    scores = np.empty(len(case_ids))
    size = None
    if with_size:
        size = store.index.set_index("case_id").loc[case_ids, "equivalent_diameter_mm"]
        size = size.to_numpy(float)
    for i, (image, mask) in enumerate(zip(slices, masks, strict=True)):
        if not mask.any():  # an empty central mask: fall back to the whole slice
            mask = np.ones_like(mask)
        one_size = None if size is None else size[i : i + 1]
        scores[i] = size_density_score(image[None], mask[None], one_size)[0]
    return scores


# --- stage 4: experiments --------------------------------------------------------------------


def _run_cached(settings, name: str, key: str, run: Callable[[], ResultLog], clock):
    """Metrics and predictions of one experiment, reused while ``key`` is unchanged."""
    folder = settings.out / "experiments"
    metrics_path, predictions_path = folder / f"{name}.parquet", folder / f"{name}.pred.parquet"
    with clock.stage(f"experiment {name}") as state:
        if (
            metrics_path.is_file()
            and predictions_path.is_file()
            and _read_key(folder / f"{name}.json") == key
        ):
            state["cached"] = True
            return pd.read_parquet(metrics_path), pd.read_parquet(predictions_path)
        log = run()
        metrics, predictions = log.metrics_frame(), log.predictions_frame()
        write_parquet_atomic(metrics, metrics_path)
        write_parquet_atomic(predictions, predictions_path)
        _write_json(folder / f"{name}.json", {"key": key})
        return metrics, predictions


def _dataset_counts(dataset, labels, groups) -> dict[str, float]:
    labels = np.asarray(labels)
    return {
        "n_cases": len(labels),
        "n_positive": int((labels == 1).sum()),
        "n_negative": int((labels == 0).sum()),
        "n_patients": len(np.unique(groups)),
    }


def run_lung(settings, cohort_dir, clock, progress, weights, frames):
    from tumorchar.data.patches import PatchStore

    store = PatchStore(build_lung_store(settings, cohort_dir, clock))
    cases = lung_cases(store, cohort_dir)
    case_ids = cases["case_id"].tolist()
    labels = cases["label"].map(LUNG_LABELS).to_numpy(int)
    groups = cases["patient_id"].to_numpy()
    folds = make_folds(labels, groups, settings.protocol)
    frames["data"].add_metrics("lung", -1, _dataset_counts("lung", labels, groups))
    wanted = set(settings.experiments)
    base = (settings.protocol.as_dict(), store.content_hash, case_ids)

    gist = gist_features(settings, store, case_ids, clock, "lung")
    vgg, vgg_label = ({}, None)
    if wanted & {"E3", "E4"}:
        vgg, vgg_label = vgg_features(settings, store, case_ids, clock, "lung")
        weights["VGG16"] = vgg_label
    if "E1" in wanted:
        scores = cases[list(TASKS)].to_numpy(float)
        psi = cases[[f"psi_{t}" for t in TASKS]].to_numpy(float)
        psi = psi if np.isfinite(psi).all() else None
        pre, c3d_label = c3d_pretrained_features(settings, store, case_ids, clock)
        weights["C3D"] = c3d_label
        features = {
            "gist": gist,
            "c3d_pretrained": pre,
            "c3d_finetuned": c3d_finetuned_features(settings, store, case_ids, scores, clock),
            "diameter": cases["equivalent_diameter_mm"].to_numpy(float),
        }
        data = E1Data(np.array(case_ids), scores, labels, groups, psi)
        key = settings.key(
            "E1",
            base,
            settings.c3d_preset,
            settings.c3d_epochs,
            str(settings.c3d_weights),
            settings.seed,
        )
        frames["results"].append(
            _run_cached(
                settings,
                "E1_lung",
                key,
                lambda: run_e1(
                    data,
                    features,
                    folds,
                    ResultLog("E1", "lung", key),
                    default_methods(c3d_label),
                    on_step=progress,
                ),
                clock,
            )
        )
        other = replace(settings.protocol, by_patient=not settings.protocol.by_patient)
        other_folds = make_folds(labels, groups, other)
        split_methods = [
            m
            for m in default_methods(c3d_label)
            if m.feature in SPLIT_COMPARISON_FEATURES and "Lasso" not in m.name
        ]
        split_key = settings.key("E1-other-split", key, other.as_dict())
        frames["results"].append(
            _run_cached(
                settings,
                "E1_other_split_lung",
                split_key,
                lambda: run_e1(
                    data,
                    features,
                    other_folds,
                    ResultLog("E1-other-split", "lung", split_key),
                    split_methods,
                    on_step=progress,
                ),
                clock,
            )
        )
    hint = naming_scores(store, case_ids, with_size=True) if wanted & {"E2", "E3"} else None
    cdata = ClassData(np.array(case_ids), labels, groups, hint)
    _classification_experiments(
        settings, "lung", cdata, folds, gist, vgg, vgg_label, False, base, clock, progress, frames
    )
    return store


def run_mri(settings, clock, progress, weights, frames):
    from tumorchar.data.patches import PatchStore

    store = PatchStore(build_mri_store(settings, clock))
    index = store.index[store.index["label"].isin(list(MRI_LABELS))].reset_index(drop=True)
    case_ids = index["case_id"].tolist()
    labels = index["label"].map(MRI_LABELS).to_numpy(int)
    groups = index["patient_id"].to_numpy()
    folds = make_folds(labels, groups, settings.protocol)
    frames["data"].add_metrics("mri", -1, _dataset_counts("mri", labels, groups))
    base = (settings.protocol.as_dict(), store.content_hash, case_ids)
    gist = gist_features(settings, store, case_ids, clock, "mri")
    vgg, vgg_label = ({}, None)
    if set(settings.experiments) & {"E3", "E4"}:
        vgg, vgg_label = vgg_features(settings, store, case_ids, clock, "mri")
    hint = naming_scores(store, case_ids, with_size=False)
    cdata = ClassData(np.array(case_ids), labels, groups, hint)
    _classification_experiments(
        settings, "mri", cdata, folds, gist, vgg, vgg_label, True, base, clock, progress, frames
    )
    return store


def _classification_experiments(
    settings,
    dataset,
    data,
    folds,
    gist,
    vgg,
    vgg_label,
    oversample,
    base,
    clock,
    progress,
    frames,
):
    wanted = set(settings.experiments)
    common = (base, settings.seed, settings.rf_trees, vgg_label)
    if "E2" in wanted:
        key = settings.key("E2", common, settings.psvm_restarts)
        frames["results"].append(
            _run_cached(
                settings,
                f"E2_{dataset}",
                key,
                lambda: run_e2(
                    data,
                    gist,
                    folds,
                    ResultLog("E2", dataset, key),
                    seed=settings.seed,
                    on_step=progress,
                    rf_trees=settings.rf_trees,
                    psvm_restarts=settings.psvm_restarts,
                ),
                clock,
            )
        )
    if "E3" in wanted and vgg:
        key = settings.key("E3", common)
        frames["results"].append(
            _run_cached(
                settings,
                f"E3_{dataset}",
                key,
                lambda: run_e3(
                    data,
                    vgg,
                    folds,
                    ResultLog("E3", dataset, key),
                    vgg_label,
                    seed=settings.seed,
                    on_step=progress,
                ),
                clock,
            )
        )
    if "E4" in wanted:
        key = settings.key("E4", common, oversample)
        features = {"gist": gist, **{k: vgg[k] for k in ("fc7_relu", "fc8_relu") if k in vgg}}
        tags = (
            {}
            if vgg_label in (None, "imagenet")
            else {"fc7_relu": vgg_label, "fc8_relu": vgg_label}
        )
        frames["results"].append(
            _run_cached(
                settings,
                f"E4_{dataset}",
                key,
                lambda: run_e4(
                    data,
                    features,
                    folds,
                    ResultLog("E4", dataset, key),
                    oversample,
                    settings.seed,
                    tags,
                    settings.rf_trees,
                    on_step=progress,
                ),
                clock,
            )
        )


# --- the whole run ---------------------------------------------------------------------------


def reproduce(settings: ReproduceSettings, console=None) -> Path:
    """Run every stage and write results, predictions, run.json and the report into
    ``settings.out``; return the path of report.md."""
    from tumorchar.experiments.report import build_report

    settings.out.mkdir(parents=True, exist_ok=True)
    clock = StageClock(console)
    run_key = settings_hash(asdict(settings))
    frames = {"results": [], "data": ResultLog("data", "all", run_key)}
    weights: dict[str, str] = {}
    progress = _progress_printer(console)
    lung_store = mri_store = None
    if settings.lung != "none":
        cohort_dir = build_cohort(settings, clock)
        lung_store = run_lung(settings, cohort_dir, clock, progress, weights, frames)
    if settings.mri != "none":
        mri_store = run_mri(settings, clock, progress, weights, frames)

    metric_frames = [m for m, _ in frames["results"]]
    metric_frames += [frames["data"].metrics_frame(), clock.log(run_key).metrics_frame()]
    write_parquet_atomic(combine(metric_frames, RESULT_COLUMNS), settings.out / "results.parquet")
    write_parquet_atomic(
        combine([p for _, p in frames["results"]], PREDICTION_COLUMNS),
        settings.out / "predictions.parquet",
    )
    _write_json(settings.out / "run.json", _run_record(settings, lung_store, mri_store, weights))
    md_path, _ = build_report(settings.out)
    return md_path


def _run_record(settings, lung_store, mri_store, weights) -> dict:
    phantom = lung_store is not None and lung_store.is_phantom
    synthetic_mri = settings.mri == "synthetic"
    real = (lung_store is not None and not phantom) or settings.mri == "dir"
    source = "phantom" if (phantom or (synthetic_mri and not real)) else "real"
    notes = []
    if lung_store is not None and lung_store.note:
        notes.append(f"Lung patches: {lung_store.note}")
    if mri_store is not None and mri_store.note:
        notes.append(f"MRI patches: {mri_store.note}")
    if real and synthetic_mri:
        notes.append("The MRI rows come from the synthetic pancreas-MRI generator, not patients.")
    if settings.max_cases:
        notes.append(f"Subset: at most {settings.max_cases} lung nodules (stratified).")
    notes.extend(_size_settings_notes(settings))
    for name, store in (("lung", lung_store), ("MRI", mri_store)):
        if store is not None and store.failures:
            notes.append(
                f"{len(store.failures)} {name} case(s) failed and are left out "
                "(listed in run.json)."
            )
    return {
        "data_source": source,
        "lung_source": (
            ""
            if lung_store is None
            else ("phantom" if phantom else f"LIDC-IDRI CT from {settings.lidc_dir}")
        ),
        "mri_source": {"dir": f"MRI from {settings.mri_dir}", "synthetic": "synthetic", "none": ""}[
            settings.mri
        ],
        "protocol": settings.protocol.as_dict(),
        "weights": weights,
        "settings": {k: str(v) for k, v in asdict(replace(settings, out=Path("."))).items()},
        "notes": notes,
        "failures": {
            name: store.failures
            for name, store in (("lung", lung_store), ("mri", mri_store))
            if store is not None and store.failures
        },
    }


def _size_settings_notes(settings: ReproduceSettings) -> list[str]:
    """Plain-words notes on the settings that trade fidelity for time (the demo's)."""
    notes = []
    if settings.vgg_bf16:
        notes.append("VGG features computed in bfloat16 autocast (about 1 % relative error).")
    if settings.mri == "synthetic" and settings.mri_shape is not None:
        z, y, x = settings.mri_shape
        notes.append(f"Synthetic MRI volumes of {z}×{y}×{x} voxels (generator default 30×256×256).")
    if settings.psvm_restarts != 10:
        notes.append(f"∝SVM with {settings.psvm_restarts} random restarts per fit (default 10).")
    notes.append(
        f"C3D preset '{settings.c3d_preset}', fine-tuned {settings.c3d_epochs} epoch(s) per "
        f"training fold; random forests of {settings.rf_trees} trees."
    )
    return notes


def _progress_printer(console):
    if console is None:
        return None
    last = {"t": 0.0}

    def show(step: str) -> None:
        now = time.perf_counter()
        if now - last["t"] > 2.0:  # at most one line every 2 s
            console.print(f"  [dim]{step}")
            last["t"] = now

    return show
