import numpy as np
import pytest

from tumorchar.experiments.e1_mtl import TASKS, E1Data
from tumorchar.experiments.e4_upper_bound import ClassData


@pytest.fixture
def lung_like():
    """120 synthetic nodules from 60 patients: 7 mean scores, a diameter, and a 40-d feature
    array whose first columns carry the malignancy signal."""
    rng = np.random.default_rng(0)
    n = 120
    groups = np.repeat([f"P{i:03d}" for i in range(n // 2)], 2)
    malignant = rng.random(n) < 0.45
    malignancy = np.where(malignant, rng.uniform(3.3, 5.0, n), rng.uniform(1.0, 2.7, n))
    attributes = np.clip(malignancy[:, None] + rng.normal(0, 0.7, (n, 6)), 1, 5)
    scores = np.column_stack([malignancy, attributes])
    diameter = 4 + 4 * malignancy + rng.normal(0, 3, n)
    X = rng.normal(size=(n, 40))
    X[:, :4] += malignancy[:, None] - 3
    data = E1Data(
        case_ids=np.array([f"N{i:03d}" for i in range(n)]),
        scores=scores,
        labels=malignant.astype(int),
        groups=groups,
    )
    assert scores.shape[1] == len(TASKS)
    return data, X, diameter


@pytest.fixture
def class_like():
    """90 cases, 30 % positive, 20-d features separated along a few columns."""
    rng = np.random.default_rng(1)
    n = 90
    labels = (rng.random(n) < 0.3).astype(int)
    X = rng.normal(size=(n, 20))
    X[:, :6] += 2.5 * labels[:, None]
    data = ClassData(
        case_ids=np.array([f"C{i:03d}" for i in range(n)]),
        labels=labels,
        groups=np.array([f"S{i:03d}" for i in range(n)]),
        naming_hint=X[:, 0] + rng.normal(0, 0.5, n),
    )
    return data, X
