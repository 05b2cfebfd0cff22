"""Experiment E3 (paper Fig. 5): are deep features good for unsupervised classification?

k-means clustering (k = 2, fitted on the training fold, clusters named as in E2) on VGG16
fc7 and fc8 activations of the 2D slices, each with and without ReLU; accuracy, sensitivity
and specificity per fold. Without an ImageNet weights file the VGG features come from the
network at its seeded random initialization, and the method names say "random-init".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from tumorchar.experiments.e2_unsupervised import run_unsupervised
from tumorchar.experiments.e4_upper_bound import ClassData
from tumorchar.experiments.protocol import Fold
from tumorchar.experiments.results import ResultLog

LAYERS = {
    "VGG-fc7": "fc7",
    "VGG-fc7-ReLU": "fc7_relu",
    "VGG-fc8": "fc8",
    "VGG-fc8-ReLU": "fc8_relu",
}


def run_e3(
    data: ClassData,
    vgg_features: Mapping[str, object],
    folds: list[Fold],
    log: ResultLog,
    weights_label: str = "imagenet",
    namings: tuple[str, ...] = ("label_free", "labels"),
    seed: int = 0,
    on_step: Callable[[str], None] | None = None,
) -> ResultLog:
    """Clustering on each available VGG layer of `LAYERS` (keys of ``vgg_features`` as
    returned by `tumorchar.features.vgg.extract_vgg`)."""
    tag = "" if weights_label == "imagenet" else f" ({weights_label})"
    methods = {f"{name}{tag}": (key, "cluster", name) for name, key in LAYERS.items()}
    return run_unsupervised(
        "E3", data, vgg_features, methods, folds, log, namings, seed, on_step,
        weights=weights_label,
    )  # fmt: skip
