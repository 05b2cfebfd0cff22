"""Fixtures of the data tests; the builders they use live in data_builders.py (a module of
its own: test folders share the module name `conftest`, so importing from it is ambiguous)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_builders import ellipsoid, make_cohort


@pytest.fixture
def small_cohort(tmp_path) -> Path:
    """Three ellipsoid nodules on anisotropic grids (one solid + calcified, one ground glass,
    one part-solid)."""
    nodules = {}
    for i, (ps, dz, radii, scores) in enumerate(
        [
            (0.7, 2.5, (5.0, 4.0, 6.0), {"texture": 5.0, "calcification": 3.0, "margin": 5.0}),
            (0.6, 1.25, (3.0, 3.5, 3.0), {"texture": 1.0, "margin": 1.0}),
            (0.8, 2.0, (7.0, 6.0, 6.0), {"texture": 3.0, "margin": 3.0}),
        ]
    ):
        shape = tuple(int(np.ceil(2 * r / s)) + 1 for r, s in zip(radii, (dz, ps, ps), strict=True))
        mask = ellipsoid(shape, (dz, ps, ps), radii)
        z = -50.0 + dz * np.arange(shape[0])
        nodules[f"LIDC-IDRI-000{i}_n01"] = (mask, z, (100, 120), ps, dz, scores)
    return make_cohort(tmp_path / "cohort", nodules)
