"""`tumorchar reproduce`: cohort → patches → features → E1–E4 → report, with cached stages.

Output folder layout::

    OUT/cohort/            the LIDC cohort (tumorchar cohort)
    OUT/cohort-subset/     only with --max-cases: a stratified subset of it
    OUT/patches/lung/      lung patch store (phantom or real LIDC CT)
    OUT/patches/mri/       MRI patch store (the user's MRI or the synthetic generator)
    OUT/features/          feature arrays (.npz) + their keys (.json)
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
    mri_cases: int | None = None  # synthetic MRI subjects (default: the generator's)
    c3d_preset: str = "cpu"
    c3d_epochs: int = 3
    c3d_weights: Path | None = None  # Sports-1M c3d.pickle; None → seeded random init
    vgg_weights: Path | None = None  # torchvision VGG16 state dict; None → random init
    vgg_batch_size: int = 16
    rf_trees: int = 100
    seed: int = 0

    def key(self, *parts) -> str:
        return settings_hash({"parts": parts})


class StageClock:
    """Wall time of each stage and whether its output was reused from the cache."""

    def __init__(self, console=None):
        self.console = console
        self.records: list[tuple[str, float, bool]] = []

    @contextmanager
    def stage(self, name: str):
        state = {"cached": False}
        if self.console:
            self.console.rule(f"[bold]{name}")
        start = time.perf_counter()
        yield state
        seconds = time.perf_counter() - start
        self.records.append((name, seconds, state["cached"]))
        if self.console:
            how = "reused from cache" if state["cached"] else "done"
            self.console.print(f"[green]{name}: {how} in {seconds:.1f} s")

    def log(self, digest: str) -> ResultLog:
        log = ResultLog("stage", "all", digest)
        for name, seconds, cached in self.records:
            log.add_metrics(name, -1, {"seconds": seconds, "cached": float(cached)})
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
    import click

    from tumorchar.cli import app

    try:
        code = app(args, standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    if code and not (partial_ok and code == 1):
        raise RuntimeError(f"`tumorchar {' '.join(args)}` failed (exit code {code})")


def stratified_subset(table: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most ``n`` benign/malignant nodules, the class shares kept, whole patients drawn."""
    usable = table[table["label"].isin(list(LUNG_LABELS))]
    if n >= len(usable):
        return usable
    rng = np.random.default_rng(seed)
    picked = []
    for _, part in usable.groupby("label"):
        quota = round(n * len(part) / len(usable))
        patients = rng.permutation(part["patient_id"].unique())
        chosen = []
        for patient in patients:
            if len(chosen) >= quota:
                break
            chosen.extend(part.index[part["patient_id"] == patient][: quota - len(chosen)])
        picked.extend(chosen)
    return usable.loc[sorted(picked)]


def build_cohort(settings: ReproduceSettings, clock: StageClock) -> Path:
    out = settings.out / "cohort"
    with clock.stage("cohort"):
        _invoke(["cohort", "--out", str(out)])
    if settings.max_cases is None:
        return out
    from tumorchar.data.cohort_store import load_cohort, write_cohort

    subset_dir = settings.out / "cohort-subset"
    cohort = load_cohort(out)
    table = stratified_subset(cohort.table, settings.max_cases, settings.seed)
    key = settings.key("subset", settings.max_cases, settings.seed, table["nodule_id"].tolist())
    if _read_key(subset_dir / "subset.json") != key:
        masks = {nodule: cohort.mask(nodule) for nodule in table["nodule_id"]}
        write_cohort(table.reset_index(drop=True), masks, subset_dir)
        _write_json(subset_dir / "subset.json", {"key": key, "n": len(table)})
    return subset_dir


def build_lung_store(settings: ReproduceSettings, cohort_dir: Path, clock: StageClock) -> Path:
    out = settings.out / "patches" / "lung"
    with clock.stage(f"patches: lung ({settings.lung})"):
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
    return out


DEFAULT_MRI_CASES = 171  # the paper's cohort size (38 normal, 133 IPMN)


def build_mri_store(settings: ReproduceSettings, clock: StageClock) -> Path:
    """The MRI patch store: from ``settings.mri_dir`` (images in ``images/`` or the folder
    itself, plus ``rois.csv`` and ``labels.csv``), or from the synthetic generator."""
    out = settings.out / "patches" / "mri"
    with clock.stage(f"patches: MRI ({settings.mri})"):
        if settings.mri == "dir":
            source = Path(settings.mri_dir)
        else:
            source = settings.out / "synthetic-mri"
            n_cases = settings.mri_cases or DEFAULT_MRI_CASES
            key = settings.key("synthetic-mri", n_cases, settings.seed)
            if _read_key(source / "reproduce.json") != key:
                args = ["patches", "synthetic-mri", "--out", str(source)]
                _invoke(args + ["--n-cases", str(n_cases), "--seed", str(settings.seed)])
                _write_json(source / "reproduce.json", {"key": key})
        images = source / "images" if (source / "images").is_dir() else source
        for name in ("rois.csv", "labels.csv"):
            if not (source / name).is_file():
                raise FileNotFoundError(f"MRI folder {source} has no {name}")
        args = ["patches", "mri", "--images", str(images), "--rois", str(source / "rois.csv")]
        _invoke(args + ["--labels", str(source / "labels.csv"), "--out", str(out)], True)
    return out


# --- stage 3: features -----------------------------------------------------------------------


def _slices(store, case_ids) -> np.ndarray | list[np.ndarray]:
    try:
        return store.slices(case_ids)
    except ValueError:  # MRI ROIs of different sizes
        return [store.load(case_id).slice2d for case_id in case_ids]


def gist_features(settings, store, case_ids, clock, dataset: str) -> np.ndarray:
    from tumorchar.features.gist import gist

    key = settings.key("gist", store.content_hash, case_ids)
    with clock.stage(f"features: GIST ({dataset})") as state:
        arrays = cached_arrays(
            settings.out / "features",
            f"gist_{dataset}",
            key,
            lambda: {"gist": gist(_slices(store, case_ids))},
            state,
        )
    return arrays["gist"]


def vgg_features(settings, store, case_ids, clock, dataset: str) -> tuple[dict, str]:
    from tumorchar.features.vgg import extract_vgg, load_vgg16

    window = None if dataset == "mri" else "ct"
    weights = None if settings.vgg_weights is None else str(settings.vgg_weights)
    key = settings.key("vgg", weights, store.content_hash, case_ids, settings.seed, window)
    label_holder = {}

    def compute():
        model, label = load_vgg16(weights, allow_random_init=True, seed=settings.seed)
        label_holder["label"] = label
        kwargs = {"batch_size": settings.vgg_batch_size}
        if window is None:
            kwargs["intensity_window"] = None
        features = extract_vgg(model, _slices(store, case_ids), **kwargs)
        features["weights_label"] = np.array(label)
        return features

    with clock.stage(f"features: VGG16 fc7/fc8 ({dataset})") as state:
        arrays = cached_arrays(settings.out / "features", f"vgg_{dataset}", key, compute, state)
    label = str(arrays.pop("weights_label"))
    return arrays, label


def _c3d_model(settings, n_tasks: int):
    from tumorchar.features import c3d

    model = c3d.C3D(settings.c3d_preset, n_tasks=n_tasks, seed=settings.seed)
    if settings.c3d_weights is not None:
        c3d.load_sports1m(model, settings.c3d_weights)
        return model, "Sports-1M"
    return model, "random-init"


def c3d_pretrained_features(settings, volumes, store_hash, case_ids, clock) -> tuple:
    from tumorchar.features import c3d

    weights = None if settings.c3d_weights is None else str(settings.c3d_weights)
    key = settings.key("c3d-pre", settings.c3d_preset, weights, store_hash, case_ids, settings.seed)
    label = "Sports-1M" if settings.c3d_weights is not None else "random-init"
    with clock.stage(f"features: C3D fc6, {label} (lung)") as state:
        arrays = cached_arrays(
            settings.out / "features",
            "c3d_pretrained_lung",
            key,
            lambda: {"fc6": c3d.extract_fc6(_c3d_model(settings, len(TASKS))[0], volumes)},
            state,
        )
    return arrays["fc6"], label


def c3d_finetuned_features(settings, volumes, scores, store_hash, case_ids, clock):
    """`FoldFeatures` that fine-tune C3D on the training fold's volumes and 7 mean scores
    (binary at the mid-point pivot, as in the paper) and extract fc6 of both sides; each fold
    is cached on its own, keyed by its training cases."""
    from tumorchar.features import c3d

    weights = None if settings.c3d_weights is None else str(settings.c3d_weights)

    def compute(fold: Fold):
        train_ids = [case_ids[i] for i in fold.train]
        key = settings.key(
            "c3d-fine",
            settings.c3d_preset,
            settings.c3d_epochs,
            weights,
            store_hash,
            train_ids,
            case_ids,
            settings.seed,
        )

        def run():
            model, _ = _c3d_model(settings, len(TASKS))
            c3d.finetune(
                model,
                volumes[fold.train],
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


def lung_naming_hint(store, case_ids) -> np.ndarray:
    """Label-free prior for naming the clusters: size × density. Equivalent diameter (mm) ×
    mean attenuation inside the nodule relative to air, (HU + 1000) / 1000: larger, denser
    nodules are more often malignant."""
    index = store.index.set_index("case_id").loc[case_ids]
    density = np.empty(len(case_ids))
    for i, case_id in enumerate(case_ids):
        patch = store.load(case_id)
        inside = patch.volume[patch.mask] if patch.mask.any() else patch.volume
        density[i] = (float(inside.mean()) + 1000.0) / 1000.0
    return index["equivalent_diameter_mm"].to_numpy(float) * np.clip(density, 0.0, None)


def mri_naming_hint(store, case_ids) -> np.ndarray:
    """Label-free prior for MRI: T2 brightness of the ROI's pancreas mask relative to the
    whole ROI (IPMN cysts hold fluid and are T2-hyperintense)."""
    hint = np.empty(len(case_ids))
    for i, case_id in enumerate(case_ids):
        patch = store.load(case_id)
        image = np.asarray(patch.slice2d, float)
        inside = image[patch.mask2d] if patch.mask2d.any() else image
        hint[i] = float(inside.mean()) / (abs(float(image.mean())) + 1e-6)
    return hint


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
        with clock.stage("load lung volumes"):
            volumes = store.volumes(case_ids)
        pre, c3d_label = c3d_pretrained_features(
            settings, volumes, store.content_hash, case_ids, clock
        )
        weights["C3D"] = c3d_label
        features = {
            "gist": gist,
            "c3d_pretrained": pre,
            "c3d_finetuned": c3d_finetuned_features(
                settings, volumes, scores, store.content_hash, case_ids, clock
            ),
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
    if wanted & {"E2", "E3"}:
        hint = lung_naming_hint(store, case_ids)
    else:
        hint = None
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
    cdata = ClassData(np.array(case_ids), labels, groups, mri_naming_hint(store, case_ids))
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
        key = settings.key("E2", common)
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
