"""Time and memory of lake_interp.metrics.pixel_metrics on a full-benchmark-sized test set.

Default: 1725 maps of 256x256 float32 (the size of the MVTec AD test set, 113M pixels), random
normal noise plus a shift inside random elliptic blob masks on about half of the images (nearly
all scores distinct: the worst case for the number of thresholds).

    python benchmarks/metrics_bench.py [--n 1725] [--size 256] [--seed 0] [--also-200]

Reports wall-clock seconds of pixel_metrics (pixel AUROC, AP, F1-max, AU-PRO, exact) and the
process's peak RSS (resource.getrusage) before and after scoring.
"""

from __future__ import annotations

import argparse
import resource
import shlex
import sys
import time

import numpy as np


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return float("nan")


def make_data(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=bool)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    for i in np.flatnonzero(rng.random(n) < 0.5):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(0, size, 2)
            ry, rx = rng.uniform(size / 64, size / 6, 2)
            masks[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    maps = rng.standard_normal((n, size, size), dtype=np.float32)
    maps[masks] += 1.5
    return maps, masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1725, help="number of images (default: MVTec AD test set)")
    parser.add_argument("--size", type=int, default=256, help="map side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--also-200", action="store_true", help="also time aupro_200_thresholds")
    args = parser.parse_args()

    print("command:", shlex.join([sys.executable, *sys.argv]))
    from lake_interp.metrics import aupro_200_thresholds, pixel_metrics

    t0 = time.perf_counter()
    maps, masks = make_data(args.n, args.size, args.seed)
    print(f"data: maps {maps.shape} {maps.dtype}, {maps.size / 1e6:.1f}M pixels, "
          f"{masks.any(axis=(1, 2)).sum()} anomalous images, {masks.mean():.2%} anomalous pixels "
          f"(generated in {time.perf_counter() - t0:.1f} s)")
    rss_before, peak_before = current_rss_mb(), peak_rss_mb()
    print(f"RSS before scoring: current {rss_before:.0f} MB, peak {peak_before:.0f} MB")

    t0 = time.perf_counter()
    out = pixel_metrics(maps, masks)
    dt = time.perf_counter() - t0
    peak = peak_rss_mb()
    print("pixel_metrics:", {k: round(v, 6) for k, v in out.items()})
    print(f"pixel_metrics time: {dt:.2f} s")
    print(f"peak RSS: {peak:.0f} MB (scoring added {peak - rss_before:.0f} MB over the "
          f"{rss_before:.0f} MB held before)")

    if args.also_200:
        t0 = time.perf_counter()
        v = aupro_200_thresholds(maps, masks)
        print(f"aupro_200_thresholds: {v:.6f} in {time.perf_counter() - t0:.2f} s, "
              f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
