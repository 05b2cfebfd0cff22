"""VGG16 fc7 / fc8 features of 2D slices (paper section V-D, Fig. 5).

The network is defined here (no torchvision) with torchvision's parameter names
(`features.0.weight` ... `features.28.bias`, `classifier.0.weight` ... `classifier.6.bias`),
so torchvision's ImageNet file `vgg16-397923af.pth` loads directly, weights only.

Preprocessing of a slice (H, W):
  1. intensities → [0, 1] with `to_unit_range`: CT in HU through the fixed window
     `CT_WINDOW_HU` = (-1000, 400) HU; MRI (`intensity_window=None`) through each slice's
     own 0.5th-99.5th percentiles;
  2. bilinear resize to 224 × 224;
  3. grayscale copied to the 3 input channels, then ImageNet normalization
     x_c = (u - mean_c) / std_c with mean = (0.485, 0.456, 0.406), std = (0.229, 0.224, 0.225).

Features (one forward pass, eval mode, so no dropout):
  fc7 = W7 · relu(W6 · v + b6) + b7            fc7_relu = max(0, fc7)
  fc8 = W8 · fc7_relu + b8                      fc8_relu = max(0, fc8)
with v the flattened 512×7×7 output of the convolutional part.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tumorchar.features._netutils import (
    CT_WINDOW_HU,
    batched_2d_outputs,
    copy_matching,
    read_state_dict,
    resolve_weights,
    to_unit_range,
    weights_dir,
)

VGG16_FILE = "vgg16-397923af.pth"
IMAGE_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURE_KEYS = ("fc7", "fc7_relu", "fc8", "fc8_relu")
# Configuration "D" of Simonyan & Zisserman: conv widths, "M" = 2×2 max pooling.
_CFG_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16(nn.Module):
    """VGG16 (configuration D) with torchvision's module layout and parameter names."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.weights_label = "untrained"
        layers: list[nn.Module] = []
        in_ch = 3
        for v in _CFG_D:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                conv = nn.Conv2d(in_ch, int(v), kernel_size=3, padding=1)
                layers += [conv, nn.ReLU(inplace=True)]
                in_ch = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),  # fc6
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(4096, 4096),  # fc7
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(4096, num_classes),  # fc8
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (fc8)."""
        return self.fc_outputs(x)["fc8"]

    def fc_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """fc7 and fc8 before and after ReLU from one pass (see the module docstring)."""
        v = torch.flatten(self.avgpool(self.features(x)), 1)
        fc6, _, drop6, fc7, _, drop7, fc8 = self.classifier
        h6 = drop6(F.relu(fc6(v)))
        z7 = fc7(h6)
        h7 = F.relu(z7)
        z8 = fc8(drop7(h7))
        return {"fc7": z7, "fc7_relu": h7, "fc8": z8, "fc8_relu": F.relu(z8)}

    def init_random(self, seed: int) -> None:
        """torchvision's initialization, seeded: conv weights Kaiming-normal (fan-out, ReLU),
        linear weights N(0, 0.01²), biases 0."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(
                        m.weight, mode="fan_out", nonlinearity="relu", generator=gen
                    )
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0.0, 0.01, generator=gen)
                    nn.init.zeros_(m.bias)


def missing_weights_message() -> str:
    """What to do when no ImageNet VGG16 weights are available."""
    return (
        "no ImageNet VGG16 weights found. Get torchvision's file "
        f"'{VGG16_FILE}' (the IMAGENET1K_V1 VGG16 weights, ~528 MB) and either put it at "
        f"{weights_dir() / VGG16_FILE} (the folder can be changed with the environment "
        "variable TUMORCHAR_WEIGHTS_DIR) or pass its path (weights=PATH; CLI: "
        "`tumorchar features vgg --weights PATH`, `tumorchar reproduce --vgg-weights PATH`). "
        "A .safetensors export of the same state dict works too. To run without pretrained "
        "weights, allow random initialization explicitly (allow_random_init=True, CLI "
        "--allow-random-init); the features are then labelled 'random-init'."
    )


def load_vgg16(
    weights: str | os.PathLike | None = None,
    allow_random_init: bool = False,
    seed: int = 0,
) -> tuple[VGG16, str]:
    """Build VGG16 in eval mode and return `(model, weights_label)`.

    `weights`: a torchvision-format state dict (`.pth` read with `torch.load(weights_only=True)`,
    or `.safetensors`); if None, `<weights dir>/vgg16-397923af.pth` is used when present.
    Without weights this raises FileNotFoundError unless `allow_random_init`, in which case
    the network is initialized from `seed` and labelled "random-init" (else "imagenet").
    """
    path = resolve_weights(weights, VGG16_FILE)
    if path is None and not allow_random_init:
        raise FileNotFoundError(missing_weights_message())
    with torch.device("meta"):  # skip the default init: every tensor is filled below
        model = VGG16()
    model = model.to_empty(device="cpu")
    if path is not None:
        state = read_state_dict(path)
        copy_matching(model, state, list(model.state_dict()), f"VGG16 weights from {path}")
        label = "imagenet"
    else:
        model.init_random(seed)
        label = "random-init"
    model.weights_label = label  # travels with the model into provenance records
    return model.eval(), label


def preprocess_slices(
    slices: np.ndarray | Sequence[np.ndarray],
    intensity_window: tuple[float, float] | None = CT_WINDOW_HU,
    image_size: int = IMAGE_SIZE,
) -> torch.Tensor:
    """Slices (N, H, W) or a list of 2D arrays of any sizes → (N, 3, 224, 224) float32 network
    input: window to [0, 1], bilinear resize, 3 channels, ImageNet normalization."""
    if isinstance(slices, np.ndarray) and slices.ndim == 2:
        slices = slices[None]
    out = torch.empty((len(slices), 1, image_size, image_size), dtype=torch.float32)
    for i, s in enumerate(slices):
        s = np.asarray(s)
        if s.ndim != 2 or min(s.shape) < 1:
            raise ValueError(f"slice {i}: expected a 2D array, got shape {s.shape}")
        try:
            u = torch.from_numpy(to_unit_range(s, intensity_window))[None, None]
        except ValueError as err:
            raise ValueError(f"slice {i}: {err}") from err
        out[i] = F.interpolate(
            u, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True
        )[0]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (out.clamp_(0.0, 1.0).expand(-1, 3, -1, -1) - mean) / std


def extract_vgg(
    model: VGG16,
    slices: np.ndarray | Sequence[np.ndarray],
    batch_size: int = 16,
    intensity_window: tuple[float, float] | None = CT_WINDOW_HU,
    device: str | torch.device | None = None,
    bf16: bool | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """fc7, fc7_relu, fc8, fc8_relu features of 2D slices: dict of (N, 4096) / (N, 1000)
    float32 arrays, from one forward pass per batch in eval mode under inference_mode.

    `intensity_window`: (lo, hi) mapped to [0, 1] (default: CT in HU), or None for a
    per-slice percentile window (MRI). `bf16`: run under bfloat16 autocast (default: on CUDA
    only; on a CPU with AVX512-BF16 it is ~1.6x faster at ~1 % relative feature error).
    The network runs in channels-last memory layout (faster oneDNN / cuDNN kernels).
    """
    return batched_2d_outputs(
        lambda net, x: net.fc_outputs(x),
        model,
        slices,
        {k: 4096 if k.startswith("fc7") else 1000 for k in FEATURE_KEYS},
        preprocess=preprocess_slices,
        intensity_window=intensity_window,
        batch_size=batch_size,
        device=device,
        bf16=bf16,
        progress=progress,
        label="VGG16 features",
    )
