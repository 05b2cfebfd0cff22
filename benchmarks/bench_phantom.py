"""Phantom rendering of a whole cohort: wall time and peak memory against the issue's
budget (≤ 60 s and ≤ 2 GiB for ~1400 nodules on 2 cores).

Uses the cohort folder given as the first argument; without one it builds a synthetic
cohort of 1400 ellipsoid masks on anisotropic LIDC-like grids (diameters 3–30 mm, slice
thickness 0.6–2.5 mm, pixel spacing 0.5–0.9 mm, random ratings).

    python benchmarks/bench_phantom.py [COHORT_DIR] [--workers 2] [--n 1400]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tumorchar.data.cohort_store import ConsensusMask, write_cohort
from tumorchar.data.ct_patches import build_phantom_store

BUDGET_S = 60.0
BUDGET_GIB = 2.0


def synthetic_cohort(folder: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    rows, masks = [], {}
    for i in range(n):
        ps, dz = rng.uniform(0.5, 0.9), rng.choice([0.625, 1.25, 2.0, 2.5])
        radii = rng.uniform(1.5, 15.0) * rng.uniform(0.7, 1.3, size=3)
        shape = np.ceil(2 * radii / np.array([dz, ps, ps])).astype(int) + 1
        grids = np.indices(shape, dtype=float)
        centre = (shape - 1) / 2
        r2 = sum(((grids[a] - centre[a]) * (dz, ps, ps)[a] / radii[a]) ** 2 for a in range(3))
        mask = r2 <= 1.0
        if not mask.any():
            mask[tuple(shape // 2)] = True
        nodule_id = f"SYN-{i:04d}_n01"
        z = -100.0 + dz * np.arange(shape[0])
        masks[nodule_id] = ConsensusMask(mask, z, (200, 180), float(ps))
        rows.append(
            {
                "nodule_id": nodule_id,
                "patient_id": f"SYN-{i:04d}",
                "series_uid": f"1.2.{i}",
                "label": "benign",
                "pixel_spacing_mm": ps,
                "slice_thickness_mm": dz,
                "equivalent_diameter_mm": 2 * float(np.cbrt(radii.prod())),
                "malignancy": rng.uniform(1, 5),
                "calcification": rng.choice([1, 2, 3, 4, 5, 6, 6, 6]),
                "lobulation": rng.uniform(1, 5),
                "spiculation": rng.uniform(1, 5),
                "sphericity": rng.uniform(1, 5),
                "margin": rng.uniform(1, 5),
                "texture": rng.uniform(1, 5),
            }
        )
    return write_cohort(pd.DataFrame(rows), masks, folder)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("cohort", nargs="?")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--n", type=int, default=1400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cohort = Path(args.cohort) if args.cohort else synthetic_cohort(Path(tmp) / "c", args.n)
        start, cpu_start = time.perf_counter(), time.process_time()
        report = build_phantom_store(
            cohort, Path(tmp) / "store", workers=args.workers, show_progress=False
        )
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        n = len(report.written)
        size = sum(p.stat().st_size for p in (Path(tmp) / "store").rglob("*")) / 2**20
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"phantom store: {n} nodules ({len(report.failures)} failed), {args.workers} workers")
    print(
        f"  wall time {elapsed:.1f} s ({1000 * elapsed / max(n, 1):.1f} ms/nodule); "
        f"budget {BUDGET_S:.0f} s → ratio {elapsed / BUDGET_S:.2f}"
    )
    print(
        f"  CPU time {cpu:.1f} s (all threads; on 2 free cores wall ≈ CPU / 2 = "
        f"{cpu / 2:.1f} s → ratio {cpu / 2 / BUDGET_S:.2f})"
    )
    for message in list(report.failures.values())[:5]:
        print(f"  failed: {message}")
    print(
        f"  peak RSS {peak_gib:.2f} GiB (includes building the cohort); budget "
        f"{BUDGET_GIB:.0f} GiB → ratio {peak_gib / BUDGET_GIB:.2f}"
    )
    print(f"  store size on disk {size:.0f} MiB")


if __name__ == "__main__":
    main()
