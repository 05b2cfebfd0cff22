"""Bad-input corpus, cohort: a scan whose database row has NULL, zero or text spacing is
named, skipped and listed; the other scans make the cohort (no TypeError traceback)."""

from __future__ import annotations

import sqlite3

import pytest
from test_lidc import write_tiny_database
from typer.testing import CliRunner

from tumorchar.cli import app
from tumorchar.data import lidc


@pytest.mark.parametrize(
    "column, value",
    [("pixel_spacing", None), ("slice_thickness", None), ("pixel_spacing", 0.0),
     ("slice_thickness", "two")],
)  # fmt: skip
def test_scan_without_usable_spacing_is_skipped_and_named(tmp_path, column, value):
    db = write_tiny_database(tmp_path / "db.sqlite", bad_scan=True, bad_coords="1,1")
    connection = sqlite3.connect(db)
    connection.execute(f"UPDATE scans SET {column} = ? WHERE id = 2", (value,))
    connection.commit()
    connection.close()
    scans = {scan.scan_id: scan for scan in lidc.read_database(db)}
    assert scans[2].error == f"the database gives no usable {column} (mm) for this scan"
    assert scans[1].error is None
    result = CliRunner().invoke(app, ["cohort", "--out", str(tmp_path / "o"), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert f"no usable {column}" in " ".join(result.output.split())
    assert (tmp_path / "o" / "cohort.parquet").exists()
