"""Print how long PSNR, SSIM and the TSRN losses take on one TextZoom-sized batch.

Usage: python benchmarks/metrics_speed.py [--batch 256] [--repeats 5] [--device cpu]
Only prints; it writes no files. Use it to check that metrics are not the evaluation bottleneck.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from stisr.losses import build_loss
from stisr.metrics.image_quality import psnr, ssim


def _time(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.fmean(times), statistics.stdev(times) if len(times) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    hr = torch.rand(args.batch, 4, 32, 128, generator=gen).to(device)
    sr = (hr + 0.05 * torch.randn(hr.shape, generator=gen).to(device)).clamp(0, 1)
    crit = build_loss({"mse": 1.0, "gradient_profile": 1e-4}).to(device)
    cases: dict[str, Callable[[], object]] = {
        "psnr": lambda: psnr(sr, hr),
        "ssim (zero padding)": lambda: ssim(sr, hr),
        "ssim (valid)": lambda: ssim(sr, hr, padding="valid"),
        "mse + 1e-4 gradient_profile": lambda: crit(sr, hr),
    }
    print(f"batch {args.batch} x 4 x 32 x 128 on {device}, threads {torch.get_num_threads()}")
    for name, fn in cases.items():
        mean, std = _time(fn, args.repeats, device)
        per_image_us = mean / args.batch * 1000
        print(f"{name:30s} {mean:9.2f} ms +- {std:6.2f}  ({per_image_us:8.1f} us/image)")


if __name__ == "__main__":
    main()
