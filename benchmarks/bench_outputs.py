"""Cost of the viewer outputs of one nodule (DICOM SR, SEG, heatmap, HTML case view) on a
chest-CT-sized DICOM series, against the baseline of the prediction alone.

The scan of `bench_predict` (512 × 512 × 200 voxels of 0.7 × 0.7 × 1.25 mm, one nodule) is
written as a DICOM CT series; small bundles are trained as there unless `--model` is given
(their quality is irrelevant, only their cost). Each output is timed on its own through
`tumorchar.bundle.outputs.case.predict_with_outputs` (reading the series, the region and the
prediction included, as in the baseline `Characterizer.predict` on the same folder), then all
four together. Wall time on a machine shared with other jobs includes waiting for the cores.

    python benchmarks/bench_outputs.py [--model DIR ...] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_predict import make_scan, train_bundles  # noqa: E402


def write_series(volume, folder: Path) -> None:
    """A CT Image Storage series (one file per slice, int16 with intercept −1024)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    stored = np.clip(np.round(volume.array + 1024.0), 0, 4095).astype(np.int16)
    dz, dy, dx = volume.spacing
    for k in range(stored.shape[0]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientID, ds.PatientName = "CT", "BENCH", "Bench^Patient"
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [volume.origin[0], volume.origin[1], volume.origin[2] + k * dz]
        ds.PixelSpacing, ds.SliceThickness = [dy, dx], dz
        ds.Rows, ds.Columns = stored.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = stored[k].tobytes()
        ds.save_as(folder / f"slice{k:04d}.dcm", enforce_file_format=True)


def seconds(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, action="append", help="bundle(s) to time")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    import tumorchar
    from tumorchar.bundle.outputs.case import OutputRequest, predict_with_outputs

    torch.set_num_threads(args.threads)
    volume, center = make_scan()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        series = tmp / "series"
        write_series(volume, series)
        bundles = args.model or train_bundles(tmp)
        print(f"DICOM series 512×512×200, one nodule, {args.threads} thread(s)")
        for bundle in bundles:
            model = tumorchar.load_model(bundle)
            model.predict(series, at=center)  # warm-up
            base = seconds(lambda m=model: m.predict(series, at=center))
            out = tmp / f"out-{model.kind}"
            requests = {
                "SR": OutputRequest(dicom_sr=out / "sr.dcm"),
                "SEG": OutputRequest(dicom_seg=out / "seg.dcm"),
                "heatmap (.nii.gz)": OutputRequest(heatmap=out / "heat.nii.gz"),
                "HTML case view": OutputRequest(html=out / "case.html"),
            }
            requests["all four"] = OutputRequest(
                out / "sr.dcm", out / "seg.dcm", out / "heat.nii.gz", out / "case.html"
            )
            print(f"  {model.kind}: predict alone (baseline) {base:6.2f} s")
            for label, request in requests.items():
                t = seconds(
                    lambda r=request, m=model: predict_with_outputs(m, series, r, at=center)
                )
                print(f"    + {label:<18} {t:6.2f} s   time/baseline = {t / base:5.1f}")


if __name__ == "__main__":
    main()
