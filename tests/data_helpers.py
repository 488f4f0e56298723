"""Small test images and hand-made LMDBs shared by the data tests."""

from __future__ import annotations

from pathlib import Path

import lmdb
import numpy as np
from PIL import Image


def random_image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def raw_lmdb(path: Path, records: dict[str, bytes]) -> Path:
    """An LMDB with exactly these key/value records (no format checks: for corrupt sets)."""
    env = lmdb.open(str(path), map_size=1 << 22)
    with env.begin(write=True) as txn:
        for k, v in records.items():
            txn.put(k.encode(), v)
    env.close()
    return path
