"""Import and link the whole LIDC max-slice development split, with the time of each stage.

Usage: python benchmarks/bench_maxslice.py [--crops DIR] [--cohort DIR] [--skip-baseline]

Stages: the cohort (built from the annotation database unless `--cohort` names a built one),
reading the crops (CSV + `.tar.xz` streamed with tarfile, text parsed, HU rule), linking
every crop to its read and cohort nodule, choosing one crop per nodule, and writing the 2D
patch store (resampling to 0.5 mm). Target: ≤ 60 s wall on 2 cores for all of it.
Baseline, measured in the same run: unpacking the archive to disk with `tar xJf` and reading
the files from there (what the data's README suggests), against streaming the archive.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from tumorchar.data import lidc, maxslice
from tumorchar.data.cohort_store import load_cohort, write_cohort

TARGET_SECONDS = 60.0
DEFAULT_CROPS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lidc-maxslice"


@contextmanager
def stage(name: str, timings: dict[str, tuple[float, float]]):
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    timings[name] = (time.perf_counter() - wall, time.process_time() - cpu)


def unpack_baseline(crops_dir: Path) -> float:
    """Seconds to read the crops the way the data's README suggests: unpack the archive to
    disk (`tar xJf`), then read each file (same parser)."""
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run(
            ["tar", "xJf", str(crops_dir / maxslice.ARCHIVE_NAME), "-C", tmp], check=True
        )
        for file in sorted((Path(tmp) / maxslice.CROPS_DIR).glob("*.txt")):
            maxslice.parse_crop_text(file.read_bytes(), file.stem)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=Path, default=DEFAULT_CROPS)
    parser.add_argument("--cohort", type=Path, default=None)
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()

    timings: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cohort_dir = args.cohort
        if cohort_dir is None:
            with stage("cohort (annotation database)", timings):
                build = lidc.build_cohort(lidc.read_database(lidc.locate_database()))
                cohort_dir = write_cohort(build.table, build.masks, Path(tmp) / "cohort")
        with stage("read crops (csv + tar.xz, HU rule)", timings):
            crops = maxslice.read_crops(args.crops)
        with stage("link crops to reads and nodules", timings):
            links = maxslice.link_crops(
                crops, load_cohort(cohort_dir).table, lidc.locate_database()
            )
        with stage("one crop per nodule", timings):
            selected = maxslice.select_crops(links)
        with stage("2D store (resample, write)", timings):
            report = maxslice.build_maxslice_store(
                crops, cohort_dir, Path(tmp) / "store", show_progress=False
            )
    summary = maxslice.link_summary(links, selected)
    print(f"crops read: {len(crops.crops)} (+{len(crops.unreadable)} CSV rows without a file)")
    print(
        f"link: {summary['by_status']}; matched to a read {summary['matched_to_a_read']}, "
        f"identical outlines {summary['identical_outlines']}, "
        f"Jaccard min {summary['jaccard_min']:.3f} median {summary['jaccard_median']:.3f}"
    )
    print(
        f"cohort nodules with a crop: {summary['nodules']} "
        f"({summary['nodules_with_several_crops']} with several), "
        f"{summary['patients']} patients; store cases written {len(report.written)}"
    )
    total_wall = sum(w for w, _ in timings.values())
    total_cpu = sum(c for _, c in timings.values())
    width = max(len(name) for name in timings)
    for name, (wall, cpu) in timings.items():
        print(f"  {name:<{width}}  {wall:6.2f} s wall  {cpu:6.2f} s CPU")
    print(f"  {'total':<{width}}  {total_wall:6.2f} s wall  {total_cpu:6.2f} s CPU")
    print(f"target {TARGET_SECONDS:.0f} s: total is {total_wall / TARGET_SECONDS:.2f} × the target")
    if not args.skip_baseline:
        slow = unpack_baseline(args.crops)
        fast = timings["read crops (csv + tar.xz, HU rule)"][0]
        print(
            f"baseline: unpack to disk + read {slow:.2f} s; streamed from the archive "
            f"{fast:.2f} s: {slow / fast:.2f} × the baseline's speed"
        )


if __name__ == "__main__":
    main()
