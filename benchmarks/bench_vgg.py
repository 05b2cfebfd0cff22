"""VGG16 fc7/fc8 extraction images/s (224 x 224, one forward pass per batch): the default
float32 path and the optional bf16 autocast, batched, against one slice at a time in float32
(the naive baseline), measured in the same run. Random-init weights (throughput does not
depend on the weight values); with CUDA the figures are also measured on the GPU.

    python benchmarks/bench_vgg.py [--images 32] [--batch-size 16]
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

from tumorchar.features import vgg  # noqa: E402


def rate(model, slices, batch_size: int, device: str, bf16: bool) -> float:
    vgg.extract_vgg(model, slices[:2], batch_size=2, device=device, bf16=bf16)  # warm-up
    start = time.perf_counter()
    vgg.extract_vgg(model, slices, batch_size=batch_size, device=device, bf16=bf16)
    if device == "cuda":
        torch.cuda.synchronize()
    return len(slices) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--slice-size", type=int, default=64, help="input slice side (pixels)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    slices = rng.normal(-600.0, 300.0, size=(args.images, args.slice_size, args.slice_size))
    model, label = vgg.load_vgg16(allow_random_init=True, seed=0)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(
        f"VGG16 ({label} weights), {args.images} slices {args.slice_size}^2 -> 224^2, "
        f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}"
    )
    for device in devices:
        single = rate(model, slices[: min(args.images, 8)], 1, device, bf16=False)
        fp32 = rate(model, slices, args.batch_size, device, bf16=False)
        bf16 = rate(model, slices, args.batch_size, device, bf16=True)
        b = args.batch_size
        print(f"  {device}: one at a time fp32 {single:7.2f} images/s (baseline)")
        print(f"  {device}: batch {b} fp32   {fp32:7.2f} images/s ({fp32 / single:.2f}x)")
        print(f"  {device}: batch {b} bf16   {bf16:7.2f} images/s ({bf16 / single:.2f}x)")
    if len(devices) == 1:
        print("  cuda: skipped (no CUDA device on this machine)")


if __name__ == "__main__":
    main()
