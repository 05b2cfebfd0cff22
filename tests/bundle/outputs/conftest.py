"""Fixtures of the output tests: a synthetic DICOM CT series and a prediction on it."""

from __future__ import annotations

import numpy as np
import pytest
from output_builders import ball_volume, center_xyz, write_series

from tumorchar.bundle.characterizer import Characterization
from tumorchar.bundle.outputs.algorithm import Algorithm

BALL_KJI = (8.0, 15.0, 17.0)


@pytest.fixture(scope="session")
def dicom_series(tmp_path_factory):
    """(folder, uids, volume HU (z, y, x), ball mask, ball centre (x, y, z) mm)."""
    folder = tmp_path_factory.mktemp("dicom") / "series"
    volume, mask = ball_volume(center_kji=BALL_KJI)
    uids = write_series(folder, volume)
    return folder, uids, volume, mask, center_xyz(BALL_KJI)


def make_result(center_mm, kind="mtl", label="malignant", case_id="case007"):
    attributes = {
        "calcification": 5.6,
        "spiculation": 2.2,
        "sphericity": 3.9,
        "lobulation": 2.6,
        "margin": 3.4,
        "texture": 4.7,
    }
    return Characterization(
        case_id=case_id,
        kind=kind,
        modality="ct",
        label=label,
        probability=0.8125 if label == "malignant" else 0.25,
        probability_method="logistic calibration (test)",
        malignancy=4.25 if kind == "mtl" else None,
        attributes=attributes if kind == "mtl" else {},
        region={
            "center_mm": list(center_mm),
            "padded_fraction": 0.0,
            "kind": "ct-cube",
            "size_mm": 24.0,
            "spacing_mm": 1.0,
            "fill_value": -1000.0,
        },
    )


def make_algorithm(is_phantom=True, kind="mtl") -> Algorithm:
    return Algorithm(
        version="0.1.0",
        bundle_sha256="ab12" * 16,
        kind=kind,
        features="C3D fc6 (cpu preset, fine-tuned from random-init)",
        modality="ct",
        training_source="phantom" if is_phantom else "lidc",
        n_training_cases=24,
        is_phantom=is_phantom,
        created_utc="2026-12-02T06:00:00Z",
    )


@pytest.fixture
def result(dicom_series):
    return make_result(dicom_series[4])


@pytest.fixture
def algorithm():
    return make_algorithm()


def sorted_ball_mask(dicom_series) -> np.ndarray:
    return dicom_series[3]
