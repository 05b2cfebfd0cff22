"""A short real-data reproduction: `tumorchar reproduce --lidc-maxslice` on a subset of the
real LIDC max-slice crops (`../shared/data/lidc-maxslice` or `$TUMORCHAR_MAXSLICE_DIR`;
skipped with the reason where absent, a failure under CI, which has the data)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tumorchar.cli import app

DATA = Path(
    os.environ.get(
        "TUMORCHAR_MAXSLICE_DIR",
        Path(__file__).resolve().parents[2].parent / "shared" / "data" / "lidc-maxslice",
    )
)
ARGS = [
    "--data", "none", "--no-mri", "--max-cases", "60", "--folds", "3", "--experiments", "E2",
    "--rf-trees", "10", "--psvm-restarts", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if not (DATA / "nodules.csv").is_file():
        message = f"real LIDC max-slice crops not found at {DATA} (set $TUMORCHAR_MAXSLICE_DIR)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run this test")
        pytest.skip(message)
    from tumorchar.data.lidc import DatabaseError, locate_database

    try:
        locate_database(None)
    except DatabaseError as error:
        pytest.skip(str(error))
    out = tmp_path_factory.mktemp("reproduce-maxslice")
    result = CliRunner().invoke(
        app, ["reproduce", "--out", str(out), "--lidc-maxslice", str(DATA), *ARGS]
    )
    assert result.exit_code == 0, result.output
    return out, result.output


def test_real_report_first_line_and_citation(run):
    out, output = run
    first = (out / "report.md").read_text().splitlines()[0]
    assert first.startswith("**Data source: REAL (LIDC-IDRI max-slice crops, 2D)**")
    assert "Armato et al." in first and "10.7937/K9/TCIA.2015.LO9QL9SX" in first
    assert "CC BY 3.0" in first
    report = (out / "report.md").read_text()
    assert "## Reference rows" in report and "HU statistics inside the mask" in report
    assert "Reference rows, Lung nodules, REAL CT" in output


def test_results_name_their_data_source(run):
    out, _ = run
    results = pd.read_parquet(out / "results.parquet")
    rows = results[results["dataset"] == "lung-maxslice"]
    assert set(rows["experiment"]) == {"E2", "reference"}
    assert set(rows["data_source"]) == {"real"}
    references = set(rows.loc[rows["experiment"] == "reference", "method"])
    assert any("size alone" in m for m in references)
    assert any("HU statistics" in m for m in references)
    assert any("six attributes" in m for m in references)
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert set(predictions["data_source"]) == {"real"}
    run_record = json.loads((out / "run.json").read_text())
    assert run_record["data_source"] == "real"
    assert run_record["maxslice_link"]["matched_to_a_read"] > 0


def test_folds_keep_patients_apart(run):
    out, _ = run
    predictions = pd.read_parquet(out / "predictions.parquet")
    index = pd.read_parquet(out / "patches" / "lung-maxslice" / "index.parquet")
    patient = index.set_index("case_id")["patient_id"]
    one = predictions[predictions["method"] == predictions["method"].iloc[0]]
    folds_per_patient = one.assign(p=one["case_id"].map(patient)).groupby("p")["fold"].nunique()
    assert (folds_per_patient == 1).all()
