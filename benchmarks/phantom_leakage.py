"""How much of the readers' ratings the phantom writes into its pixels, before and after.

Usage: python benchmarks/phantom_leakage.py [--cohort DIR] [--crops DIR] [--out DIR]
                                            [--seed 0] [--folds 10]

Builds two phantom stores of the LIDC cohort, one with the earlier rule (each nodule
rendered from its readers' MEAN ratings, nominal tissue levels: `PhantomRules(ratings="mean",
*_hu_sd=0)`) and one with the current default (one reader's ratings drawn per nodule, tissue
levels drawn per nodule), and the real 2D store of the LIDC max-slice crops. On each, the
reference rows of `tumorchar.experiments.reference` (benign vs malignant, 10 folds grouped
by patient): size alone, HU statistics inside the mask (mean, max, voxel count), the six
attribute ratings; and the out-of-fold R² of each attribute rating from the HU statistics.

Baseline: size alone. The figure is AUC(HU statistics) / AUC(size): above 1, three intensity
numbers beat the nodule's size; on real CT this ratio says what density alone tells.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import pandas as pd

from tumorchar.data import lidc, maxslice
from tumorchar.data.cohort_store import write_cohort
from tumorchar.data.ct_patches import build_phantom_store
from tumorchar.data.patches import PatchStore
from tumorchar.data.phantom import DEFAULT_RULES
from tumorchar.experiments.protocol import Protocol
from tumorchar.experiments.reference import rating_recovery, reference_data, reference_rows

DEFAULT_CROPS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lidc-maxslice"
REAL = "REAL LIDC max-slice crops, 2D"
MEAN_RULES = replace(
    DEFAULT_RULES, ratings="mean", ground_glass_hu_sd=0.0, solid_hu_sd=0.0, calcified_hu_sd=0.0
)


def _stores(args, work: Path) -> dict[str, tuple[PatchStore, bool]]:
    cohort_dir = args.cohort
    if cohort_dir is None:
        build = lidc.build_cohort(lidc.read_database(lidc.locate_database()))
        cohort_dir = write_cohort(build.table, build.masks, work / "cohort")
    stores: dict[str, tuple[PatchStore, bool]] = {}
    for name, rules in (
        ("phantom, mean ratings (before)", MEAN_RULES),
        ("phantom, one reader (after)", DEFAULT_RULES),
    ):
        folder = work / name.split(" (")[1].rstrip(")")
        build_phantom_store(cohort_dir, folder, seed=args.seed, rules=rules, show_progress=False)
        store = PatchStore(folder)
        stores[f"{name}, 3D"] = (store, True)
        stores[f"{name}, central slice"] = (store, False)
    if (args.crops / maxslice.CSV_NAME).is_file():
        folder = work / "maxslice"
        maxslice.build_maxslice_store(args.crops, cohort_dir, folder, show_progress=False)
        stores[REAL] = (PatchStore(folder), False)
    else:
        print(f"(no max-slice crops at {args.crops}: real reference rows left out)")
    return stores


def _labelled(store) -> set[str]:
    index = store.index
    return set(index.loc[index["label"].isin(["benign", "malignant"]), "case_id"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", type=Path, default=None)
    parser.add_argument("--crops", type=Path, default=DEFAULT_CROPS)
    parser.add_argument("--out", type=Path, default=None, help="keep the stores here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=10)
    args = parser.parse_args()
    protocol = Protocol(n_splits=args.folds, by_patient=True, seed=args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        tables, recovery, forest = [], {}, {}
        stores = _stores(args, work)
        real = stores.get(REAL)
        common = None if real is None else real[0].index["case_id"].tolist()
        for source, (store, volumes) in stores.items():
            subsets = [(source, None)]
            if common is not None and source != REAL:
                have = set(store.index["case_id"])
                kept = [c for c in common if c in have and c in _labelled(store)]
                subsets.append((f"{source} [real's nodules]", kept))
            for name, keep in subsets:
                data = reference_data(store, use_volumes=volumes, case_ids=keep)
                rows = reference_rows(data, protocol)
                rows.insert(0, "data", name)
                rows.insert(1, "cases", len(data.labels))
                tables.append(rows)
                recovery[name] = rating_recovery(data, protocol)
                forest[name] = rating_recovery(data, protocol, model="forest")
    table = pd.concat(tables, ignore_index=True)
    wide = table[table["metric"].isin(["auc", "within_one"])].pivot_table(
        index=["data", "cases", "reference"], columns="metric", values="mean", sort=False
    )
    pd.set_option("display.width", 160)
    print("benign vs malignant, folds by patient (fold means):")
    print(wide.round(3).to_string())
    print("\nR² of each attribute rating from the 3 HU statistics, linear (out of fold):")
    print(pd.DataFrame(recovery).T.round(3).to_string())
    print("\nR² of each attribute rating from 9 first-order statistics, random forest:")
    print(pd.DataFrame(forest).T.round(3).to_string())
    print("\nfigure: AUC(HU statistics) / AUC(size alone), the baseline:")
    auc = table[table["metric"] == "auc"].set_index(["data", "reference"])["mean"]
    for source in table["data"].unique():
        ratio = auc[(source, "hu-stats")] / auc[(source, "size")]
        print(
            f"  {source:<64} {auc[(source, 'hu-stats')]:.3f} / {auc[(source, 'size')]:.3f}"
            f" = {ratio:.3f}"
        )


if __name__ == "__main__":
    main()
