"""Experiment E3 (paper Fig. 5): are deep features good for unsupervised classification?

k-means clustering (k = 2, fitted on the training fold, clusters named as in E2) on deep
features of the 2D slices, each layer with and without its activation; accuracy,
sensitivity and specificity per fold. The paper used ImageNet VGG16 fc7 / fc8; the networks
here (`NETWORK_LAYERS`): VGG16 (with the user's ImageNet file), EfficientNet-Lite0 (ImageNet:
pooled features before / after ReLU6 ≈ fc7 / fc7-ReLU, logits ± ReLU ≈ fc8 ± ReLU) and I3D
(Kinetics-400) on static clips (pooled Mixed_5c ≈ fc7-ReLU, logits ± ReLU ≈ fc8 ± ReLU).
Each row's paper row is the VGG layer it stands in for. A network at its seeded random
initialization (only when asked for) is tagged "random-init; not comparable with the paper".
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
#: network → {method name: (output key, the VGG layer (paper row) it stands in for)}
NETWORK_LAYERS = {
    "vgg16": {name: (key, name) for name, key in LAYERS.items()},
    "efficientnet-lite0": {
        "EffNet-L0-pool": ("pooled_linear", "VGG-fc7"),
        "EffNet-L0-pool-ReLU6": ("pooled", "VGG-fc7-ReLU"),
        "EffNet-L0-logits": ("logits", "VGG-fc8"),
        "EffNet-L0-logits-ReLU": ("logits_relu", "VGG-fc8-ReLU"),
    },
    "i3d-static": {
        "I3D-static-Mixed5c": ("mixed_5c", "VGG-fc7-ReLU"),
        "I3D-static-logits": ("logits", "VGG-fc8"),
        "I3D-static-logits-ReLU": ("logits_relu", "VGG-fc8-ReLU"),
    },
}
PRETRAINED_LABELS = ("imagenet", "kinetics400")


def weights_tag(weights_label: str) -> str:
    """Suffix of a method name for its network's weights ("" when pretrained)."""
    if weights_label in PRETRAINED_LABELS:
        return ""
    if weights_label == "random-init":
        return " (random-init; not comparable with the paper)"
    return f" ({weights_label})"


def run_e3(
    data: ClassData,
    vgg_features: Mapping[str, object],
    folds: list[Fold],
    log: ResultLog,
    weights_label: str = "imagenet",
    namings: tuple[str, ...] = ("label_free", "labels"),
    seed: int = 0,
    on_step: Callable[[str], None] | None = None,
    network: str = "vgg16",
) -> ResultLog:
    """Clustering on each available layer of ``network`` (`NETWORK_LAYERS`); the keys of
    ``vgg_features`` are that network's outputs (e.g. `vgg.extract_vgg`'s). The result rows'
    feature label is the output key, prefixed with the network for networks other than VGG
    ("efficientnet-lite0/pooled", "i3d-static/logits")."""
    if network not in NETWORK_LAYERS:
        raise ValueError(f"unknown network {network!r}; choose one of {sorted(NETWORK_LAYERS)}")
    prefix = "" if network == "vgg16" else f"{network}/"
    tag = weights_tag(weights_label)
    methods = {
        f"{name}{tag}": (f"{prefix}{key}", "cluster", paper_row)
        for name, (key, paper_row) in NETWORK_LAYERS[network].items()
    }
    features = {f"{prefix}{k}": v for k, v in vgg_features.items()}
    return run_unsupervised(
        "E3", data, features, methods, folds, log, namings, seed, on_step, weights=weights_label
    )
