"""Helpers shared by the network feature extractors (VGG16, C3D, I3D, EfficientNet).

Intensity mapping, volume resizing, TensorFlow "SAME" padding, weight-file locations and
loading, atomic safetensors writes, and local seeding. Nothing here unpickles: state dicts
are read with `torch.load(weights_only=True)` (tensors and plain containers only, no code
execution) or with safetensors.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tumorchar._io import atomic_path
from tumorchar.progress import progress_bar as _progress_bar

#: CT intensity window in Hounsfield units mapped to [0, 1]: from air (-1000 HU) to dense
#: calcification (+400 HU). Lung parenchyma (~-850 HU) lands near 0.1, ground glass (~-600 HU)
#: near 0.29, solid soft tissue (0-50 HU) near 0.71-0.75, calcium at 1.
CT_WINDOW_HU: tuple[float, float] = (-1000.0, 400.0)

#: Percentiles used when no fixed window is given (MRI, arbitrary units): each image is
#: mapped so that its 0.5th percentile goes to 0 and its 99.5th to 1.
ROBUST_PERCENTILES: tuple[float, float] = (0.5, 99.5)

WEIGHTS_ENV = "TUMORCHAR_WEIGHTS_DIR"


def to_unit_range(image: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """Map intensities linearly to [0, 1] and clip: u = clip((x - lo) / (hi - lo), 0, 1).

    `window=(lo, hi)` is a fixed window (CT in HU: `CT_WINDOW_HU`). `window=None` takes
    lo, hi as the image's own 0.5th / 99.5th percentiles (MRI, whose units are arbitrary);
    a constant image maps to 0.
    """
    x = np.asarray(image, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("image contains NaN or infinite values")
    if window is None:
        lo, hi = np.percentile(x, ROBUST_PERCENTILES)
    else:
        lo, hi = float(window[0]), float(window[1])
        if not hi > lo:
            raise ValueError(f"intensity window must satisfy lo < hi, got {window}")
    if hi <= lo:
        return np.zeros_like(x)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32, copy=False)


def resize3d(u: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Resize (N, C, z, y, x) to `size`: axes that shrink are first box-averaged to their
    target length (adaptive average pooling, which avoids aliasing the noise), then trilinear
    interpolation (align_corners=False) brings every axis to `size`."""
    shrunk = tuple(min(n, t) for n, t in zip(u.shape[2:], size, strict=True))
    if shrunk != tuple(u.shape[2:]):
        u = F.adaptive_avg_pool3d(u, shrunk)
    if tuple(u.shape[2:]) == tuple(size):
        return u
    return F.interpolate(u, size=size, mode="trilinear", align_corners=False)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding of one axis: the output has ⌈size / stride⌉ positions and the
    total padding p = max((⌈size / stride⌉ − 1)·stride + kernel − size, 0) is split with the
    extra element at the end, (⌊p/2⌋, p − ⌊p/2⌋)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(
    x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...], value: float = 0.0
) -> torch.Tensor:
    """Pad the last len(kernel) axes of `x` as TensorFlow's "SAME" does (`same_padding`), with
    `value` (0 before a convolution, −inf before a max pool, whose padded cells TF ignores)."""
    if len(kernel) != len(stride):
        raise ValueError("kernel and stride need one entry per padded axis")
    pads: list[int] = []  # F.pad order: last axis first
    sizes = x.shape[-len(kernel) :]
    for n, k, s in zip(reversed(sizes), reversed(kernel), reversed(stride), strict=True):
        pads += same_padding(int(n), k, s)
    return F.pad(x, pads, value=value) if any(pads) else x


def weights_dir() -> Path:
    """Folder searched for pretrained weight files: `$TUMORCHAR_WEIGHTS_DIR`, else
    `~/.cache/tumorchar/weights`."""
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env) if env else Path.home() / ".cache" / "tumorchar" / "weights"


def resolve_weights(path: str | os.PathLike | None, file_name: str) -> Path | None:
    """The weight file to use: `path` if given (it must exist), else `weights_dir()/file_name`
    if that exists, else None."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"weights file not found: {p}")
        return p
    default = weights_dir() / file_name
    return default if default.is_file() else None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from `.safetensors`, or from a torch-saved file with
    `torch.load(weights_only=True)`, which refuses anything but tensors and plain containers."""
    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for non-weights content
        raise ValueError(
            f"{p} is not a weights-only state dict (torch.load(weights_only=True) failed: "
            f"{err.__class__.__name__})"
        ) from err
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{p} does not hold a state dict of tensors")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def copy_matching(
    model: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    names: list[str],
    source: str,
) -> None:
    """Copy `state[name]` into the model's parameter `name` for every name, after checking
    that all are present with the model's shapes; raise a ValueError listing every problem."""
    own = model.state_dict()
    missing = [n for n in names if n not in state]
    wrong = [
        f"{n}: file {tuple(state[n].shape)} vs model {tuple(own[n].shape)}"
        for n in names
        if n in state and state[n].shape != own[n].shape
    ]
    if missing or wrong:
        lines = [f"cannot load {source}:"]
        if missing:
            lines.append(f"  missing tensors: {', '.join(missing)}")
        if wrong:
            lines.append("  shape mismatches: " + "; ".join(wrong))
        raise ValueError("\n".join(lines))
    with torch.no_grad():
        for n in names:
            own[n].copy_(state[n].to(own[n].dtype))


def save_safetensors_atomic(
    tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str]
) -> Path:
    """Write tensors to `path` as safetensors via a temp file in the same folder + rename."""
    from safetensors.torch import save_file

    p = Path(path)
    with atomic_path(p) as tmp:
        flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        save_file(flat, str(tmp), metadata)
    return p


@contextlib.contextmanager
def local_seed(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Seed torch's default generators inside the block only (dropout, init); the caller's
    global random state is restored on exit."""
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda" if devices else "cpu"):
        torch.manual_seed(seed)
        yield


def pick_device(device: str | torch.device | None) -> torch.device:
    """`device` if given, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def progress_bar(enabled: bool, total: int, label: str = "features"):
    """`tumorchar.progress.progress_bar` (transient): yields ``advance(k=1)``."""
    return _progress_bar(enabled, total, label, transient=True)


def batched_2d_outputs(
    forward,
    model: torch.nn.Module,
    slices,
    widths: dict[str, int],
    *,
    preprocess,
    intensity_window,
    batch_size: int,
    device,
    bf16: bool | None,
    progress: bool,
    label: str,
) -> dict[str, np.ndarray]:
    """Run `forward(model, x) -> {key: tensor}` over 2D slices in batches, eval mode,
    inference_mode, channels-last layout, bfloat16 autocast when `bf16` (default: on CUDA
    only). Returns one (N, width) float32 array per key of `widths` ({key: width}; the
    width shapes the (0, width) arrays of an empty input)."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    dev = pick_device(device)
    use_bf16 = dev.type == "cuda" if bf16 is None else bf16
    model = model.to(dev).eval().to(memory_format=torch.channels_last)
    n = len(slices)
    chunks: dict[str, list[np.ndarray]] = {k: [] for k in widths}
    with torch.inference_mode(), progress_bar(progress, n, label) as advance:
        for start in range(0, n, batch_size):
            x = preprocess(slices[start : start + batch_size], intensity_window)
            x = x.to(dev).contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
                outs = forward(model, x)
            for k in widths:
                chunks[k].append(outs[k].float().cpu().numpy())
            advance(len(x))
    if n == 0:
        return {k: np.zeros((0, width), np.float32) for k, width in widths.items()}
    return {k: np.concatenate(v).astype(np.float32, copy=False) for k, v in chunks.items()}
