"""GIST throughput: the fast `tumorchar.features.gist.gist` against a direct float64
transcription of LMgist (tests/features/gist_reference.py), measured in the same run.

    python benchmarks/bench_gist.py [--images 256] [--reference-images 16] [--size 128]

The fast path uses `--workers` threads (default: all cores); the reference is
single-threaded NumPy, as a transcription would be.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests" / "features")]

from gist_reference import create_gabor, lmgist  # noqa: E402

from tumorchar.features.gist import gist  # noqa: E402


def seconds_per_image(run, n_images: int) -> tuple[float, float]:
    """(wall, CPU) seconds per image; CPU time counts every thread of this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return (time.perf_counter() - wall) / n_images, (time.process_time() - cpu) / n_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="images for the fast GIST")
    parser.add_argument("--reference-images", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds")
    parser.add_argument("--workers", type=int, default=None, help="threads (default: all)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    images = rng.random((args.images, args.size, args.size), dtype=np.float64)
    bank = create_gabor((8, 8, 8, 8), args.size + 64)
    gist(images[:2], image_size=args.size, workers=args.workers)  # build the cached plans

    # The machine is shared: alternate the two in rounds and keep each one's best round,
    # so that both are measured under the same conditions.
    reference_batch = images[: args.reference_images]
    fast_times, reference_times = [], []
    for _ in range(args.repeats):
        fast_times.append(
            seconds_per_image(
                lambda: gist(images, image_size=args.size, workers=args.workers), args.images
            )
        )
        reference_times.append(
            seconds_per_image(
                lambda: [lmgist(image, image_size=args.size, g=bank) for image in reference_batch],
                len(reference_batch),
            )
        )
    fast, reference = 1 / min(t for t, _ in fast_times), 1 / min(t for t, _ in reference_times)
    ratios = sorted(r[0] / f[0] for f, r in zip(fast_times, reference_times, strict=True))
    fast_cpu = min(c for _, c in fast_times)
    reference_cpu = min(c for _, c in reference_times)
    check = gist(reference_batch[:4], image_size=args.size, workers=args.workers)
    expected = np.stack([lmgist(image, image_size=args.size, g=bank) for image in images[:4]])
    error = np.max(np.abs(check - expected) / np.abs(expected))

    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}, size {args.size}")
    print(f"fast GIST:            {fast:8.1f} images/s  (target >= 200)")
    print(f"direct transcription: {reference:8.1f} images/s")
    print(
        f"speed-up:             {fast / reference:8.1f}x  (best rounds; per-round median "
        f"{ratios[len(ratios) // 2]:.1f}x)"
    )
    print(
        f"CPU time per image:   fast {1e3 * fast_cpu:.2f} ms, reference "
        f"{1e3 * reference_cpu:.2f} ms (ratio {reference_cpu / fast_cpu:.1f}x); "
        f"{os.cpu_count()} idle cores would give about {os.cpu_count() / fast_cpu:.0f} images/s"
    )
    print(f"max relative difference: {error:.2e}  (target <= 1e-4)")


if __name__ == "__main__":
    main()
