"""I3D and EfficientNet-Lite0 on a CUDA device: bf16 autocast, channels-last; clips/s and the
fraction of the device's bf16 peak, for the `full` I3D setting (32×224×224 clips, training
every layer) and the `cpu` setting's clip size, against the peak measured in the same run
(a large bf16 matmul). Finishes in well under 5 minutes (each figure is timed for a few
seconds at most).

    python benchmarks/gpu_pretrained.py [--batch 16] [--seconds 4]

Model FLOPs: I3D counted on the meta device (`I3D.flops_per_clip`, multiply-add = 2);
training ≈ 3 × forward; EfficientNet-Lite0 0.39 G multiply-adds at 224² (Tan & Le 2019),
counted the same way here. Random-init weights are used when the converted files are missing:
the arithmetic is the same, and the output says which.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tumorchar.features import efficientnet as ef  # noqa: E402
from tumorchar.features import i3d  # noqa: E402


def matmul_peak_bf16(n: int = 8192, reps: int = 30) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start)


def per_second(step, batch: int, seconds: float) -> float:
    """Items per second of `step()` (batch items each), timed for about `seconds`."""
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    start, reps = time.perf_counter(), 0
    while True:
        step()
        reps += 1
        if reps % 5 == 0:
            torch.cuda.synchronize()
            if time.perf_counter() - start > seconds:
                break
    torch.cuda.synchronize()
    return batch * reps / (time.perf_counter() - start)


def conv2d_flops(model: nn.Module, size: int) -> float:
    with torch.device("meta"):
        meta = type(model)()
    total = 0.0

    def count(mod, _inp, out):
        nonlocal total
        total += 2.0 * mod.weight[0].numel() * out.numel()

    for m in meta.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            m.register_forward_hook(count)
    with torch.no_grad():
        meta.features(torch.empty((1, 3, size, size), device="meta"))
    return total


def bench_i3d(model: i3d.I3D, frames: int, size: int, batch: int, seconds: float, peak: float):
    dev = torch.device("cuda")
    flops = model.flops_per_clip(frames, size)
    x = torch.rand(batch, 3, frames, size, size, device=dev) * 2 - 1
    x = x.contiguous(memory_format=torch.channels_last_3d)
    y = torch.rand(batch, 7, device=dev)
    model = model.to(dev).to(memory_format=torch.channels_last_3d)
    model.add_task_head(7)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def forward():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            model(x)

    def train():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x)["tasks"]
        loss = F.mse_loss(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.eval()
    fwd = per_second(forward, batch, seconds)
    model.dropout.train()
    trn = per_second(train, batch, seconds)
    model.eval()
    print(
        f"  I3D {frames}x{size}x{size}, batch {batch}, {flops / 1e9:.1f} GFLOP/clip: "
        f"features {fwd:8.1f} clips/s = {fwd * flops / peak:6.1%} of peak; "
        f"training (all layers) {trn:8.1f} clips/s = {trn * 3 * flops / peak:6.1%} of peak"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device on this machine: nothing measured")
        return
    torch.backends.cudnn.benchmark = True
    peak = matmul_peak_bf16()
    net = i3d.load_i3d(allow_random_init=True)
    eff = ef.load_efficientnet_lite0(allow_random_init=True)
    print(
        f"{torch.cuda.get_device_name()}: measured bf16 matmul peak {peak / 1e12:.0f} TFLOP/s; "
        f"weights I3D {net.weights_label}, EfficientNet-Lite0 {eff.weights_label}"
    )
    full, cpu = i3d.get_setting("full"), i3d.get_setting("cpu")
    bench_i3d(net, full.frames, full.size, args.batch, args.seconds, peak)
    bench_i3d(net, cpu.frames, cpu.size, 8 * args.batch, args.seconds, peak)
    dev = torch.device("cuda")
    eff = eff.to(dev).to(memory_format=torch.channels_last)
    flops = conv2d_flops(eff, ef.IMAGE_SIZE)
    batch = 16 * args.batch
    x = torch.rand(batch, 3, ef.IMAGE_SIZE, ef.IMAGE_SIZE, device=dev)
    x = x.contiguous(memory_format=torch.channels_last)

    def forward():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            eff.features(x)

    rate = per_second(forward, batch, args.seconds)
    print(
        f"  EfficientNet-Lite0 224x224, batch {batch}, {flops / 1e9:.2f} GFLOP/image: "
        f"features {rate:8.1f} images/s = {rate * flops / peak:6.1%} of peak (depthwise "
        "convolutions are memory-bound: a low fraction is expected)"
    )


if __name__ == "__main__":
    main()
