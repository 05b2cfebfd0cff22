"""Time to characterize one nodule with a model bundle, against the 2 s target (issue 8).

Wall time is printed beside CPU time (summed over threads): on a shared machine the wall
time includes waiting for the cores.

Builds a chest-CT-sized scan (512 × 512 × 200 voxels of 0.7 × 0.7 × 1.25 mm) holding one
nodule, keeps it in memory, and times `Characterizer.predict` on it (median of repeats,
split into region extraction, features and model), on `--threads` CPU threads (default 2,
the target machine). Reading the same scan from a NIfTI file and from a DICOM series folder
is timed separately. Without `--model`, small bundles (the default 0.5 mm / 32 mm crop,
I3D Kinetics-400 under the `cpu` setting; `make weights` first) are first trained on a
synthetic phantom store in a temporary folder; their quality is irrelevant here, only
their cost.

    python benchmarks/bench_predict.py [--model DIR ...] [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_S = 2.0
SCAN_SHAPE = (200, 512, 512)  # (z, y, x)
SCAN_SPACING = (1.25, 0.7, 0.7)


def make_scan(seed: int = 0):
    """Lung-like background with a 12 mm solid nodule at the scan centre."""
    from tumorchar.data.io import Volume

    rng = np.random.default_rng(seed)
    array = (-850.0 + 30.0 * rng.standard_normal(SCAN_SHAPE)).astype(np.float32)
    center = np.array(SCAN_SHAPE) // 2
    box = tuple(slice(c - 12, c + 13) for c in center)
    grids = np.indices([25, 25, 25], dtype=float) - 12
    distance = np.sqrt(sum((g * s) ** 2 for g, s in zip(grids, SCAN_SPACING, strict=True)))
    array[box][distance <= 6.0] = 40.0
    volume = Volume(array=array, spacing=SCAN_SPACING, origin=(-180.0, -180.0, -300.0))
    center_xyz = np.asarray(volume.origin) + center[::-1] * np.asarray(SCAN_SPACING[::-1])
    return volume, tuple(center_xyz.tolist())


def make_store(folder: Path, n_cases: int = 24):
    """A phantom patch store of 64³ cubes (0.5 mm, 32 mm) with balls of varied size/density."""
    from tumorchar.data.patches import CaseArrays, PatchStoreWriter

    settings = {"geometry": {"spacing_mm": 0.5, "size_mm": 32.0}, "seed": 0}
    writer = PatchStoreWriter(folder, "phantom", settings, is_phantom=True, note="benchmark")
    grids = (np.indices((64, 64, 64), dtype=float) - 31.5) * 0.5
    distance = np.sqrt(sum(g**2 for g in grids))
    for i in range(n_cases):
        rng = np.random.default_rng(i)
        malignant = i % 2 == 1
        mask = distance <= (7.0 if malignant else 3.5) + 0.3 * (i % 3)
        volume = (-850.0 + 25.0 * rng.standard_normal(mask.shape)).astype(np.float32)
        volume[mask] = 30.0 if malignant else -500.0
        m = 4.5 if malignant else 1.5
        scores = {t: m for t in ("malignancy", "lobulation", "spiculation", "margin")}
        scores |= {"calcification": 6.0, "sphericity": 4.0, "texture": 5.0 if malignant else 3.0}
        row = {"patient_id": f"P{i}", "label": "malignant" if malignant else "benign", **scores}
        writer.add(f"case{i:03d}", CaseArrays(volume=volume, mask=mask, row=row))
    writer.flush(complete=True)
    return folder


def train_bundles(folder: Path) -> list[Path]:
    from tumorchar.bundle.train import train_mtl, train_unsupervised

    store = make_store(folder / "store")
    mtl = train_mtl(store, folder / "mtl", epochs=1, n_folds=2)
    options = {"n_restarts": 2, "n_init": 3}
    unsupervised = train_unsupervised(
        store, folder / "unsup", n_folds=2, classifier_options=options
    )
    return [mtl, unsupervised]


def time_reading(volume, folder: Path) -> dict[str, float]:
    """Seconds to read the scan from a NIfTI file and from a DICOM series folder."""
    import SimpleITK as sitk

    from tumorchar.bundle.scan import read_scan

    nifti = folder / "scan.nii.gz"
    sitk.WriteImage(volume.to_sitk(), str(nifti))
    series = folder / "series"
    write_dicom_series(volume, series)
    times = {}
    for label, path in (("NIfTI (.nii.gz)", nifti), ("DICOM series", series)):
        start = time.perf_counter()
        read_scan(path)
        times[label] = time.perf_counter() - start
    return times


def write_dicom_series(volume, folder: Path) -> None:
    """One CT DICOM file per slice (int16 stored values, intercept -1024)."""
    import SimpleITK as sitk

    folder.mkdir()
    stored = np.clip(np.round(volume.array + 1024.0), 0, 4095).astype(np.int16)
    series_uid = "1.2.826.0.1.3680043.2.1125.1"
    for k in range(stored.shape[0]):
        image = sitk.GetImageFromArray(stored[k : k + 1])
        image.SetSpacing(tuple(reversed(volume.spacing)))
        z = volume.origin[2] + k * volume.spacing[0]
        image.SetOrigin((volume.origin[0], volume.origin[1], z))
        tags = {
            "0008|0060": "CT",
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": f"{volume.origin[0]}\\{volume.origin[1]}\\{z}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|1052": "-1024",
            "0028|1053": "1",
        }
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"slice{k:04d}.dcm"))
        writer.Execute(image)


def time_predict(bundle: Path, scan, center, repeats: int) -> dict[str, float]:
    """Median seconds of predict and of its stages on the in-memory scan."""
    import tumorchar
    from tumorchar.bundle.scan import as_scan

    model = tumorchar.load_model(bundle)
    model.predict(scan, at=center)  # warm-up: first-call allocations, lazy imports
    totals, cpu, regions, features, heads = [], [], [], [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        model.predict(scan, at=center)
        totals.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)

        start = time.perf_counter()
        wrapped = as_scan(scan)
        patch = model.region(wrapped, at=center)
        regions.append(time.perf_counter() - start)
        start = time.perf_counter()
        values = model._extractor.features(patch)
        features.append(time.perf_counter() - start)
        head = model._predict_mtl if model.kind == "mtl" else model._predict_unsupervised
        start = time.perf_counter()
        head(values, patch, "bench")
        heads.append(time.perf_counter() - start)
    return {
        "total": statistics.median(totals),
        "cpu": statistics.median(cpu),
        "region": statistics.median(regions),
        "features": statistics.median(features),
        "model": statistics.median(heads),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, action="append", help="bundle(s) to time")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    scan, center = make_scan()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        reading = time_reading(scan, tmp)
        bundles = args.model or train_bundles(tmp)
        print(
            f"scan {SCAN_SHAPE[2]}×{SCAN_SHAPE[1]}×{SCAN_SHAPE[0]} voxels, "
            f"{args.threads} thread(s), median of {args.repeats}"
        )
        for label, seconds in reading.items():
            print(f"  read scan from {label:<16} {seconds:7.3f} s")
        for bundle in bundles:
            import tumorchar

            kind = tumorchar.load_model(bundle).kind
            t = time_predict(bundle, scan, center, args.repeats)
            verdict = "within" if t["total"] <= TARGET_S else "OVER"
            print(
                f"  predict one nodule ({kind:<12}) {t['total']:6.3f} s wall, {t['cpu']:.3f} s CPU "
                f"[region {t['region']:.3f}, features {t['features']:.3f}, model "
                f"{t['model']:.3f}]  target/time = {TARGET_S / t['total']:.1f} "
                f"({verdict} the {TARGET_S:.0f} s target)"
            )


if __name__ == "__main__":
    main()
