"""`tumorchar reproduce`: cohort → patches → features → E1–E4 → report, as a stage graph.

Output folder layout::

    OUT/cohort/            the LIDC cohort (`tumorchar.data.cohort.build_cohort_folder`)
    OUT/cohort-eval/       its benign and malignant nodules (with --max-cases, a subset)
    OUT/patches/lung/      lung patch store (phantom or real LIDC CT)
    OUT/patches/lung-maxslice/  with --lidc-maxslice: the real 2D store of the LIDC max-slice
                           crops (dataset "lung-maxslice": E1's 2D rows, E2, E3, E4, references)
    OUT/synthetic-mri/     without --mri: the synthetic generator's images and CSVs
    OUT/patches/mri/       MRI patch store (the user's MRI or the synthetic images)
    OUT/features/          FeatureStore folders; i3d_finetuned/fold<k>/ (or c3d_finetuned/)
                           per training fold
    OUT/experiments/<E>_<dataset>/   metric and prediction tables of each experiment
    OUT/results.parquet    every metric of every fold, stage times, dataset counts
    OUT/predictions.parquet
    OUT/run.json           data source, protocol, weights labels, notes
    OUT/report.md, OUT/report.html, OUT/figures/

Every step is a `stages.Stage`: its key is the digest of its own settings and of the keys of
the stages it consumes (features by their recipe, a weights file by its content, a patch
store by its content hash), so a rerun reuses exactly what is still valid. Every learned
step is fitted inside the training folds (see `protocol`).

Adding a dataset or an experiment = declaring its stages in `_lung` / `_mri` /
`_classification` (one `Stage(...)` and ``runner.run``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from tumorchar._io import save_npz_atomic, write_json_atomic, write_parquet_atomic
from tumorchar.experiments.cases import (
    Cases,
    evaluation_table,
    lung_cases,
    mri_cases,
    naming_scores,
    scores_and_psi,
)
from tumorchar.experiments.protocol import Fold, FoldFeatures, Protocol, make_folds
from tumorchar.experiments.results import (
    PREDICTION_COLUMNS,
    RESULT_COLUMNS,
    ResultLog,
    combine,
    settings_hash,
)
from tumorchar.experiments.stages import Reused, Stage, StageContext, StageRunner
from tumorchar.vocab import Weights

EXPERIMENTS = ("E1", "E2", "E3", "E4")
# E1 methods rerun with the other split (by patient ↔ plain stratified) to show what splitting
# a patient's nodules across folds does; the features that need no fine-tuning keep it cheap.
SPLIT_COMPARISON_FEATURES = ("gist", "c3d_pretrained", "i3d_pretrained", "diameter", "attributes")
DEFAULT_MRI_CASES = 171  # the paper's cohort size (38 normal, 133 IPMN)


@dataclass(frozen=True)
class ReproduceSettings:
    """Everything that shapes a reproduction run."""

    out: Path
    lung: str = "phantom"  # "phantom" | "lidc" | "none"
    lidc_dir: Path | None = None
    lidc_maxslice: Path | None = None  # LIDC max-slice crops (real 2D CT), see data.maxslice
    mri: str = "synthetic"  # "synthetic" | "dir" | "none"
    mri_dir: Path | None = None
    protocol: Protocol = field(default_factory=Protocol)
    experiments: tuple[str, ...] = EXPERIMENTS
    max_cases: int | None = None  # stratified subset of the lung cohort (tests, quick looks)
    mri_cases: int | None = None  # synthetic MRI subjects (default: the paper's 171)
    mri_shape: tuple[int, int, int] | None = None  # synthetic volume (z, y, x); None: default
    # E1's 3D network: "i3d" (Kinetics-400, default) or "c3d" (Sports-1M with --c3d-weights;
    # without a weights file only when random initialization is allowed).
    network3d: str = "i3d"
    i3d_setting: str = "cpu"  # clip size and fine-tuning schedule (`i3d.SETTINGS`)
    i3d_epochs: int | None = None  # fine-tuning epochs per fold; None: the setting's
    c3d_preset: str = "cpu"
    c3d_epochs: int = 3
    c3d_weights: Path | None = None  # Sports-1M c3d.pickle → E1's 3D rows use C3D
    vgg_weights: Path | None = None  # torchvision VGG16 state dict; None → no VGG rows
    # Networks without weights run at their seeded random initialization instead of
    # stopping; their rows are marked as not comparable with the paper.
    allow_random_init: bool = False
    vgg_batch_size: int = 16
    vgg_bf16: bool = False  # bfloat16 autocast for VGG on CPU (~1 % feature error, faster)
    rf_trees: int = 100
    psvm_restarts: int = 10
    seed: int = 0


@dataclass(frozen=True)
class ExperimentTables:
    """What an experiment stage produces: its metric rows and test-fold predictions."""

    metrics: pd.DataFrame
    predictions: pd.DataFrame


def _experiment_stage(name: str, inputs, settings, run: Callable[[dict, str], ResultLog]):
    """A cached experiment: ``run(inputs, key)`` fills a `ResultLog` whose rows carry the
    stage's key (the whole chain of settings behind them) as ``settings_hash``."""

    def compute(values, context: StageContext) -> ExperimentTables:
        log = run(values, context.key[:16])
        tables = ExperimentTables(log.metrics_frame(), log.predictions_frame())
        write_parquet_atomic(tables.metrics, context.folder / "metrics.parquet")
        write_parquet_atomic(tables.predictions, context.folder / "predictions.parquet")
        return tables

    def load(folder: Path) -> ExperimentTables:
        return ExperimentTables(
            pd.read_parquet(folder / "metrics.parquet"),
            pd.read_parquet(folder / "predictions.parquet"),
        )

    return Stage(
        f"experiment {name}",
        compute,
        settings,
        tuple(inputs),
        load=load,
        folder=f"experiments/{name}",
    )


class Reproduction:
    """One run: declares the stages, runs them with a `StageRunner`, keeps what the report
    needs (experiment tables, dataset counts, weights labels, the stores)."""

    def __init__(self, settings: ReproduceSettings, console=None):
        self.settings = settings
        self.runner = StageRunner(settings.out, console)
        self.tables: list[ExperimentTables] = []
        self.counts: dict[str, dict[str, float]] = {}
        self.weights: dict[str, str] = {}
        self.stores: dict[str, object] = {}
        self._cohort: str | None = None
        self.on_step = _progress_printer(console)

    # --- helpers ------------------------------------------------------------------------

    def key(self, stage_name: str) -> str:
        return self.runner.keys[stage_name]

    def _log(self, experiment: str, dataset: str, key: str) -> ResultLog:
        """A result log whose rows say where their cases come from."""
        store = self.stores.get(dataset)
        if store is None or not store.is_phantom:
            source = "real"
        else:
            source = "phantom" if dataset == "lung" else "synthetic"
        return ResultLog(experiment, dataset, key, data_source=source)

    def _experiment(self, name, inputs, settings, run) -> None:
        self.tables.append(self.runner.run(_experiment_stage(name, inputs, settings, run)))

    def _features(self, title: str, patches: str, recipe) -> str:
        from tumorchar.features.store import FeatureStore

        features = FeatureStore(self.settings.out / "features")

        def compute(values, _folder):
            store = values[patches]
            cached = recipe.is_cached(features, store)
            sets = recipe.run(features, store)
            return Reused(sets) if cached else sets

        self.runner.run(Stage(title, compute, recipe.stage_settings(), (patches,)))
        return title

    # --- stages -------------------------------------------------------------------------

    def cohort(self) -> str:
        """The full LIDC cohort, then the evaluation cohort (benign and malignant nodules,
        optionally a stratified subset), so patches and features are made for those only;
        declared once, shared by the lung datasets."""
        if self._cohort is None:
            self._cohort = self._declare_cohort()
        return self._cohort

    def _declare_cohort(self) -> str:
        from tumorchar.data.cohort import build_cohort_folder, cohort_settings

        s = self.settings

        def full(_values, _folder):
            result = build_cohort_folder(s.out / "cohort")
            return Reused(result) if result.reused else result

        self.runner.run(
            Stage("cohort", full, cohort_settings(), fingerprint=lambda r: r.database_sha256)
        )

        def evaluation(values, context: StageContext) -> Path:
            folder = context.folder
            from tumorchar.data.cohort_store import load_cohort, write_cohort

            cohort = load_cohort(values["cohort"].folder)
            table = evaluation_table(cohort.table, s.max_cases, s.seed)
            masks = {nodule: cohort.mask(nodule) for nodule in table["nodule_id"]}
            write_cohort(table.reset_index(drop=True), masks, folder)
            return folder

        self.runner.run(
            Stage(
                "cohort-eval",
                evaluation,
                {"max_cases": s.max_cases, "seed": s.seed},
                ("cohort",),
                load=lambda folder: folder,
                folder="cohort-eval",
            )
        )
        return "cohort-eval"

    def lung_store(self, cohort: str) -> str:
        from tumorchar.data.ct_patches import build_lidc_store, build_phantom_store

        s = self.settings
        name = f"patches: lung ({s.lung})"
        out = s.out / "patches" / "lung"

        def compute(values, _folder):
            if s.lung == "phantom":
                return _store_build(out, build_phantom_store, values[cohort], out)
            return _store_build(out, build_lidc_store, values[cohort], s.lidc_dir, out)

        settings = {"source": s.lung, "lidc_dir": None if s.lidc_dir is None else str(s.lidc_dir)}
        self.runner.run(Stage(name, compute, settings, (cohort,), fingerprint=_content_hash))
        return name

    def maxslice_store(self, cohort: str) -> str:
        """The real 2D store of the LIDC max-slice crops, one crop per evaluation nodule."""
        from tumorchar.data.maxslice import build_maxslice_store

        s = self.settings
        name = "patches: lung (LIDC max-slice crops, 2D)"
        out = s.out / "patches" / "lung-maxslice"

        def compute(values, _folder):
            crops = Path(s.lidc_maxslice)
            return _store_build(out, build_maxslice_store, crops, values[cohort], out)

        settings = {"crops": str(s.lidc_maxslice)}
        self.runner.run(Stage(name, compute, settings, (cohort,), fingerprint=_content_hash))
        return name

    def mri_store(self) -> str:
        from tumorchar.data.mri import MRISettings, build_mri_store

        s = self.settings
        inputs: tuple[str, ...] = ()
        if s.mri == "synthetic":
            inputs = (self._synthetic_mri(),)
        name = f"patches: MRI ({s.mri})"
        out = s.out / "patches" / "mri"

        def compute(values, _folder):
            source = values[inputs[0]] if inputs else Path(s.mri_dir)
            images = source / "images" if (source / "images").is_dir() else source
            for csv_name in ("rois.csv", "labels.csv"):
                if not (source / csv_name).is_file():
                    raise FileNotFoundError(f"MRI folder {source} has no {csv_name}")
            rois, labels = source / "rois.csv", source / "labels.csv"
            return _store_build(out, build_mri_store, images, rois, labels, out, MRISettings())

        settings = {"source": s.mri, "mri_dir": None if s.mri_dir is None else str(s.mri_dir)}
        self.runner.run(Stage(name, compute, settings, inputs, fingerprint=_content_hash))
        return name

    def _synthetic_mri(self) -> str:
        from tumorchar.data.synthetic_mri import write_synthetic_mri

        s = self.settings
        n_cases = s.mri_cases or DEFAULT_MRI_CASES
        shape = {} if s.mri_shape is None else {"shape": tuple(s.mri_shape)}

        def compute(_values, context: StageContext) -> Path:
            folder = context.folder
            write_synthetic_mri(folder, n_cases=n_cases, seed=s.seed, **shape)
            return folder

        settings = {"n_cases": n_cases, "seed": s.seed, "shape": s.mri_shape}
        self.runner.run(
            Stage("synthetic MRI", compute, settings, load=lambda f: f, folder="synthetic-mri")
        )
        return "synthetic MRI"

    def cases(self, dataset: str, patches: str, cohort: str | None) -> str:
        protocol = self.settings.protocol
        name = f"cases: {dataset}"

        def compute(values, _folder) -> Cases:
            store = values[patches]
            if dataset.startswith("lung"):
                cases = lung_cases(store, values[cohort], protocol)
                return replace(cases, dataset=dataset)
            return mri_cases(store, protocol)

        inputs = (patches,) if cohort is None else (patches, cohort)
        settings = {"protocol": protocol.as_dict()}
        cases = self.runner.run(Stage(name, compute, settings, inputs, recorded=False))
        self.counts[dataset] = cases.counts()
        store = self.runner.values[patches]
        self.stores[dataset] = store
        return name

    # --- datasets -----------------------------------------------------------------------

    def lung(self) -> None:
        from tumorchar.features.recipes import gist_recipe

        wanted = set(self.settings.experiments)
        cohort = self.cohort()
        patches = self.lung_store(cohort)
        cases_name = self.cases("lung", patches, cohort)
        store = self.runner.values[patches]
        gist = self._features("features: GIST (lung)", patches, gist_recipe(store))
        deep = self._deep_2d("lung", patches, store) if wanted & {"E3", "E4"} else {}
        if "E1" in wanted:
            if self._use_c3d():
                self._e1_c3d(cases_name, patches, gist, store)
            else:
                self._e1_i3d(cases_name, patches, gist, store)
        self._classification("lung", cases_name, patches, gist, deep, oversample=False)
        self._reference("lung", cases_name, patches)

    def _use_c3d(self) -> bool:
        s = self.settings
        if s.network3d not in ("i3d", "c3d"):
            raise ValueError(f"network3d must be 'i3d' or 'c3d', got {s.network3d!r}")
        if s.network3d == "c3d" and s.c3d_weights is None and not s.allow_random_init:
            raise FileNotFoundError(
                "C3D needs Sports-1M weights (--c3d-weights c3d.pickle); to run it from its "
                "random initialization anyway, pass --allow-random-init (its rows are then "
                "marked as not comparable with the paper)"
            )
        return s.c3d_weights is not None or s.network3d == "c3d"

    def _e1_c3d(self, cases_name, patches, gist, store) -> None:
        from tumorchar.features.recipes import c3d_recipe

        s = self.settings
        recipe = c3d_recipe(
            store,
            preset=s.c3d_preset,
            weights=s.c3d_weights,
            allow_random_init=s.c3d_weights is None and s.allow_random_init,
            seed=s.seed,
            batch_size=64,
        )
        label = recipe.weights.display
        pre = self._features(f"features: C3D fc6, {label} (lung)", patches, recipe)
        self.weights["C3D"] = _weights_line(recipe, s.c3d_weights)
        self._e1(cases_name, patches, gist, pre, recipe)

    def _e1_i3d(self, cases_name, patches, gist, store) -> None:
        from tumorchar.features.recipes import i3d_recipe

        s = self.settings
        recipe = i3d_recipe(
            store, setting=s.i3d_setting, allow_random_init=s.allow_random_init, seed=s.seed
        )
        label = recipe.weights.display
        pre = self._features(f"features: I3D Mixed_5c, {label} (lung)", patches, recipe)
        self.weights["I3D"] = _weights_line(recipe)
        self._e1(cases_name, patches, gist, pre, recipe)

    def _deep_2d(self, dataset: str, patches: str, store) -> dict:
        """Deep features of the central slices for E3 / E4: EfficientNet-Lite0 (ImageNet),
        I3D static clips (Kinetics-400), and VGG16 with the user's ImageNet file (or at its
        random initialization when asked for). {network: (stage name, weights label)}."""
        from tumorchar.features.recipes import (
            efficientnet_recipe,
            i3d_static_recipe,
            vgg_recipe,
        )

        s = self.settings
        deep: dict[str, tuple[str, str]] = {}
        plan = [
            ("efficientnet-lite0", "EfficientNet-Lite0", efficientnet_recipe, {}),
            ("i3d-static", "I3D static clips", i3d_static_recipe, {}),
        ]
        if s.vgg_weights is not None or s.allow_random_init:
            options = {"weights": s.vgg_weights, "bf16": s.vgg_bf16,
                       "inference_batch": s.vgg_batch_size}  # fmt: skip
            plan.append(("vgg16", "VGG16 fc7/fc8", vgg_recipe, options))
        for network, title, build, options in plan:
            recipe = build(store, allow_random_init=s.allow_random_init, seed=s.seed, **options)
            label = recipe.weights.display
            name = self._features(f"features: {title}, {label} ({dataset})", patches, recipe)
            deep[network] = (name, recipe.weights.value)
            key = {"efficientnet-lite0": "EfficientNet-Lite0", "i3d-static": "I3D",
                   "vgg16": "VGG16"}[network]  # fmt: skip
            self.weights.setdefault(key, _weights_line(recipe, options.get("weights")))
        return deep

    def lung_maxslice(self) -> None:
        """The REAL 2D dataset: every experiment 2D data supports (E1's 2D rows, E2, E3, E4)
        and the reference rows, on the LIDC max-slice crops."""
        from tumorchar.features.recipes import gist_recipe

        dataset = "lung-maxslice"
        wanted = set(self.settings.experiments)
        patches = self.maxslice_store(self.cohort())
        cases_name = self.cases(dataset, patches, self.cohort())
        store = self.runner.values[patches]
        gist = self._features("features: GIST (lung, max-slice)", patches, gist_recipe(store))
        deep = self._deep_2d(dataset, patches, store) if wanted & {"E1", "E3", "E4"} else {}
        if "E1" in wanted and deep:
            self._e1_2d(dataset, cases_name, patches, gist, deep)
        self._classification(dataset, cases_name, patches, gist, deep, oversample=False)
        self._reference(dataset, cases_name, patches)

    def mri(self) -> None:
        from tumorchar.features.recipes import gist_recipe

        patches = self.mri_store()
        cases_name = self.cases("mri", patches, None)
        store = self.runner.values[patches]
        gist = self._features("features: GIST (mri)", patches, gist_recipe(store))
        deep = {}
        if set(self.settings.experiments) & {"E3", "E4"}:
            deep = self._deep_2d("mri", patches, store)
        self._classification("mri", cases_name, patches, gist, deep, oversample=True)

    # --- experiments --------------------------------------------------------------------

    def _e1(self, cases_name, patches, gist, pre, c3d) -> None:
        """E1 with the 3D network of recipe ``c3d`` (I3D or C3D) in the 3D-CNN rows."""
        from tumorchar.experiments.e1_mtl import E1Data, default_methods, run_e1
        from tumorchar.features import i3d

        s = self.settings
        is_i3d = c3d.name == "i3d"
        network = "i3d" if is_i3d else "c3d"
        methods = default_methods(c3d.weights.display, network)
        if is_i3d:
            epochs = s.i3d_epochs or i3d.get_setting(s.i3d_setting).epochs
            finetune = {"setting": s.i3d_setting, "epochs": epochs, "seed": s.seed,
                        "mode": "binary"}  # fmt: skip
        else:
            finetune = {"epochs": s.c3d_epochs, "seed": s.seed, "mode": "binary"}
        inputs = (cases_name, patches, gist, pre)

        def features_of(values) -> tuple[E1Data, dict]:
            cases: Cases = values[cases_name]
            ids = cases.case_ids
            scores, psi = scores_and_psi(cases)
            if is_i3d:
                outputs = _aligned_outputs(values[pre], ids)
                pretrained = outputs["mixed_5c"]
                finetuned = self._finetuned_i3d(
                    values[patches], ids, scores, c3d, outputs.get("endpoint"), finetune
                )
            else:
                pretrained = _aligned(values[pre], ids)
                finetuned = self._finetuned(values[patches], ids, scores, c3d, finetune)
            features = {
                "gist": _aligned(values[gist], ids),
                f"{network}_pretrained": pretrained,
                f"{network}_finetuned": finetuned,
                "diameter": cases.table["equivalent_diameter_mm"].to_numpy(float),
            }
            data = E1Data(np.array(ids), scores, cases.labels, cases.groups, psi)
            return data, features

        def run(values, key):
            data, features = features_of(values)
            log = self._log("E1", "lung", key)
            return run_e1(data, features, values[cases_name].folds, log, methods, self.on_step)

        names = [m.name for m in methods]
        self._experiment("E1_lung", inputs, {"methods": names, "finetune": finetune}, run)

        other = replace(s.protocol, by_patient=not s.protocol.by_patient)
        split_methods = [
            m
            for m in methods
            if m.feature in SPLIT_COMPARISON_FEATURES and m.recipe.name != "lasso"
        ]

        def run_other(values, key):
            data, features = features_of(values)
            folds = make_folds(data.labels, data.groups, other)
            log = self._log("E1-other-split", "lung", key)
            return run_e1(data, features, folds, log, split_methods, self.on_step)

        settings = {"methods": [m.name for m in split_methods], "protocol": other.as_dict()}
        self._experiment("E1_other_split_lung", inputs, settings, run_other)

    def _finetuned_i3d(self, store, case_ids, scores, recipe, endpoint, finetune):
        """`FoldFeatures` that fine-tune I3D on the training fold only (7 tasks, binary at the
        mid-point pivots) and take pooled Mixed_5c of both sides. The `cpu` setting trains the
        top block on the endpoint cached by the recipe (frozen, label-free trunk: one pass
        for all folds); `full` trains every layer on clips made batch by batch. Each fold is a
        nested stage keyed by its training cases."""
        from tumorchar.features import i3d
        from tumorchar.features.recipes import volumes_of

        cfg = i3d.get_setting(finetune["setting"])
        window = {"intensity_window": None} if store.source == "mri" else {}

        def clips_of(rows):
            ids = [case_ids[i] for i in rows]
            return i3d.volumes_to_clips(volumes_of(store, ids), cfg.frames, cfg.size, **window)

        def compute(fold: Fold):
            train_ids = [case_ids[i] for i in fold.train]

            def run(_values, context: StageContext):
                model = recipe.network()
                feats = i3d.finetune_and_pool(
                    model, clips_of, len(case_ids), fold.train, scores, setting=cfg,
                    endpoint=endpoint, mode=finetune["mode"], epochs=finetune["epochs"],
                    seed=finetune["seed"] + fold.index,
                )  # fmt: skip
                save_npz_atomic(context.folder / "features.npz", {"mixed_5c": feats})
                return feats

            def load(folder: Path):
                with np.load(folder / "features.npz", allow_pickle=False) as data:
                    return data["mixed_5c"]

            settings = {
                "recipe": recipe.stage_settings(),
                "finetune": finetune,
                "store": store.content_hash,
                "train_ids": train_ids,
                "case_ids": list(case_ids),
            }
            title = f"I3D fine-tuning, fold {fold.index + 1} (lung)"
            folder = f"features/i3d_finetuned/fold{fold.index}"
            feats = self.runner.run(Stage(title, run, settings, load=load, folder=folder))
            return feats[fold.train], feats[fold.test]

        return FoldFeatures(compute, "fine-tuned")

    def _e1_2d(self, dataset, cases_name, patches, gist, deep) -> None:
        """E1's 2D rows (`e1_mtl.two_d_methods`): GIST and the first deep 2D network of
        `_deep_2d` (EfficientNet-Lite0 pooled, else VGG16 fc7, after the activation) with
        Lasso, Ridge, trace-norm and the proposed MTL, and the reference rows (size, HU
        statistics inside the outline, attributes)."""
        from tumorchar.experiments.e1_mtl import E1Data, run_e1, two_d_methods
        from tumorchar.experiments.reference import hu_statistics

        outputs = {
            "efficientnet-lite0": ("pooled", "EfficientNet-Lite0 pooled"),
            "vgg16": ("fc7_relu", "VGG16 fc7"),
            "i3d-static": (None, "I3D static"),
        }
        network = next(n for n in ("efficientnet-lite0", "vgg16", "i3d-static") if n in deep)
        stage, weights = deep[network]
        output, title = outputs[network]
        methods = two_d_methods(title, weights)
        inputs = (cases_name, patches, gist, stage)

        def run(values, key):
            cases: Cases = values[cases_name]
            store, ids = values[patches], cases.case_ids
            scores, psi = scores_and_psi(cases)
            features = {
                "gist": _aligned(values[gist], ids),
                "deep2d": _deep_output(values[stage], ids, output),
                "diameter": cases.table["equivalent_diameter_mm"].to_numpy(float),
                "hu_stats": hu_statistics(store.slices(ids), store.masks2d(ids)),
            }
            data = E1Data(np.array(ids), scores, cases.labels, cases.groups, psi)
            log = self._log("E1", dataset, key)
            return run_e1(data, features, cases.folds, log, methods, self.on_step)

        settings = {"methods": [m.name for m in methods]}
        self._experiment(f"E1_{dataset}", inputs, settings, run)

    def _reference(self, dataset, cases_name, patches) -> None:
        """Reference rows beside the methods (`experiments.reference`): benign/malignant from
        size alone, from the HU statistics inside the mask, from the six attributes; the same
        folds as the experiments."""
        from tumorchar.experiments.reference import reference_data, run_reference

        def run(values, key):
            cases: Cases = values[cases_name]
            data = reference_data(values[patches], case_ids=cases.case_ids)
            log = self._log("reference", dataset, key)
            return run_reference(data, cases.folds, log, seed=self.settings.seed)

        self._experiment(
            f"reference_{dataset}", (cases_name, patches), {"seed": self.settings.seed}, run
        )

    def _finetuned(self, store, case_ids, scores, c3d, finetune) -> FoldFeatures:
        """`FoldFeatures` that fine-tune C3D on the training fold's volumes and 7 mean scores
        (binary at the mid-point pivot, as in the paper) and extract fc6 of both sides; each
        fold is a nested stage of its own, keyed by its training cases."""
        from tumorchar.features import c3d as c3d_net

        volumes: list[np.ndarray] = []

        def compute(fold: Fold):
            train_ids = [case_ids[i] for i in fold.train]

            def run(_values, context: StageContext):
                folder = context.folder
                if not volumes:  # loaded once, on the first fold that is not cached
                    volumes.extend(store.load(case_id).volume for case_id in case_ids)
                model = c3d.network()
                c3d_net.finetune(
                    model,
                    [volumes[i] for i in fold.train],
                    scores[fold.train],
                    mode=finetune["mode"],
                    epochs=finetune["epochs"],
                    seed=finetune["seed"] + fold.index,
                )
                fc6 = c3d_net.extract_fc6(model, volumes)
                save_npz_atomic(folder / "fc6.npz", {"fc6": fc6})
                return fc6

            def load(folder: Path):
                with np.load(folder / "fc6.npz", allow_pickle=False) as data:
                    return data["fc6"]

            settings = {
                "recipe": c3d.stage_settings(),
                "finetune": finetune,
                "store": store.content_hash,
                "train_ids": train_ids,
                "case_ids": list(case_ids),
            }
            title = f"C3D fine-tuning, fold {fold.index + 1} (lung)"
            folder = f"features/c3d_finetuned/fold{fold.index}"
            stage = Stage(title, run, settings, load=load, folder=folder)
            fc6 = self.runner.run(stage)
            return fc6[fold.train], fc6[fold.test]

        return FoldFeatures(compute, "fine-tuned")

    def _classification(self, dataset, cases_name, patches, gist, deep, oversample) -> None:
        """E2 (GIST), E3 (deep features) and E4 (supervised upper bounds) of one dataset;
        ``deep`` = {network: (feature stage, weights label)} (`_deep_2d`)."""
        from tumorchar.experiments.e2_unsupervised import run_e2
        from tumorchar.experiments.e3_deep_features import run_e3
        from tumorchar.experiments.e4_upper_bound import ClassData, run_e4

        s = self.settings
        wanted = set(s.experiments)
        deep_stages = tuple(stage for stage, _ in deep.values())

        @cache
        def hints() -> np.ndarray:  # the label-free naming prior, computed once if needed
            values = self.runner.values
            ids = values[cases_name].case_ids
            return naming_scores(values[patches], ids, with_size=dataset.startswith("lung"))

        def data(values, with_hint: bool) -> ClassData:
            cases: Cases = values[cases_name]
            hint = hints() if with_hint else None
            return ClassData(np.array(cases.case_ids), cases.labels, cases.groups, hint)

        def folds(values) -> list[Fold]:
            return values[cases_name].folds

        if "E2" in wanted:

            def run2(values, key):
                ids = values[cases_name].case_ids
                log = self._log("E2", dataset, key)
                return run_e2(
                    data(values, True), _aligned(values[gist], ids), folds(values), log,
                    seed=s.seed, on_step=self.on_step, rf_trees=s.rf_trees,
                    psvm_restarts=s.psvm_restarts,
                )  # fmt: skip

            settings = {"seed": s.seed, "rf_trees": s.rf_trees, "psvm_restarts": s.psvm_restarts}
            self._experiment(f"E2_{dataset}", (cases_name, patches, gist), settings, run2)
        if "E3" in wanted and deep:

            def run3(values, key):
                ids = values[cases_name].case_ids
                log = self._log("E3", dataset, key)
                for network, (stage, label) in deep.items():
                    run_e3(
                        data(values, True), _aligned_outputs(values[stage], ids), folds(values),
                        log, label, seed=s.seed, on_step=self.on_step, network=network,
                    )  # fmt: skip
                return log

            inputs = (cases_name, patches, *deep_stages)
            self._experiment(f"E3_{dataset}", inputs, {"seed": s.seed}, run3)
        if "E4" in wanted:
            inputs = (cases_name, gist, *deep_stages)
            weights_of = {}  # feature → weights label of its network
            for network, (_, label) in deep.items():
                keys = ("fc7_relu", "fc8_relu") if network == "vgg16" else _E4_KEYS[network]
                weights_of |= dict.fromkeys(keys, label)

            def run4(values, key):
                ids = values[cases_name].case_ids
                features = {"gist": _aligned(values[gist], ids)}
                for network, (stage, _) in deep.items():
                    outputs = _aligned_outputs(values[stage], ids)
                    if network == "vgg16":
                        features |= {k: outputs[k] for k in ("fc7_relu", "fc8_relu")}
                    else:
                        features |= {k: outputs[k.split("/")[1]] for k in _E4_KEYS[network]}
                log = self._log("E4", dataset, key)
                return run_e4(
                    data(values, False), features, folds(values), log, oversample, s.seed,
                    weights_of, s.rf_trees, on_step=self.on_step,
                )  # fmt: skip

            settings = {"seed": s.seed, "rf_trees": s.rf_trees, "oversample": oversample}
            self._experiment(f"E4_{dataset}", inputs, settings, run4)

    # --- the whole run ------------------------------------------------------------------

    def run(self) -> Path:
        from tumorchar.lock import FolderLock

        check_inputs(self.settings)  # weights and presets: before minutes of stages
        with FolderLock(self.settings.out):  # one writer per output folder
            return self._run()

    def _run(self) -> Path:
        from tumorchar.experiments.report import build_report

        s = self.settings
        if s.lung != "none":
            self.lung()
        if s.lidc_maxslice is not None:
            self.lung_maxslice()
        if s.mri != "none":
            self.mri()
        run_key = settings_hash(asdict(s))
        data_log = ResultLog("data", "all", run_key)
        for dataset, counts in self.counts.items():
            data_log.add_metrics(dataset, -1, counts)
        metric_frames = [t.metrics for t in self.tables]
        metric_frames += [data_log.metrics_frame(), self._stage_log(run_key).metrics_frame()]
        write_parquet_atomic(combine(metric_frames, RESULT_COLUMNS), s.out / "results.parquet")
        predictions = combine([t.predictions for t in self.tables], PREDICTION_COLUMNS)
        write_parquet_atomic(predictions, s.out / "predictions.parquet")
        record = _run_record(s, self.stores.get("lung"), self.stores.get("mri"), self.weights)
        record.update(_maxslice_record(self.stores.get("lung-maxslice")))
        write_json_atomic(s.out / "run.json", record)
        md_path, _ = build_report(s.out)
        return md_path

    def _stage_log(self, run_key: str) -> ResultLog:
        log = ResultLog("stage", "all", run_key)
        for record in self.runner.records:
            metrics = {
                "seconds": record.seconds,
                "cached": float(record.cached),
                "nested": float(record.nested),
            }
            log.add_metrics(record.name, -1, metrics)
        return log


def check_inputs(settings: ReproduceSettings) -> None:
    """Refuse, before the first stage, what would otherwise fail minutes into the run: an
    unknown C3D preset, Sports-1M weights with a preset they do not fit, weights files that
    do not load into their network."""
    from tumorchar.errors import StageError
    from tumorchar.features import c3d

    if settings.c3d_preset not in c3d.PRESETS:
        raise StageError(
            f"unknown C3D preset {settings.c3d_preset!r}; use one of {', '.join(c3d.PRESETS)}"
        )
    try:
        if settings.c3d_weights is not None and settings.lung != "none":
            c3d.load_sports1m(c3d.C3D(settings.c3d_preset), settings.c3d_weights)
        if settings.vgg_weights is not None:
            from tumorchar.features import vgg

            vgg.load_vgg16(settings.vgg_weights)
    except (FileNotFoundError, ValueError, RuntimeError, KeyError) as error:
        raise StageError(f"cannot use the given weights: {error}") from None


def reproduce(settings: ReproduceSettings, console=None) -> Path:
    """Run every stage and write results, predictions, run.json and the report into
    ``settings.out``; return the path of report.md."""
    return Reproduction(settings, console).run()


# --- small helpers -------------------------------------------------------------------------


def _store_build(out: Path, build, *args):
    """Build or resume a patch store; `Reused` when its content did not change. A batch
    with failed cases goes on (the store lists them; run.json repeats them)."""
    from tumorchar.data.patches import PatchStore

    before = _store_hash(out)
    build(*args)
    # the build just ran to its end: a store with failed cases is used, and run.json lists them
    store = PatchStore(out, allow_incomplete=True)
    return Reused(store) if before is not None and before == store.content_hash else store


def _store_hash(folder: Path) -> str | None:
    import json

    try:
        return json.loads((folder / "store.json").read_text()).get("content_hash")
    except (OSError, ValueError):
        return None


def _content_hash(store) -> str:
    return store.content_hash


def _aligned_outputs(outputs: dict, case_ids: list[str]) -> dict[str, np.ndarray]:
    """Rows of each `FeatureSet` in the order of ``case_ids`` (all must be present)."""
    aligned = {}
    for name, feature_set in outputs.items():
        row = {case_id: i for i, case_id in enumerate(feature_set.case_ids)}
        missing = [c for c in case_ids if c not in row]
        if missing:
            raise ValueError(f"{name}: no features for case(s) {', '.join(missing[:5])}")
        aligned[name] = feature_set.values[[row[c] for c in case_ids]]
    return aligned


def _deep_output(outputs: dict, case_ids: list[str], output: str | None) -> np.ndarray:
    """One output of a deep recipe (its only one when `output` is None), rows aligned."""
    aligned = _aligned_outputs(outputs, case_ids)
    return aligned[output] if output in aligned else next(iter(aligned.values()))


def _aligned(outputs: dict, case_ids: list[str]) -> np.ndarray:
    """The single output of a one-output recipe, rows in the order of ``case_ids``."""
    return next(iter(_aligned_outputs(outputs, case_ids).values()))


#: E4 feature keys (`e4_upper_bound.PRETRAINED_FEATURES`) per 2D network of `_deep_2d`.
_E4_KEYS = {
    "efficientnet-lite0": ("efficientnet-lite0/pooled", "efficientnet-lite0/logits_relu"),
    "i3d-static": ("i3d-static/mixed_5c",),
}

_SOURCES = {
    "i3d": ("I3D RGB", "i3d-kinetics400-rgb"),
    "i3d-static": ("I3D RGB", "i3d-kinetics400-rgb"),
    "efficientnet": ("EfficientNet-Lite0", "efficientnet-lite0-imagenet"),
}


def _weights_line(recipe, path: Path | None = None) -> str:
    """The report's words for a network's weights: what they are, where they come from, and
    the sha256 of the file; random initialization marked as not comparable with the paper."""
    label = recipe.weights
    if label is Weights.RANDOM_INIT:
        seed = recipe.settings.get("seed")
        return f"random-init (seed {seed}; not comparable with the paper's pretrained network)"
    digest = (recipe.settings.get("weights_sha256") or "")[:12]
    if recipe.name in _SOURCES:
        from tumorchar.features import weights as wt

        source = wt.SOURCES[_SOURCES[recipe.name][1]]
        return (
            f"{label.display} ({source.network}; from {source.requirement}, "
            f"{Path(source.member).name}; converted file sha256 {digest}…)"
        )
    where = f"file {Path(path).name}, " if path is not None else ""
    return f"{label.display} ({where}sha256 {digest}…)"


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


def _maxslice_record(store) -> dict:
    """run.json entries of the max-slice dataset: where its pixels come from, the link."""
    if store is None:
        return {}
    link = store.info.get("link", {})
    return {
        "data_source": "real",
        "lung2d_source": store.note,
        "maxslice_link": {k: v for k, v in link.items() if k != "unlinked"},
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
    if settings.c3d_weights is not None or settings.network3d == "c3d":
        net = (
            f"C3D preset '{settings.c3d_preset}', fine-tuned {settings.c3d_epochs} epoch(s) per "
            "training fold"
        )
    else:
        from tumorchar.features.i3d import get_setting

        cfg = get_setting(settings.i3d_setting)
        trained = "every layer" if cfg.start == "Conv3d_1a_7x7" else f"{cfg.start} and the head"
        net = (
            f"I3D '{cfg.name}' setting: {cfg.frames}×{cfg.size}×{cfg.size} clips, {trained} "
            f"fine-tuned {settings.i3d_epochs or cfg.epochs} epoch(s) per training fold"
        )
    notes.append(f"{net}; random forests of {settings.rf_trees} trees.")
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


__all__ = ["EXPERIMENTS", "ReproduceSettings", "Reproduction", "Weights", "reproduce"]
