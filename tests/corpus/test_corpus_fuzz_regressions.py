"""Inputs found by fuzz/fuzz_readers.py that made a reader raise something other than the
project's errors (on the code before issue 15); each must now be a clean ScanError."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tumorchar.bundle.scan import ScanError, read_scan

ROOT = Path(__file__).parents[2]
INPUTS = Path(__file__).parent / "fuzz_inputs"
sys.path.insert(0, str(ROOT / "fuzz"))
from fuzz_readers import write_input  # noqa: E402

# input file → what the reader must now say (before: the exception in the comment)
EXPECTED = {
    # ValueError: could not convert string to float: '1.000000]0.000000'
    "series-malformed-orientation": "a.dcm: ImageOrientationPatient .* is malformed",
    # AttributeError: 'FileDataset' object has no attribute 'Rows'
    "series-slice-without-rows": r"b.dcm has no Rows \(0028,0010\)",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fuzz_finding_is_a_clean_scan_error(tmp_path, name):
    path = write_input((INPUTS / name).read_bytes(), tmp_path)
    with pytest.raises(ScanError, match=f"case fuzz: {EXPECTED[name]}"):
        read_scan(path, case_id="fuzz")


def test_every_stored_input_has_an_expectation():
    assert sorted(p.name for p in INPUTS.iterdir()) == sorted(EXPECTED)


def test_seeds_of_every_format_read_cleanly(tmp_path):
    from make_seeds import seeds

    for i, (kind, data) in enumerate(seeds().items()):
        folder = tmp_path / str(i)
        folder.mkdir()
        scan = read_scan(write_input(data, folder), case_id="seed")
        assert scan.volume.array.size > 0, kind
