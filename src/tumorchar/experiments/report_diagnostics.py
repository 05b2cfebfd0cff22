"""Report sections that show whether the proposed methods do what the paper describes.

Read from the diagnostic rows of `results.parquet` (metric names in docs/architecture.md):
the task graph of every fold (E1 ``graph_edges``, ``graph_edge:<a>-<b>``, ``graph_margin``),
the ρ1 sensitivity (the proposed row against its ``[ρ1 = 0, same ρ2]`` twin, with
``rho1_chosen`` / ``rho2_chosen``), predictions outside the score scale before clipping
(``out_of_range``, ``features_kept``) and the share of labels ∝SVM moves away from its
clusters (E2 ``flip_share``). Also the comparability marks of the paper's numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RHO1_ZERO_SUFFIX = " [ρ1 = 0, same ρ2]"
EDGE_PREFIX = "graph_edge:"


def _part(results: pd.DataFrame, experiment: str, dataset: str | None = None) -> pd.DataFrame:
    part = results[results["experiment"] == experiment]
    return part if dataset is None else part[part["dataset"] == dataset]


def _title(part: pd.DataFrame, method: str) -> str:
    """The display name the report gives ``method`` (built from the structured columns)."""
    from tumorchar.experiments.report import method_titles

    return method_titles(part[part["method"] == method]).get(method, method)


def _values(part: pd.DataFrame, method: str, metric: str) -> pd.Series:
    rows = part[(part["method"] == method) & (part["metric"] == metric)]
    return rows.set_index("fold")["value"].sort_index()


def graph_methods(results: pd.DataFrame) -> list[str]:
    """E1 methods that recorded a task graph, in order of appearance."""
    part = _part(results, "E1")
    return list(dict.fromkeys(part.loc[part["metric"] == "graph_edges", "method"]))


def graph_section(results: pd.DataFrame) -> list:
    """Per graph-regularized method: how many folds had each edge, with the edge's mean
    coefficient correlation, and the closest pair's margin to the threshold; a method whose
    graph is empty in every fold is said to equal independent Lassos (+ Ψ) there."""
    from tumorchar.experiments.report import Table

    part = _part(results, "E1")
    blocks: list = []
    for method in graph_methods(results):
        counts = _values(part, method, "graph_edges")
        n_folds = len(counts)
        rows = []
        edges = part[(part["method"] == method) & part["metric"].str.startswith(EDGE_PREFIX)]
        for metric, group in edges.groupby("metric", sort=False):
            rows.append(
                [
                    metric[len(EDGE_PREFIX) :].replace("-", " – "),
                    f"{group['fold'].nunique()} / {n_folds}",
                    f"{group['value'].mean():.3f}",
                ]
            )
        margin = _values(part, method, "graph_margin")
        gap = _values(part, method, "graph_duality_gap")
        summary = (
            f"**{_title(part, method)}**: {counts.mean():.1f} edges per fold on average "
            f"(min {counts.min():.0f}, max {counts.max():.0f}, {n_folds} folds)"
        )
        if len(margin):
            summary += (
                f"; the pair closest to the 0.85 threshold was {margin.min():.3f} away "
                f"(median over folds {margin.median():.3f}); largest duality gap of the "
                f"graph Lassos {gap.max():.1e}"
            )
        blocks.append(summary + ".")
        if counts.max() == 0:
            blocks.append(
                "The task graph is empty in every fold: the graph term does nothing here, and "
                "this row equals independent per-task Lassos (with Ψ where the row uses it)."
            )
        else:
            blocks.append(Table(["Edge", "Folds with it", "Mean correlation"], rows))
    return blocks


def rho1_table(results: pd.DataFrame):
    """The proposed rows against their ρ1 = 0 twins (same ρ2, same fold): what the graph
    term adds, measured."""
    from tumorchar.experiments.report import Table

    part = _part(results, "E1")
    rows = []
    for method in dict.fromkeys(part["method"]):
        twin = method + RHO1_ZERO_SUFFIX
        if twin not in set(part["method"]):
            continue
        chosen = _values(part, method, "rho1_chosen")
        rho2 = _values(part, method, "rho2_chosen")
        row = [_title(part, method)]
        for metric, scale, digits in (("accuracy", 100, 1), ("mean_abs_diff", 1, 3)):
            a, b = _values(part, method, metric), _values(part, twin, metric)
            diff = (a - b).dropna() * scale
            row += [
                f"{a.mean() * scale:.{digits}f}",
                f"{b.mean() * scale:.{digits}f}",
                f"{diff.mean():+.{digits}f} ({int((diff > 0).sum())}/{len(diff)} folds > 0)",
            ]
        values, counts = np.unique(chosen.to_numpy(), return_counts=True)
        row.append(", ".join(f"{v:g} ×{c}" for v, c in zip(values, counts, strict=True)))
        row.append(f"{rho2.median():.3g}" if len(rho2) else "–")
        rows.append(row)
    if not rows:
        return None
    header = [
        "Method",
        "Acc. (%)",
        "Acc. ρ1 = 0",
        "Δ acc.",
        "MAD",
        "MAD ρ1 = 0",
        "Δ MAD",
        "ρ1 chosen (folds)",
        "ρ2 chosen (median)",
    ]
    return Table(header, rows)


def out_of_range_table(results: pd.DataFrame):
    """E1 predictions outside [1, 5] before clipping, and features kept by the dead-unit
    filter, per method."""
    from tumorchar.experiments.report import Table

    part = _part(results, "E1")
    rows = []
    for method in dict.fromkeys(part["method"]):
        oor = _values(part, method, "out_of_range")
        if not len(oor):
            continue
        kept = _values(part, method, "features_kept")
        rows.append(
            [
                _title(part, method),
                f"{oor.sum():.0f}",
                f"{oor.max():.0f}",
                f"{kept.mean():.0f}" if len(kept) else "–",
            ]
        )
    if not rows:
        return None
    header = ["Method", "Out of [1, 5] (all folds)", "Worst fold", "Features kept (mean)"]
    return Table(header, rows)


def flip_table(results: pd.DataFrame, experiment: str, dataset: str):
    """∝SVM rows: the share of training labels moved away from the clusters, and the
    metrics, per reading of the bags (the variant rows) and naming."""
    from tumorchar.experiments.report import Table

    part = _part(results, experiment, dataset)
    rows = []
    for method in dict.fromkeys(part.loc[part["metric"] == "flip_share", "method"]):
        flips = _values(part, method, "flip_share")
        row = [
            method,
            f"{100 * flips.mean():.1f} ({100 * flips.min():.1f}–{100 * flips.max():.1f})",
        ]
        for metric in ("accuracy", "sensitivity", "specificity"):
            row.append(f"{100 * _values(part, method, metric).mean():.1f}")
        rows.append(row)
    if not rows:
        return None
    header = ["Method", "Labels flipped (%) mean (min–max)", "Acc.", "Sens.", "Spec."]
    return Table(header, rows)


def incomparability(run: dict, experiment: str, method: str) -> list[str]:
    """Why the paper's number beside a row does not measure the same thing (empty: the
    conditions match as far as the run can tell)."""
    reasons = []
    if run.get("data_source") == "phantom":
        reasons.append("phantom / synthetic data")
    settings = run.get("settings", {})
    if experiment.startswith("E1") and "C3D" in method:
        c3d = str(run.get("weights", {}).get("C3D", ""))
        if "random-init" in method or c3d.lower().startswith("random"):
            reasons.append("C3D from random init, not Sports-1M")
        if settings.get("c3d_preset", "cpu") != "paper":
            reasons.append("smaller C3D (cpu preset, fc6 of 512)")
    if experiment in ("E3", "E4") and "VGG" in method:
        reasons.append("VGG16, not the paper's Fast-VGG")
        if "random-init" in method:
            reasons.append("VGG from random init")
    if "[paper protocol" not in method and experiment in ("E2", "E3"):
        reasons.append("label-free cluster naming")
    return reasons


VGG_NOTE = (
    "The paper extracts fc7 / fc8 from Fast-VGG (its ref. 42; the text does not give the "
    "architecture). tumorchar uses VGG16 (thirteen convolutional layers, 4096-unit fc7, "
    "1000-unit fc8): another network, so E3 / E4's VGG rows are not comparable with the "
    "paper's figures even with ImageNet weights."
)
