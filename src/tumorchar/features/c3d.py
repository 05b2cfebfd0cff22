"""C3D: 3D CNN features of nodule volumes with 7-task fine-tuning (paper sections III-B, V-C).

Network (Tran et al.; module names of the common PyTorch port, so its Sports-1M
`c3d.pickle` loads): 3×3×3 convolutions (padding 1) with ReLU in five groups
  conv1 → pool1 (1,2,2);  conv2 → pool2;  conv3a, conv3b → pool3;  conv4a, conv4b → pool4;
  conv5a, conv5b → pool5 (2×2×2, padding (0,1,1));
then fc6, fc7 (ReLU, dropout 0.5) and a multi-task head `task_head` (one logit per task)
in place of Sports-1M's 487-way fc8.

Two presets share this code. `paper`: widths 64-128-256-512-512, fc6/fc7 of 4096, input
3×16×112×112 centre-cropped from volumes resized to 16×128×171 (≈ 77 GFLOP per clip forward);
on CUDA it runs under bf16 autocast. `cpu`: the same graph with 8× narrower layers, fc6/fc7 of
512 and a 16×32×32 clip (resized to 16×37×49, the paper's aspect) so that fine-tuning ~1000
volumes takes seconds on 2 CPU cores; it trains from random initialization (Sports-1M weights
only fit the paper shapes). Both run in channels-last-3D memory layout.

Input clips: each volume (z, y, x) is mapped to [0, 1] (CT: window `CT_WINDOW_HU`; MRI:
`intensity_window=None`, per-volume percentiles), resized to the preset's (frames, height,
width) (box-averaged along shrinking axes, then trilinear), centre-cropped, then scaled as
x = scale · (u − 0.5) (the paper preset uses scale 255, the zero-centred 8-bit range of the
Sports-1M clips; cpu uses 1), and the gray channel is copied to the 3 input channels.

Tasks and binary targets: the 7 tasks of `tumorchar.vocab.TASKS`, in that order; a mean
score s gives the label 1[s > pivot] with the pivot at the mid-point of the rating scale (3
for 1-5 scales, 3.5 for calcification's 1-6); scores equal to the pivot (and NaN) are left
out of the loss. Binary loss: mean BCE over the kept (sample, task) pairs;
regression loss: mean squared error of (s − pivot) / half-range.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tumorchar.features._netutils import (
    CT_WINDOW_HU,
    copy_matching,
    local_seed,
    pick_device,
    progress_bar,
    read_state_dict,
    resize3d,
    resolve_weights,
    save_safetensors_atomic,
    to_unit_range,
    weights_dir,
)
from tumorchar.vocab import SCORE_RANGES, TASKS, pivots  # noqa: F401 (TASKS re-exported)

SPORTS1M_FILE = "c3d.pickle"
CONV_NAMES = ("conv1", "conv2", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b")
CHECKPOINT_FORMAT = "tumorchar-c3d-1"


@dataclass(frozen=True)
class C3DPreset:
    """Width and input size of a C3D variant."""

    name: str
    widths: tuple[int, ...]  # output channels of conv1 ... conv5b (8 values)
    fc_dim: int  # width of fc6 and fc7
    resize: tuple[int, int, int]  # (frames, height, width) a volume is resized to
    crop: tuple[int, int, int]  # centre crop fed to the network
    pixel_scale: float  # x = pixel_scale * (u - 0.5), u in [0, 1]
    lr: float  # default fine-tuning learning rate (Adam)
    batch_size: int  # default batch size

    def __post_init__(self) -> None:
        d, h, w = self.crop
        if len(self.widths) != len(CONV_NAMES) or min(self.widths) < 1 or self.fc_dim < 1:
            raise ValueError(f"preset {self.name!r}: needs {len(CONV_NAMES)} positive widths")
        if d < 16 or h < 16 or w < 16:
            raise ValueError(f"preset {self.name!r}: crop {self.crop} is below 16x16x16")
        if any(c > r for c, r in zip(self.crop, self.resize, strict=True)):
            raise ValueError(f"preset {self.name!r}: crop {self.crop} exceeds resize {self.resize}")

    def pooled_shape(self) -> tuple[int, int, int]:
        """(d, h, w) after pool5: pool1 halves h, w; pool2-4 halve d, h, w; pool5 (padding
        0, 1, 1) maps d → ⌊(d − 2)/2⌋ + 1 and h → ⌊h/2⌋ + 1."""
        d, h, w = self.crop
        h, w = h // 2, w // 2
        for _ in range(3):
            d, h, w = d // 2, h // 2, w // 2
        return (d - 2) // 2 + 1, h // 2 + 1, w // 2 + 1

    def fc6_in(self) -> int:
        d, h, w = self.pooled_shape()
        return self.widths[-1] * d * h * w


PRESETS = {
    "paper": C3DPreset(
        name="paper",
        widths=(64, 128, 256, 256, 512, 512, 512, 512),
        fc_dim=4096,
        resize=(16, 128, 171),
        crop=(16, 112, 112),
        pixel_scale=255.0,
        lr=1e-4,
        batch_size=16,
    ),
    "cpu": C3DPreset(
        name="cpu",
        widths=(8, 16, 32, 32, 64, 64, 64, 64),
        fc_dim=512,
        resize=(16, 37, 49),
        crop=(16, 32, 32),
        pixel_scale=1.0,
        lr=1e-3,
        batch_size=32,
    ),
}


def get_preset(preset: str | C3DPreset) -> C3DPreset:
    if isinstance(preset, C3DPreset):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown C3D preset {preset!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[preset]


class C3D(nn.Module):
    """C3D trunk (conv1 ... fc7) + a multi-task head of `n_tasks` outputs; see module doc."""

    def __init__(self, preset: str | C3DPreset = "cpu", n_tasks: int = len(TASKS), seed: int = 0):
        super().__init__()
        self.preset = get_preset(preset)
        if n_tasks < 1:
            raise ValueError("n_tasks must be >= 1")
        self.n_tasks = n_tasks
        #: provenance of the weights: "random-init" | "sports1m", + "+finetuned-<mode>"
        self.weights_label = "random-init"
        with local_seed(seed):  # layer creation draws default inits: keep them local
            in_ch = 3
            for name, width in zip(CONV_NAMES, self.preset.widths, strict=True):
                setattr(self, name, nn.Conv3d(in_ch, width, kernel_size=3, padding=1))
                in_ch = width
            self.pool1 = nn.MaxPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2))
            self.pool2 = nn.MaxPool3d(kernel_size=2, stride=2)
            self.pool3 = nn.MaxPool3d(kernel_size=2, stride=2)
            self.pool4 = nn.MaxPool3d(kernel_size=2, stride=2)
            self.pool5 = nn.MaxPool3d(kernel_size=2, stride=2, padding=(0, 1, 1))
            self.fc6 = nn.Linear(self.preset.fc6_in(), self.preset.fc_dim)
            self.fc7 = nn.Linear(self.preset.fc_dim, self.preset.fc_dim)
            self.task_head = nn.Linear(self.preset.fc_dim, n_tasks)
            self.dropout = nn.Dropout(p=0.5)
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal conv / fc weights (ReLU gain), small normal head, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv3d | nn.Linear):
                if m is self.task_head:
                    nn.init.normal_(m.weight, 0.0, 0.01)
                else:
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Clips (B, 3, D, H, W) → fc6 pre-activation (B, fc_dim)."""
        x = self.pool1(F.relu(self.conv1(x)))
        x = self.pool2(F.relu(self.conv2(x)))
        x = self.pool3(F.relu(self.conv3b(F.relu(self.conv3a(x)))))
        x = self.pool4(F.relu(self.conv4b(F.relu(self.conv4a(x)))))
        x = self.pool5(F.relu(self.conv5b(F.relu(self.conv5a(x)))))
        return self.fc6(torch.flatten(x, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Task logits (B, n_tasks)."""
        h = self.dropout(F.relu(self.trunk(x)))
        h = self.dropout(F.relu(self.fc7(h)))
        return self.task_head(h)

    def flops_per_clip(self) -> float:
        """Forward FLOPs of one clip (a multiply-add counts 2): convs and fc layers."""
        d, h, w = self.preset.crop
        total, in_ch = 0.0, 3
        sizes = {"conv1": (d, h, w), "conv2": (d, h // 2, w // 2)}
        d2, h2, w2 = d // 2, h // 4, w // 4
        for group in (("conv3a", "conv3b"), ("conv4a", "conv4b"), ("conv5a", "conv5b")):
            for name in group:
                sizes[name] = (d2, h2, w2)
            d2, h2, w2 = d2 // 2, h2 // 2, w2 // 2
        for name, width in zip(CONV_NAMES, self.preset.widths, strict=True):
            total += 2.0 * in_ch * width * 27 * math.prod(sizes[name])
            in_ch = width
        for fc in (self.fc6, self.fc7, self.task_head):
            total += 2.0 * fc.in_features * fc.out_features
        return total


# ------------------------------------------------------------------------------ clips


def prepare_clips(
    volumes: np.ndarray | Sequence[np.ndarray],
    preset: str | C3DPreset = "cpu",
    intensity_window: tuple[float, float] | None = CT_WINDOW_HU,
) -> torch.Tensor:
    """Volumes (N, z, y, x) or a list of 3D arrays of any sizes → clips (N, 3, D, H, W) float32:
    window to [0, 1], resize to `preset.resize` (`resize3d`), centre crop to `preset.crop`,
    x = pixel_scale · (u − 0.5), gray copied to 3 channels (an expanded view, no copy)."""
    return _gray_clips(volumes, get_preset(preset), intensity_window).expand(-1, 3, -1, -1, -1)


def _gray_clips(
    volumes: np.ndarray | Sequence[np.ndarray],
    p: C3DPreset,
    intensity_window: tuple[float, float] | None,
) -> torch.Tensor:
    if isinstance(volumes, np.ndarray) and volumes.ndim == 3:
        volumes = volumes[None]
    (fd, fh, fw), (cd, ch, cw) = p.resize, p.crop
    od, oh, ow = (fd - cd) // 2, (fh - ch) // 2, (fw - cw) // 2
    out = torch.empty((len(volumes), 1, cd, ch, cw), dtype=torch.float32)
    for i, vol in enumerate(volumes):
        vol = np.asarray(vol)
        if vol.ndim != 3 or min(vol.shape) < 1:
            raise ValueError(f"volume {i}: expected a 3D array (z, y, x), got shape {vol.shape}")
        try:
            u = torch.from_numpy(to_unit_range(vol, intensity_window))[None, None]
        except ValueError as err:
            raise ValueError(f"volume {i}: {err}") from err
        r = resize3d(u, p.resize)
        out[i] = r[0, :, od : od + cd, oh : oh + ch, ow : ow + cw]
    return (out - 0.5) * p.pixel_scale


# ------------------------------------------------------------------------------ weights


def load_sports1m(model: C3D, path: str | os.PathLike | None = None) -> C3D:
    """Load the Sports-1M weights of the common PyTorch port (`c3d.pickle`, a torch-saved state
    dict; read with `torch.load(weights_only=True)`, no code execution) into conv1 ... fc7.
    fc8 (487 Sports-1M classes) is skipped; the task head keeps its initialization.

    Only the paper preset has the port's shapes; for any other preset this raises ValueError
    (its narrower layers have no pretrained counterpart, so it trains from random init).
    `path=None` looks for `<weights dir>/c3d.pickle`.
    """
    if model.preset.name != "paper" or model.preset != PRESETS["paper"]:
        raise ValueError(
            f"Sports-1M weights fit only the 'paper' C3D preset (64-512 channels, fc 4096, "
            f"3x16x112x112 input); the '{model.preset.name}' preset has other layer shapes "
            "and is trained from random initialization instead."
        )
    found = resolve_weights(path, SPORTS1M_FILE)
    if found is None:
        raise FileNotFoundError(
            f"no Sports-1M C3D weights found: get the common PyTorch port's '{SPORTS1M_FILE}' "
            f"(~300 MB) and put it at {weights_dir() / SPORTS1M_FILE} (or set "
            "TUMORCHAR_WEIGHTS_DIR, or pass its path)."
        )
    state = read_state_dict(found)
    layers = (*CONV_NAMES, "fc6", "fc7")
    names = [f"{layer}.{kind}" for layer in layers for kind in ("weight", "bias")]
    copy_matching(model, state, names, f"Sports-1M C3D weights from {found}")
    model.weights_label = "sports1m"
    return model


def save_checkpoint(model: C3D, path: str | os.PathLike) -> Path:
    """Save weights + preset + n_tasks as safetensors (atomic write)."""
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "preset": json.dumps(dataclasses.asdict(model.preset)),
        "n_tasks": str(model.n_tasks),
        "weights_label": model.weights_label,
    }
    return save_safetensors_atomic(model.state_dict(), path, metadata)


def load_checkpoint(path: str | os.PathLike) -> C3D:
    """Rebuild a C3D saved by `save_checkpoint` (eval mode, on CPU)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a tumorchar C3D checkpoint")
    fields = json.loads(meta["preset"])
    preset = C3DPreset(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    model = C3D(preset, n_tasks=int(meta["n_tasks"]))
    model.load_state_dict(load_file(str(path)), strict=True)
    model.weights_label = meta.get("weights_label", "unknown")
    return model.eval()


# ------------------------------------------------------------------------------ training


def task_pivots(n_tasks: int = len(TASKS)) -> np.ndarray:
    """Mid-point pivot of each paper task's rating scale: (min + max) / 2."""
    if n_tasks != len(TASKS):
        raise ValueError(f"default pivots exist for the {len(TASKS)} paper tasks; pass pivots=")
    return pivots(TASKS)


def encode_targets(
    scores: np.ndarray, mode: str, pivots: np.ndarray, half_ranges: np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean scores (N, T) → (targets, mask). binary: 1[s > pivot], masked where s = pivot or
    NaN; regression: (s − pivot) / half_range, masked where NaN."""
    s = np.asarray(scores, dtype=np.float64)
    if mode == "binary":
        y, keep = (s > pivots).astype(np.float32), np.isfinite(s) & (s != pivots)
    elif mode == "regression":
        hr = np.ones_like(pivots) if half_ranges is None else half_ranges
        y, keep = ((s - pivots) / hr).astype(np.float32), np.isfinite(s)
    else:
        raise ValueError(f"mode must be 'binary' or 'regression', got {mode!r}")
    return torch.from_numpy(np.where(keep, y, 0.0).astype(np.float32)), torch.from_numpy(keep)


def masked_loss(logits: torch.Tensor, y: torch.Tensor, keep: torch.Tensor, mode: str):
    """Mean BCE-with-logits (binary) or squared error (regression) over kept entries."""
    if mode == "binary":
        per = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    else:
        per = (logits - y) ** 2
    keep = keep.to(per.dtype)
    return (per * keep).sum() / keep.sum().clamp_min(1.0)


def finetune(
    model: C3D,
    volumes: np.ndarray | Sequence[np.ndarray],
    targets: np.ndarray,
    mode: str = "binary",
    epochs: int = 3,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    pivots: np.ndarray | None = None,
    weight_decay: float = 1e-4,
    intensity_window: tuple[float, float] | None = CT_WINDOW_HU,
    device: str | torch.device | None = None,
    progress: bool = False,
    deterministic: bool = True,
) -> dict[str, list[float]]:
    """Fine-tune all layers on the multi-task loss (module doc) with Adam; return the history
    {"loss": mean training loss per epoch}. Shuffling and dropout are seeded by `seed` alone
    (local generators; the global random state is untouched). On CPU the run is bitwise
    repeatable for a given thread count; on CUDA `deterministic` selects deterministic cuDNN
    kernels (max-pool backward still uses atomics, so GPU runs agree closely, not bitwise)."""
    p = model.preset
    scores = np.asarray(targets, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    if scores.shape != (len(volumes), model.n_tasks):
        raise ValueError(
            f"targets must have shape (n_volumes, n_tasks) = ({len(volumes)}, {model.n_tasks}), "
            f"got {scores.shape}"
        )
    piv = task_pivots(model.n_tasks) if pivots is None else np.asarray(pivots, dtype=np.float64)
    half = None
    if mode == "regression" and pivots is None:
        half = np.array([(SCORE_RANGES[t][1] - SCORE_RANGES[t][0]) / 2 for t in TASKS])
    y_all, keep_all = encode_targets(scores, mode, piv, half)
    batch_size = batch_size or p.batch_size
    dev = pick_device(device)
    clips = _gray_clips(volumes, p, intensity_window)
    model.to(dev).train()
    on_cuda = dev.type == "cuda"
    model.to(memory_format=torch.channels_last_3d)
    opt = torch.optim.Adam(model.parameters(), lr=lr or p.lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    history: dict[str, list[float]] = {"loss": []}
    n = len(clips)
    cudnn = torch.backends.cudnn.flags(
        enabled=True, benchmark=not deterministic, deterministic=deterministic
    )
    with (
        local_seed(seed, dev),
        cudnn,
        progress_bar(progress, epochs * n, "C3D fine-tuning") as bar,
    ):
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen)
            total, count = 0.0, 0
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                x = _to_device(clips[idx], dev)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda):
                    logits = model(x)
                loss = masked_loss(logits.float(), y_all[idx].to(dev), keep_all[idx].to(dev), mode)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                count += len(idx)
                bar(len(idx))
            history["loss"].append(total / max(count, 1))
    if "+finetuned" not in model.weights_label:
        model.weights_label += f"+finetuned-{mode}"
    model.eval()
    return history


def extract_fc6(
    model: C3D,
    volumes: np.ndarray | Sequence[np.ndarray],
    batch_size: int | None = None,
    relu: bool = True,
    intensity_window: tuple[float, float] | None = CT_WINDOW_HU,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> np.ndarray:
    """fc6 features (N, fc_dim) float32 in eval mode: max(0, fc6) (the C3D feature, default)
    or the pre-activation with `relu=False`."""
    batch_size = batch_size or 2 * model.preset.batch_size
    dev = pick_device(device)
    model.to(dev).eval()
    on_cuda = dev.type == "cuda"
    model.to(memory_format=torch.channels_last_3d)
    out = np.empty((len(volumes), model.preset.fc_dim), dtype=np.float32)
    n = len(volumes)
    with torch.inference_mode(), progress_bar(progress, n, "C3D fc6") as bar:
        for start in range(0, n, batch_size):
            clips = _gray_clips(volumes[start : start + batch_size], model.preset, intensity_window)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda):
                h = model.trunk(_to_device(clips, dev))
            h = F.relu(h) if relu else h
            out[start : start + len(clips)] = h.float().cpu().numpy()
            bar(len(clips))
    return out


def _to_device(gray: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """Gray clips → 3-channel channels-last-3D input on `dev` (oneDNN and cuDNN run 3D
    convolutions faster in this layout: about 1.5x for the cpu preset on this machine).
    Folding the copies into a 1-channel conv1 (weights summed over channels) is exact but
    measured slower with oneDNN here (single-channel kernels), so the copies stay."""
    x = gray.to(dev, non_blocking=True).expand(-1, 3, -1, -1, -1)
    return x.contiguous(memory_format=torch.channels_last_3d)
