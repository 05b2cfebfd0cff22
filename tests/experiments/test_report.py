import json

import numpy as np
import pandas as pd

from tumorchar.experiments.e1_mtl import default_methods, run_e1
from tumorchar.experiments.e4_upper_bound import run_e4
from tumorchar.experiments.protocol import Protocol, make_folds
from tumorchar.experiments.report import build_report, headline_tables
from tumorchar.experiments.results import ResultLog, combine, write_parquet_atomic


def _write_run(tmp_path, lung_like, class_like, source="phantom"):
    data, X, diameter = lung_like
    folds = make_folds(data.labels, data.groups, Protocol(n_splits=3))
    methods = [m for m in default_methods() if m.feature in ("gist", "diameter")]
    e1 = run_e1(
        data,
        {"gist": X, "diameter": diameter},
        folds,
        ResultLog("E1", "lung", "a"),
        methods=methods,
    )
    cdata, CX = class_like
    cfolds = make_folds(cdata.labels, cdata.groups, Protocol(n_splits=3))
    e4 = run_e4(
        cdata, {"gist": CX}, cfolds, ResultLog("E4", "mri", "b"), oversample=True, rf_trees=20
    )
    stages = ResultLog("stage", "all", "c")
    stages.add_metrics("features: gist", -1, {"seconds": 12.5, "cached": 0})
    stages.add_metrics("experiment E1", -1, {"seconds": 30.0, "cached": 0})
    stages.add_metrics("C3D fold 1", -1, {"seconds": 20.0, "cached": 1, "nested": 1})
    counts = ResultLog("data", "all", "c")
    counts.add_metrics(
        "lung", -1, {"n_cases": 120, "n_positive": 50, "n_negative": 70, "n_patients": 60}
    )
    logs = [e1, e4, stages, counts]
    write_parquet_atomic(
        combine([g.metrics_frame() for g in logs], list(e1.metrics_frame())),
        tmp_path / "results.parquet",
    )
    write_parquet_atomic(
        pd.concat([e1.predictions_frame(), e4.predictions_frame()]),
        tmp_path / "predictions.parquet",
    )
    (tmp_path / "run.json").write_text(
        json.dumps({"data_source": source, "protocol": Protocol(3).as_dict()})
    )


def test_report_names_its_data_source_first_and_prints_the_parquet_numbers(
    tmp_path, lung_like, class_like
):
    _write_run(tmp_path, lung_like, class_like)
    md_path, html_path = build_report(tmp_path)
    md = md_path.read_text()
    assert md.splitlines()[0].startswith("**Data source: PHANTOM**")
    assert "Data source: PHANTOM" in html_path.read_text().split("<body>")[1][:300]
    results = pd.read_parquet(tmp_path / "results.parquet")
    acc = results.query("experiment == 'E1' and method == 'GIST + Ridge' and metric == 'accuracy'")
    assert f"{100 * acc['value'].mean():.1f} [" in md
    assert "76.48" in md  # the paper's GIST + RR accuracy beside ours
    assert "81.90" in md or "81.9" in md  # Table IV, IPMN GIST + RF
    assert "| features: gist | 12.5 | computed |" in md
    assert "| ↳ C3D fold 1 | 20.0 | reused |" in md
    assert "| total | 42.5 |" in md  # a nested stage is inside its parent's time
    for figure in ("e1_roc.png", "e1_scores.png", "e4_mri_roc.png"):
        assert (tmp_path / "figures" / figure).stat().st_size > 1000
    titles = [title for title, _ in headline_tables(tmp_path)]
    assert titles == ["E1 (Table II): malignancy score regression"]


def test_real_data_report_says_real(tmp_path, lung_like, class_like):
    _write_run(tmp_path, lung_like, class_like, source="real")
    md_path, _ = build_report(tmp_path)
    assert md_path.read_text().startswith("**Data source: REAL**")
    assert np.isfinite(pd.read_parquet(tmp_path / "results.parquet")["value"]).all()


def test_reproduce_refuses_bad_options(tmp_path):
    from typer.testing import CliRunner

    from tumorchar.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["reproduce", "--out", str(tmp_path), "--experiments", "E9"])
    assert result.exit_code == 2 and "E9" in result.output
    result = runner.invoke(app, ["reproduce", "--out", str(tmp_path), "--data", "none", "--no-mri"])
    assert result.exit_code == 2 and "nothing to run" in result.output
    result = runner.invoke(app, ["reproduce", "--out", str(tmp_path), "--mri-shape", "3,4"])
    assert result.exit_code == 2 and "--mri-shape" in result.output


def test_rows_carry_structure_and_the_report_renders_names_from_it(tmp_path, lung_like, class_like):
    from tumorchar.experiments.results import LABEL_COLUMNS

    _write_run(tmp_path, lung_like, class_like)
    results = pd.read_parquet(tmp_path / "results.parquet")
    predictions = pd.read_parquet(tmp_path / "predictions.parquet")
    for frame in (results, predictions):
        assert set(LABEL_COLUMNS) <= set(frame.columns)
    e4 = results[results["experiment"] == "E4"]
    assert set(e4["estimator"]) == {"svm", "rf"} and set(e4["variant"]) == {"adasyn"}
    e1 = results[results["experiment"] == "E1"]
    assert set(e1["feature"]) == {"gist", "diameter"}
    assert {"lasso", "ridge", "linear"} == set(e1["estimator"])
    md = build_report(tmp_path)[0].read_text()

    # the method column is only an identifier: renamed, the report reads the same
    ids = {m: f"m{i}" for i, m in enumerate(dict.fromkeys(results["method"]))}
    for frame, name in ((results, "results"), (predictions, "predictions")):
        keep = frame["experiment"].isin(["stage", "data"])
        frame.loc[~keep, "method"] = frame.loc[~keep, "method"].map(ids)
        write_parquet_atomic(frame, tmp_path / f"{name}.parquet")
    assert build_report(tmp_path)[0].read_text() == md
    assert "| GIST + Ridge |" in md and "| GIST + SVM |" in md
