"""Pretrained feature extraction on CPU: I3D (Kinetics-400) and EfficientNet-Lite0 (ImageNet)
cases/s at the sizes the demo uses, on 2 threads, against the current C3D `cpu` preset in the
same run (the baseline: what the 3D rows used before).

    python benchmarks/bench_pretrained.py [--cases 48] [--threads 2]

Cases are synthetic CT-like nodule volumes of the demo's patch size (64³ voxels, HU) and their
central slices. Timed per case: clip/slice preparation + forward pass. Figures:
  I3D volume clips   (cpu setting, 16×64×64)      → E1 "pre-trained" rows + fine-tuning cache
  I3D static slices  (one frame, 64×64)           → E3 / E4
  I3D fine-tuning    (cpu setting: Mixed_5c + head on the cached Mixed_5b output), case-epochs/s
  EfficientNet-Lite0 (224×224 slices, fp32 and bf16 autocast)
  C3D cpu preset     (fc6 of 16×32×32 clips, random init) = baseline
Needs the converted weights (`make weights`); random-init networks are timed otherwise (the
arithmetic is the same) and the output says so. CPU seconds are printed beside wall seconds:
on a shared machine CPU seconds / threads estimates an idle machine's wall time.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tumorchar.features import c3d, i3d  # noqa: E402
from tumorchar.features import efficientnet as ef  # noqa: E402


def synthetic_nodules(n: int, size: int = 64, seed: int = 0):
    """CT-like volumes in HU (lung background + a solid blob of random radius), 7 scores."""
    rng = np.random.default_rng(seed)
    r = np.sqrt(((np.indices((size,) * 3) - (size - 1) / 2) ** 2).sum(axis=0))
    vols = rng.normal(-850.0, 60.0, size=(n, size, size, size)).astype(np.float32)
    radii = rng.uniform(2.0, size / 3, size=n)
    for v, rad in zip(vols, radii, strict=True):
        v[r < rad] += 800.0
    scores = np.clip(1 + 4 * (radii[:, None] / (size / 3)) + rng.normal(0, 0.5, (n, 7)), 1, 5)
    return vols, scores


def rate(fn, n: int, warm=None) -> tuple[float, float]:
    """(items per wall second, items per CPU second / threads) of `fn()` processing n items."""
    if warm is not None:
        warm()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return n / wall, n / (cpu / torch.get_num_threads())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs timed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = args.cases
    vols, scores = synthetic_nodules(n)
    slices = vols[:, vols.shape[1] // 2]
    s = i3d.get_setting("cpu")

    net = i3d.load_i3d(allow_random_init=True)
    eff = ef.load_efficientnet_lite0(allow_random_init=True)
    weights = f"I3D {net.weights_label}, EfficientNet-Lite0 {eff.weights_label}"
    base = c3d.C3D("cpu", seed=0)

    def i3d_volumes():
        return i3d.extract(net, i3d.volumes_to_clips(vols, s.frames, s.size), batch_size=8)

    cached = i3d.extract(net, i3d.volumes_to_clips(vols, s.frames, s.size), batch_size=8,
                         stop=i3d.endpoint_before(s.start))["endpoint"]  # fmt: skip

    def i3d_finetune():
        i3d.finetune(copy.deepcopy(net), cached, scores, epochs=args.epochs)

    results = {
        "C3D cpu preset fc6 (16x32x32 clips)": rate(
            lambda: c3d.extract_fc6(base, vols), n, lambda: c3d.extract_fc6(base, vols[:8])
        ),
        f"I3D volumes ({s.frames}x{s.size}x{s.size} clips)": rate(i3d_volumes, n),
        "I3D static slices (1 frame, 64x64)": rate(
            lambda: i3d.extract_slices(net, slices), n, lambda: i3d.extract_slices(net, slices[:4])
        ),
        "EfficientNet-Lite0 (224x224, fp32)": rate(
            lambda: ef.extract_efficientnet(eff, slices), n,
            lambda: ef.extract_efficientnet(eff, slices[:4]),
        ),
        "EfficientNet-Lite0 (224x224, bf16)": rate(
            lambda: ef.extract_efficientnet(eff, slices, bf16=True), n,
            lambda: ef.extract_efficientnet(eff, slices[:4], bf16=True),
        ),
        f"I3D fine-tuning, {s.start} + head (case-epochs)": rate(i3d_finetune, n * args.epochs),
    }  # fmt: skip
    load = os.getloadavg()[0]
    print(
        f"{n} synthetic 64^3 CT nodules, {torch.get_num_threads()} torch threads, load average "
        f"{load:.1f} on {os.cpu_count()} cores; weights: {weights}"
    )
    c3d_wall, c3d_cpu = results["C3D cpu preset fc6 (16x32x32 clips)"]
    for name, (wall, cpu) in results.items():
        ratio = "" if name.startswith("C3D") else f"  = {c3d_wall / wall:6.1f}x slower than C3D"
        print(f"  {name:48s} {wall:8.1f} /s wall ({cpu:8.1f} /s per CPU-s/thread){ratio}")
    tune = results[f"I3D fine-tuning, {s.start} + head (case-epochs)"][0]
    clips = results[f"I3D volumes ({s.frames}x{s.size}x{s.size} clips)"][0]
    print(
        f"  at these rates the demo's I3D work takes ~{s.epochs * 10 * 1080 / tune:.0f} s of "
        f"fine-tuning ({s.epochs} epochs x 10 folds x ~1080 training cases) and "
        f"~{1197 / clips:.0f} s for the 1197 volume clips"
    )


if __name__ == "__main__":
    main()
