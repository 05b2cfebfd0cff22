"""The project's vocabulary, defined once: the paper's 7 tasks, their rating scales and
pivots, the class labels per modality, and the labels of network weights.

Every table, score array and network head that holds the 7 tasks uses `TASKS` order
(malignancy first, then the six radiologist attributes).
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

#: The paper's 7 tasks: malignancy and six radiologist attributes (LIDC mean ratings).
TASKS: tuple[str, ...] = (
    "malignancy",
    "calcification",
    "lobulation",
    "spiculation",
    "sphericity",
    "margin",
    "texture",
)
ATTRIBUTES: tuple[str, ...] = TASKS[1:]

#: Rating scale (min, max) of each task; LIDC rates calcification 1–6, the others 1–5.
SCORE_RANGES: dict[str, tuple[float, float]] = {task: (1.0, 5.0) for task in TASKS} | {
    "calcification": (1.0, 6.0)
}


def psi_column(task: str) -> str:
    """Column of a task's Eq. 5 inconsistency Ψ in the cohort table."""
    return f"psi_{task}"


PSI_COLUMNS: tuple[str, ...] = tuple(psi_column(task) for task in TASKS)


def pivots(tasks: tuple[str, ...] = TASKS) -> np.ndarray:
    """Mid-point (min + max) / 2 of each task's scale: the benign / malignant-style cut the
    paper's binary fine-tuning uses."""
    return np.array([sum(SCORE_RANGES[t]) / 2 for t in tasks])


def score_bounds(tasks: tuple[str, ...] = TASKS) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) arrays of the tasks' scales, for clipping predictions."""
    return (
        np.array([SCORE_RANGES[t][0] for t in tasks]),
        np.array([SCORE_RANGES[t][1] for t in tasks]),
    )


def clip_to_scale(scores: np.ndarray, tasks: tuple[str, ...] = TASKS) -> np.ndarray:
    """Predicted scores (n, len(tasks)) clipped to each task's rating scale."""
    low, high = score_bounds(tasks)
    return np.clip(scores, low, high)


#: Class names per modality, (negative, positive): 0 → first, 1 → second.
CLASS_NAMES: dict[str, tuple[str, str]] = {"ct": ("benign", "malignant"), "mri": ("normal", "ipmn")}
LUNG_LABELS: dict[str, int] = {"benign": 0, "malignant": 1}
MRI_LABELS: dict[str, int] = {"normal": 0, "ipmn": 1}
#: Every label a patch store's index may hold (``excluded``: mean malignancy exactly 3).
STORE_LABELS: tuple[str, ...] = ("benign", "malignant", "excluded", "normal", "ipmn")


class Weights(StrEnum):
    """Where a network's weights came from (the value is what provenance records)."""

    RANDOM_INIT = "random-init"
    IMAGENET = "imagenet"
    SPORTS1M = "sports1m"
    KINETICS400 = "kinetics400"

    @property
    def display(self) -> str:
        """How reports and method names spell it."""
        return {
            "random-init": "random-init",
            "imagenet": "ImageNet",
            "sports1m": "Sports-1M",
            "kinetics400": "Kinetics-400",
        }[self.value]
