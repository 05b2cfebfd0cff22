"""Coverage-guided fuzzing of the scan readers (atheris / libFuzzer).

Every input is one format byte (`FORMATS`) and a file's content; the harness writes the
file (gzip NIfTI: compressed here, so mutations reach the header and voxels) and reads it
with `tumorchar.bundle.scan.read_scan`, as `tumorchar predict` does. The contract under
test: a reader either returns a `Volume` or raises the project's errors (`ScanError`,
`ScanReadError`); any other exception is a bug, and memory stays bounded (the memory budget
is set to `BUDGET` bytes here, so RSS stays well under libFuzzer's `-rss_limit_mb`).

Bounded run (10 minutes, 1.5 GB RSS limit), from the repository root:

    python fuzz/make_seeds.py /tmp/fuzz-corpus
    nice .venv/bin/python fuzz/fuzz_readers.py /tmp/fuzz-corpus -max_total_time=600 \\
        -rss_limit_mb=1536 -timeout=30 -print_final_stats=1 -artifact_prefix=/tmp/fuzz-

With `FUZZ_KEEP_GOING=1` an unexpected exception is recorded (its type, the reader line
that raised it and the input, under `$FUZZ_FINDINGS`, default /tmp/fuzz-findings) and the
run goes on, so that one run lists every class it finds; without it the first one stops
the run as a libFuzzer crash. Crashing inputs become tests in
tests/corpus/test_corpus_fuzz_regressions.py.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

FORMATS = [".nii", ".nii.gz", ".nrrd", ".mha", ".dcm", "series"]
BUDGET = 256 * 1024**2  # bytes of float32 voxels a fuzzed header may make the reader allocate


def write_input(data: bytes, folder: Path) -> Path | None:
    """Turn one fuzz input into a file (or a two-file DICOM folder) under `folder`."""
    if len(data) < 2:
        return None
    kind, body = FORMATS[data[0] % len(FORMATS)], data[1:]
    if kind == "series":
        split = int.from_bytes(body[:4].ljust(4, b"\0"), "little") % max(1, len(body))
        series = folder / "series"
        series.mkdir()
        (series / "a.dcm").write_bytes(body[4 : 4 + split])
        (series / "b.dcm").write_bytes(body[4 + split :])
        return series
    path = folder / f"case{kind}"
    path.write_bytes(gzip.compress(body, mtime=0) if kind == ".nii.gz" else body)
    return path


def main() -> None:
    import atheris

    with atheris.instrument_imports():
        import pydicom  # noqa: F401 - instrumented so that coverage guides into its parser

        from tumorchar.bundle.scan import ScanError, read_scan
        from tumorchar.data.io import ScanReadError

    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    warnings.simplefilter("ignore")
    expected = (ScanError, ScanReadError)
    keep_going = os.environ.get("FUZZ_KEEP_GOING") == "1"
    findings = Path(os.environ.get("FUZZ_FINDINGS", "/tmp/fuzz-findings"))
    scratch = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    seen: set[str] = set()
    import inspect

    # the budget keyword exists from issue 15 on; without it the harness still runs (older code)
    has_budget = "max_bytes" in inspect.signature(read_scan).parameters
    options = {"max_bytes": BUDGET} if has_budget else {}

    def test_one_input(data: bytes) -> None:
        with tempfile.TemporaryDirectory(dir=scratch) as folder:
            path = write_input(data, Path(folder))
            if path is None:
                return
            try:
                read_scan(path, case_id="fuzz", **options)
            except expected:
                pass
            except Exception as error:
                if not keep_going:
                    raise
                frame = traceback.extract_tb(error.__traceback__)[-1]
                key = f"{type(error).__name__} at {Path(frame.filename).name}:{frame.lineno}"
                if key not in seen:
                    seen.add(key)
                    findings.mkdir(parents=True, exist_ok=True)
                    name = hashlib.sha256(data).hexdigest()[:16]
                    (findings / f"input-{name}").write_bytes(data)
                    with open(findings / "classes.txt", "a") as log:
                        log.write(f"{key}\tinput-{name}\t{str(error)[:200]!r}\n")
                    print(f"\nFINDING {key}: {str(error)[:200]}", file=sys.stderr, flush=True)

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
