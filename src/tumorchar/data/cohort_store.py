"""Reading and writing a cohort folder: `cohort.parquet` plus the consensus masks.

The folder layout is the contract between the cohort stage and everything after it
(see docs/architecture.md):

- `cohort.parquet`: one row per nodule, indexed by the string column `nodule_id`;
- `masks.npz`: for each nodule its consensus mask cropped to the bounding box,
  `<id>` → bool `(z, y, x)`, the real slice positions `<id>__z_mm` (mm, one per z index)
  and `<id>__origin_ij` (row, column of the mask's first voxel in the scan's pixel grid).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tumorchar._io import write_atomic, write_parquet_atomic
from tumorchar.vocab import TASKS

PAPER_TASKS = TASKS  # the paper's 7 tasks, in the one order of `tumorchar.vocab`

TABLE_NAME = "cohort.parquet"
MASKS_NAME = "masks.npz"


@dataclass(frozen=True)
class ConsensusMask:
    """A nodule's consensus mask on its scan's own grid (not resampled)."""

    mask: np.ndarray  # bool (z, y, x), cropped to the bounding box
    z_mm: np.ndarray  # float (z,), slice positions in mm
    origin_ij: tuple[int, int]  # (row, column) of mask[:, 0, 0] in the scan's pixel grid
    pixel_spacing_mm: float  # in-plane spacing (rows and columns are square in LIDC)


class Cohort:
    """A cohort folder opened for reading; masks are loaded lazily, one at a time."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        table_path = self.folder / TABLE_NAME
        masks_path = self.folder / MASKS_NAME
        for path in (table_path, masks_path):
            if not path.is_file():
                raise FileNotFoundError(f"cohort folder {self.folder} has no {path.name}")
        self.table = pd.read_parquet(table_path)
        self._masks = np.load(masks_path, allow_pickle=False)

    @property
    def nodule_ids(self) -> list[str]:
        return self.table["nodule_id"].tolist()

    def mask(self, nodule_id: str) -> ConsensusMask:
        if nodule_id not in self._masks.files:
            raise KeyError(f"no consensus mask for nodule {nodule_id!r} in {self.folder}")
        row = self.table.loc[self.table["nodule_id"] == nodule_id].iloc[0]
        origin = self._masks[f"{nodule_id}__origin_ij"]
        return ConsensusMask(
            mask=self._masks[nodule_id].astype(bool),
            z_mm=self._masks[f"{nodule_id}__z_mm"].astype(float),
            origin_ij=(int(origin[0]), int(origin[1])),
            pixel_spacing_mm=float(row["pixel_spacing_mm"]),
        )


def load_cohort(folder: str | os.PathLike) -> Cohort:
    """Open a cohort folder written by `write_cohort`."""
    return Cohort(folder)


def write_cohort(
    table: pd.DataFrame, masks: Mapping[str, ConsensusMask], folder: str | os.PathLike
) -> Path:
    """Write `table` and `masks` atomically into `folder` (temporary files, then rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if table["nodule_id"].duplicated().any():
        raise ValueError("nodule_id values must be unique")
    missing = set(table["nodule_id"]) - set(masks)
    if missing:
        raise ValueError(f"no mask given for nodules {sorted(missing)[:5]}")
    arrays: dict[str, np.ndarray] = {}
    for nodule_id, m in masks.items():
        arrays[nodule_id] = np.ascontiguousarray(m.mask, dtype=bool)
        arrays[f"{nodule_id}__z_mm"] = np.asarray(m.z_mm, dtype=float)
        arrays[f"{nodule_id}__origin_ij"] = np.asarray(m.origin_ij, dtype=np.int64)
    # the masks are renamed into place before the table: a table never names missing masks
    write_atomic(folder / MASKS_NAME, lambda handle: np.savez_compressed(handle, **arrays))
    write_parquet_atomic(table, folder / TABLE_NAME)
    return folder
