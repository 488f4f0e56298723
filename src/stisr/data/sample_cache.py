"""An in-memory cache of loaded samples, so that later epochs skip the PNG decoding."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class SampleCache:
    """Loaded samples kept in memory as uint8 (the images are k/255 floats), up to `max_bytes`.

    Decoding the PNGs is most of a sample's cost; from the second epoch on a cached sample is a
    uint8 -> float division. A sample whose images do not survive the uint8 round trip exactly
    is not cached, so a cached sample is bitwise the sample `_load` returns.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._store: dict[int, dict[str, Any]] = {}

    def get(self, raw: int) -> dict[str, Any] | None:
        packed = self._store.get(raw)
        if packed is None:
            return None
        return {k: _unpack(v) if isinstance(v, np.ndarray) else v for k, v in packed.items()}

    def put(self, raw: int, sample: dict[str, Any]) -> None:
        if self.used >= self.max_bytes:
            return
        packed: dict[str, Any] = {}
        for key, value in sample.items():
            if isinstance(value, torch.Tensor):
                u8 = _pack(value)
                if u8 is None:
                    return
                packed[key] = u8
                self.used += u8.nbytes
            else:
                packed[key] = value
        self._store[raw] = packed


def _pack(t: torch.Tensor) -> np.ndarray | None:
    if t.dtype != torch.float32:
        return None
    arr = t.numpy()
    u8 = np.rint(arr * np.float32(255.0)).clip(0, 255).astype(np.uint8)
    return u8 if np.array_equal(_unpack(u8).numpy(), arr) else None


def _unpack(u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.divide(u8, np.float32(255.0), dtype=np.float32))
