"""Fixtures of the output tests: a synthetic DICOM CT series and a prediction on it (the
builders live in output_builders.py: test folders share the module name `conftest`)."""

from __future__ import annotations

import pytest
from output_builders import ball_volume, center_xyz, make_algorithm, make_result, write_series

BALL_KJI = (8.0, 15.0, 17.0)


@pytest.fixture(scope="session")
def dicom_series(tmp_path_factory):
    """(folder, uids, volume HU (z, y, x), ball mask, ball centre (x, y, z) mm)."""
    folder = tmp_path_factory.mktemp("dicom") / "series"
    volume, mask = ball_volume(center_kji=BALL_KJI)
    uids = write_series(folder, volume)
    return folder, uids, volume, mask, center_xyz(BALL_KJI)


@pytest.fixture
def result(dicom_series):
    return make_result(dicom_series[4])


@pytest.fixture
def algorithm():
    return make_algorithm()
