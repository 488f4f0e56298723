"""RGBM training pairs per second read from a TextZoom-layout LMDB by one process on one core.

What the training loop's DataLoader does per sample (`TextZoomDataset.__getitem__`: LMDB read, PNG
decode of HR and LR, resize to 32x128 / 16x64, RGB + mask channel, tensors) and per batch
(`collate`), with `torch.set_num_threads(1)` in this process only (one core), and with the
in-memory cache the engine opens training sets with (`engine/speed.py: data_cache_mb`): the
first pass decodes every PNG, later passes (epochs) read the cache. Both figures print; the
target (issue 12) is at least 5,000 pairs/s per core, so that a step never waits on data.

    python benchmarks/lmdb_loading.py                   # 2,000 synthetic pairs in a temp folder
    python benchmarks/lmdb_loading.py --data data/embedded/demo/textzoom/train --batch 64
    python benchmarks/lmdb_loading.py --smoke           # CI: 64 pairs

Without `--data` it writes pairs with the project's own generator (`stisr.data.synth`), which
takes longer than the read it measures; only the read is timed. Real TextZoom images are larger
than the synthetic ones, so point `--data` at the real train set when it is there.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from stisr.data.datasets import collate, open_dataset
from stisr.engine.speed import data_cache_mb


def pairs_per_second(
    root: Path, batch: int, repeats: int, limit: int | None, cache_mb: float
) -> list[float]:
    """Pairs/s of each of `repeats` full passes (sequential batches, as the step sampler reads);
    with a cache the first pass decodes and fills it, the later ones read it."""
    data = open_dataset(root, cache_mb=cache_mb)
    n = len(data) if limit is None else min(limit, len(data))
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for first in range(0, n, batch):
            collate([data[i] for i in range(first, min(first + batch, n))])
        rates.append(n / (time.perf_counter() - start))
    return rates


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, help="a TextZoom-layout LMDB (default: synthetic)")
    ap.add_argument("--pairs", type=int, default=2000, help="synthetic pairs to write / read")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="64 pairs, two passes")
    ap.add_argument("--no-cache", action="store_true", help="decode every pass (no memory cache)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.pairs, args.repeats = 64, 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = args.data
            if root is None:
                from stisr.data.synth import make_textzoom

                print(f"# writing {args.pairs} synthetic pairs to {tmp} (not timed)", flush=True)
                make_textzoom(Path(tmp), {"train": args.pairs}, seed=0)
                root = Path(tmp) / "train"
            limit = args.pairs if args.data is None else None
            cache = 0 if args.no_cache else data_cache_mb(0)
            rates = pairs_per_second(root, args.batch, args.repeats, limit, cache)
    finally:
        torch.set_num_threads(threads)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    first = rates[0]
    later = statistics.median(rates[1:]) if len(rates) > 1 else first
    how = "decoding every pass" if args.no_cache else "first pass decodes, later passes cached"
    print(f"# {root}: batch {args.batch}, {args.repeats} passes ({how}), one core, load {load}")
    print(f"lmdb_loading first pass pairs/s/core={first:.0f}")
    verdict = "met" if later >= 5000 else "NOT met"
    print(f"lmdb_loading later passes pairs/s/core={later:.0f} (target >= 5000: {verdict})")
    return {"first_pairs_per_s": first, "pairs_per_s": later}


if __name__ == "__main__":
    main()
