"""C3D throughput: the `cpu` preset's fine-tuning and fc6 extraction samples/s on this machine,
against the issue's budgets (fine-tune ~1000 volumes in <= 30 s, extract ~1400 in <= 20 s)
and against the `paper` preset on the same CPU, measured in the same run. With CUDA, also the
`paper` preset's bf16 training / extraction clips/s and their fraction of a measured bf16
matmul peak (model FLOPs counted analytically; training = 3 x forward).

    python benchmarks/bench_c3d.py [--train 256] [--extract 512] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tumorchar.features import c3d  # noqa: E402


def synthetic_nodules(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """CT-like volumes in HU (lung background + a solid blob of random radius) and 7 scores."""
    rng = np.random.default_rng(seed)
    grid = np.indices((size, size, size)) - (size - 1) / 2
    r = np.sqrt((grid**2).sum(axis=0))
    vols = rng.normal(-850.0, 60.0, size=(n, size, size, size)).astype(np.float32)
    radii = rng.uniform(2.0, size / 3, size=n)
    for v, rad in zip(vols, radii, strict=True):
        v[r < rad] += 800.0
    scores = np.clip(1 + 4 * (radii[:, None] / (size / 3)) + rng.normal(0, 0.5, (n, 7)), 1, 5)
    return vols, scores


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process); on a shared machine CPU seconds / threads
    estimates the wall time the same work takes on idle cores."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_cpu_preset(args) -> None:
    vols, scores = synthetic_nodules(max(args.train, args.extract), args.volume_size)
    model = c3d.C3D("cpu", seed=0)
    c3d.finetune(model, vols[:32], scores[:32], epochs=1, seed=0)  # warm-up (oneDNN kernels)
    t_train, cpu_train = timed(
        lambda: c3d.finetune(model, vols[: args.train], scores[: args.train], epochs=1, seed=0)
    )
    t_extract, cpu_extract = timed(lambda: c3d.extract_fc6(model, vols[: args.extract]))
    train_rate, extract_rate = args.train / t_train, args.extract / t_extract
    finetune_1000 = 1000 * args.epochs / train_rate
    extract_1400 = 1400 / extract_rate
    load = os.getloadavg()[0]
    p = model.preset
    print(
        f"cpu preset: widths {p.widths}, fc {p.fc_dim}, clip 3x{p.crop}, "
        f"{model.flops_per_clip() / 1e6:.0f} MFLOP/clip forward, torch threads "
        f"{torch.get_num_threads()}, volumes {args.volume_size}^3"
    )
    print(
        f"  fine-tuning : {train_rate:8.1f} samples/s  -> 1000 volumes x {args.epochs} epochs "
        f"in {finetune_1000:5.1f} s (budget 30 s: {30 / finetune_1000:4.2f}x inside)"
    )
    print(
        f"  fc6 extract : {extract_rate:8.1f} samples/s  -> 1400 volumes in {extract_1400:5.1f} s "
        f"(budget 20 s: {20 / extract_1400:4.2f}x inside)"
    )
    print(
        f"  CPU seconds per sample: fine-tuning {cpu_train / args.train * 1e3:.1f} ms, "
        f"extraction {cpu_extract / args.extract * 1e3:.1f} ms (load average {load:.1f} on "
        f"{os.cpu_count()} cores: wall figures are pessimistic when load > cores)"
    )
    if args.paper_clips > 0:
        paper = c3d.C3D("paper", seed=0)
        few = vols[: args.paper_clips]
        c3d.extract_fc6(paper, few[:1], device="cpu")
        t_paper, _ = timed(lambda: c3d.extract_fc6(paper, few, batch_size=len(few), device="cpu"))
        paper_rate = len(few) / t_paper
        print(
            f"  paper preset on this CPU: fc6 extract {paper_rate:6.2f} clips/s; the cpu preset "
            f"extracts {extract_rate / paper_rate:6.0f}x faster"
        )


def matmul_peak_bf16(n: int = 8192, reps: int = 20) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start)


def cuda_rate(step, batch: int, reps: int) -> float:
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        step()
    torch.cuda.synchronize()
    return batch * reps / (time.perf_counter() - start)


def bench_paper_cuda(args) -> None:
    dev = torch.device("cuda")
    peak = matmul_peak_bf16()
    model = c3d.C3D("paper", seed=0).to(dev).to(memory_format=torch.channels_last_3d)
    flops = model.flops_per_clip()
    x = torch.randn(args.gpu_batch, 3, 16, 112, 112, device=dev)
    x = x.contiguous(memory_format=torch.channels_last_3d)
    y = torch.randint(0, 2, (args.gpu_batch, 7), device=dev).float()
    keep = torch.ones_like(y, dtype=torch.bool)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def train_step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x)
        loss = c3d.masked_loss(logits.float(), y, keep, "binary")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def extract_step():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            torch.relu(model.trunk(x))

    model.train()
    train = cuda_rate(train_step, args.gpu_batch, args.gpu_reps)
    model.eval()
    extract = cuda_rate(extract_step, args.gpu_batch, args.gpu_reps)
    print(
        f"paper preset on {torch.cuda.get_device_name()}: bf16 matmul peak "
        f"{peak / 1e12:.0f} TFLOP/s, {flops / 1e9:.1f} GFLOP/clip forward, batch {args.gpu_batch}"
    )
    print(
        f"  training  : {train:8.1f} clips/s = {train * 3 * flops / peak:6.1%} of peak "
        "(plain PyTorch reference ~36 %, aim >= 50 %)"
    )
    print(
        f"  extraction: {extract:8.1f} clips/s = {extract * flops / peak:6.1%} of peak "
        "(plain PyTorch reference ~28 %, aim >= 45 %)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=256, help="volumes in the timed epoch")
    parser.add_argument("--extract", type=int, default=512, help="volumes extracted")
    parser.add_argument("--epochs", type=int, default=3, help="epochs assumed for the budget")
    parser.add_argument("--volume-size", type=int, default=48)
    parser.add_argument("--paper-clips", type=int, default=2, help="paper-preset clips on CPU")
    parser.add_argument("--gpu-batch", type=int, default=32)
    parser.add_argument("--gpu-reps", type=int, default=10)
    args = parser.parse_args()
    bench_cpu_preset(args)
    if torch.cuda.is_available():
        bench_paper_cuda(args)
    else:
        print("paper preset bf16 GPU figures: skipped (no CUDA device on this machine)")


if __name__ == "__main__":
    main()
