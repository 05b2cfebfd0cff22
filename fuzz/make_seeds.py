"""Write the seed inputs of `fuzz_readers.py`: one small valid file of each format.

Each seed is one byte naming the format (see `fuzz_readers.FORMATS`) followed by the file's
bytes (for gzip NIfTI, the uncompressed bytes: the harness compresses them).

    python fuzz/make_seeds.py /tmp/fuzz-corpus
"""

from __future__ import annotations

import copy
import io
import sys
import tempfile
from pathlib import Path

import numpy as np


def _nifti(array: np.ndarray) -> bytes:
    import nibabel as nib

    image = nib.Nifti1Image(array.transpose(2, 1, 0), np.diag([0.7, 0.8, 2.0, 1.0]))
    return image.to_bytes()


def _nrrd(array: np.ndarray) -> bytes:
    nz, ny, nx = array.shape
    header = (
        f"NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: {nx} {ny} "
        f"{nz}\nspace directions: (0.7,0,0) (0,0.8,0) (0,0,2)\nendian: little\nencoding: raw\n"
        "space origin: (1,2,3)\n\n"
    )
    return header.encode() + array.astype("<i2").tobytes()


def _metaimage(array: np.ndarray) -> bytes:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array.astype(np.int16))
    image.SetSpacing((0.7, 0.8, 2.0))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "seed.mha"
        sitk.WriteImage(image, str(path), useCompression=True)
        return path.read_bytes()


def _dicom(plane: np.ndarray, z: float) -> bytes:
    import pydicom
    from pydicom.data import get_testdata_file

    ds = copy.deepcopy(pydicom.dcmread(get_testdata_file("CT_small.dcm")))
    ds.Rows, ds.Columns = plane.shape
    ds.PixelData = (plane + 1024).astype(np.int16).tobytes()
    ds.ImagePositionPatient = [0.0, 0.0, z]
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def seeds() -> dict[str, bytes]:
    from fuzz_readers import FORMATS  # noqa: PLC0415 - the same folder

    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 1000
    one, two = _dicom(array[0], 0.0), _dicom(array[1], 5.0)
    contents = {
        ".nii": _nifti(array.astype(np.float32)),
        ".nii.gz": _nifti(array),
        ".nrrd": _nrrd(array),
        ".mha": _metaimage(array),
        ".dcm": one,
        "series": len(one).to_bytes(4, "little") + one + two,
    }
    return {name: bytes([FORMATS.index(name)]) + data for name, data in contents.items()}


def main(folder: str) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in seeds().items():
        (out / f"seed-{name.strip('.').replace('.', '-')}").write_bytes(data)
    print(f"{len(seeds())} seeds in {out}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main(sys.argv[1] if len(sys.argv) > 1 else "fuzz-corpus")
